"""Event logs → sessions.

The one data structure every model in this package consumes is :class:`SessionData`: an item
vocabulary and, per user, a time-ordered list of sessions. A session is an array of item
indices (in-session repeats removed, first play kept, capped at ``max_session_len`` items) with
the timestamp of its first event. Everything upstream (Last.fm TSV, any CSV, Reality-Check
JSON, The Complete Journey, the synthetic generator) produces an :class:`EventLog` or
:class:`SessionData`; everything downstream (splits, ACT-R, baselines, PISA) reads sessions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_GAP_MINUTES = 20.0
DEFAULT_MAX_SESSION_LEN = 50


@dataclass
class UserSessions:
    """One user's sessions, oldest first. ``times[j]`` is the start of ``sessions[j]``."""

    user: str
    sessions: list[np.ndarray]  # each: int64 item indices, unique within the session
    times: np.ndarray  # [n_sessions] float64 seconds (or basket index for undated data)

    def __post_init__(self) -> None:
        if len(self.sessions) != len(self.times):
            raise ValueError(
                f"user {self.user!r}: {len(self.sessions)} sessions but {len(self.times)} times"
            )


@dataclass
class SessionData:
    """Sessions of every user over a shared item vocabulary."""

    items: list[str]  # index -> external item id
    users: list[UserSessions]
    name: str = "sessions"
    notes: list[str] = field(default_factory=list)  # provenance, e.g. "simulated data"
    time_scale: float = 3600.0  # seconds per ACT-R time unit (1.0 where time is a basket index)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_sessions(self) -> int:
        return sum(len(u.sessions) for u in self.users)

    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items)}

    def describe(self) -> dict:
        lengths = [len(s) for u in self.users for s in u.sessions]
        return {
            "name": self.name,
            "users": len(self.users),
            "items": self.n_items,
            "sessions": self.n_sessions,
            "mean_session_len": float(np.mean(lengths)) if lengths else 0.0,
        }

    # -- persistence: plain JSON, never pickle -------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        payload = {
            "name": self.name,
            "notes": self.notes,
            "time_scale": self.time_scale,
            "items": self.items,
            "users": [
                {
                    "user": u.user,
                    "times": u.times.tolist(),
                    "sessions": [s.tolist() for s in u.sessions],
                }
                for u in self.users
            ],
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SessionData:
        payload = json.loads(Path(path).read_text())
        users = [
            UserSessions(
                user=u["user"],
                sessions=[np.asarray(s, dtype=np.int64) for s in u["sessions"]],
                times=np.asarray(u["times"], dtype=np.float64),
            )
            for u in payload["users"]
        ]
        return cls(
            items=payload["items"],
            users=users,
            name=payload["name"],
            notes=payload["notes"],
            time_scale=payload.get("time_scale", 3600.0),
        )


@dataclass
class EventLog:
    """A flat log: one row per event (user, time in epoch seconds, item, optional session)."""

    frame: pd.DataFrame  # columns: user (str), time (float), item (str), [session (str)]
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    source: str = "events"


def dedupe_keep_first(items: np.ndarray) -> np.ndarray:
    """Remove in-session repeats, keeping the first occurrence (order preserved)."""
    _, first = np.unique(items, return_index=True)
    return items[np.sort(first)]


def sessionize(
    log: EventLog,
    gap_minutes: float | None = DEFAULT_GAP_MINUTES,
    max_session_len: int = DEFAULT_MAX_SESSION_LEN,
    min_sessions: int = 2,
    items: list[str] | None = None,
) -> SessionData:
    """Cut each user's events into sessions.

    A new session starts when the user's ``session`` id changes (if the log has one) or after
    more than ``gap_minutes`` of inactivity (``None``: the session ids alone cut sessions). Events are sorted by time first (a stable sort,
    so equal timestamps keep file order); exact duplicate events (same user, time, item) are
    dropped. Users with fewer than ``min_sessions`` sessions are dropped.
    ``items`` fixes the vocabulary (unknown items are then an error); by default it is built
    from the log in order of first appearance.
    """
    if gap_minutes is not None and gap_minutes <= 0:
        raise ValueError(f"gap_minutes must be > 0 or None, got {gap_minutes}")
    if max_session_len < 1:
        raise ValueError(f"max_session_len must be >= 1, got {max_session_len}")
    frame = log.frame
    missing = {"user", "time", "item"} - set(frame.columns)
    if missing:
        raise ValueError(f"{log.source}: event log lacks column(s) {sorted(missing)}")
    if frame.empty:
        raise ValueError(f"{log.source}: the event log is empty")
    if gap_minutes is None and "session" not in frame.columns:
        raise ValueError(f"{log.source}: no session column, so a session gap is needed")
    keys = ["user", "time", "item"] + (["session"] if "session" in frame.columns else [])
    frame = frame.drop_duplicates(subset=keys)
    frame = frame.sort_values(["user", "time"], kind="stable").reset_index(drop=True)

    if items is None:
        items = list(dict.fromkeys(frame.sort_values("time", kind="stable")["item"].tolist()))
    index = {item: i for i, item in enumerate(items)}
    unknown = set(frame["item"].unique()) - index.keys()
    if unknown:
        raise ValueError(
            f"{log.source}: {len(unknown)} item(s) not in the vocabulary, e.g. {sorted(unknown)[:3]}"
        )
    item_ids = frame["item"].map(index).to_numpy(np.int64)
    times = frame["time"].to_numpy(np.float64)
    user_col = frame["user"].to_numpy()

    # A session boundary: new user, gap exceeded, or explicit session id change.
    new_user = np.r_[True, user_col[1:] != user_col[:-1]]
    boundary = new_user.copy()
    if gap_minutes is not None:
        boundary |= np.r_[np.inf, np.diff(times)] > gap_minutes * 60.0
    if "session" in frame.columns:
        sess = frame["session"].astype(str).to_numpy()
        boundary |= np.r_[True, sess[1:] != sess[:-1]]
    starts = np.flatnonzero(boundary)
    ends = np.r_[starts[1:], len(frame)]

    users: list[UserSessions] = []
    current_user, sessions, starts_t = None, [], []
    for s, e in zip(starts, ends):
        if user_col[s] != current_user:
            if current_user is not None and len(sessions) >= min_sessions:
                users.append(UserSessions(str(current_user), sessions, np.asarray(starts_t)))
            current_user, sessions, starts_t = user_col[s], [], []
        sessions.append(dedupe_keep_first(item_ids[s:e])[:max_session_len])
        starts_t.append(times[s])
    if current_user is not None and len(sessions) >= min_sessions:
        users.append(UserSessions(str(current_user), sessions, np.asarray(starts_t)))
    if not users:
        raise ValueError(f"{log.source}: no user has >= {min_sessions} sessions")
    return compact_vocabulary(SessionData(items=list(items), users=users, name=log.source))


def compact_vocabulary(data: SessionData) -> SessionData:
    """Drop items no remaining session uses and renumber the rest (order kept)."""
    used = np.zeros(data.n_items, dtype=bool)
    for u in data.users:
        for s in u.sessions:
            used[s] = True
    if used.all():
        return data
    new_index = np.cumsum(used) - 1
    users = [UserSessions(u.user, [new_index[s] for s in u.sessions], u.times) for u in data.users]
    items = [item for item, keep in zip(data.items, used) if keep]
    return SessionData(items, users, data.name, data.notes, data.time_scale)
