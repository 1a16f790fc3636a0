"""Batch inference: recommendations for every user of an event file (JSONL/Parquet out).

    python -m nlprec.sessionrec batch --model models:/sessionrec-demo@champion \\
        --events logs.csv --columns user=user,time=time,item=item --output recs.jsonl [--engine ray]

The event file is read with the usual loader (bad lines reported with their numbers), grouped
into one row per user ``{"user_id", "history": [items, oldest first], "now": last event time}``
and written next to the output as ``<output>.input.jsonl``; ``nlprec.core.batch.run_batch``
then maps :class:`SessionRecPredictor` over it (progress bar, resumable parts, Ray Data with
``--engine ray``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nlprec.sessionrec.loaders import ColumnMapping, read_event_logs
from nlprec.sessionrec.online import OnlineRecommender


class SessionRecPredictor:
    """Loads an :class:`OnlineRecommender` directory once; maps batches of users to top-k lists."""

    def __init__(self, model: str, k: int = 10, exclude_seen: bool = False):
        from nlprec.core.models import resolve

        self.state = OnlineRecommender.load(resolve(model))
        self.k, self.exclude_seen = k, exclude_seen

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        users = batch["user_id"]
        histories = batch.get("history") or [None] * len(users)
        nows = batch.get("now") or [None] * len(users)
        out = {"user_id": [], "items": [], "scores": [], "repeat": [], "fallback": []}
        for user, history, now in zip(users, histories, nows):
            rec = self.state.recommend(
                user, history=history, k=self.k, exclude_seen=self.exclude_seen, now=now
            )
            out["user_id"].append(user)
            out["items"].append(rec.items)
            out["scores"].append(rec.scores)
            out["repeat"].append(rec.repeat)
            out["fallback"].append(rec.fallback)
        return out


def write_user_rows(events_path: str, columns: ColumnMapping, rows_path: Path) -> int:
    """One JSONL row per user of the event file; returns the number of users."""
    log = read_event_logs(events_path, columns)
    frame = log.frame.sort_values(["user", "time"], kind="stable")
    tmp = rows_path.with_suffix(".tmp")
    count = 0
    with tmp.open("w") as handle:
        for user, group in frame.groupby("user", sort=True):
            handle.write(
                json.dumps(
                    {
                        "user_id": str(user),
                        "history": group["item"].tolist(),
                        "now": float(group["time"].max()) + 1.0,
                    }
                )
                + "\n"
            )
            count += 1
    tmp.replace(rows_path)
    return count


def parse_columns(text: str) -> ColumnMapping:
    pairs = dict(part.split("=", 1) for part in text.split(",") if part)
    return ColumnMapping(**{k: (int(v) if v.isdigit() else v) for k, v in pairs.items()})


def main(argv: list[str] | None = None) -> int:
    from nlprec.core.batch import run_batch

    parser = argparse.ArgumentParser(
        prog="python -m nlprec.sessionrec", description="sessionrec commands"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    batch = sub.add_parser("batch", help="recommendations for every user of an event file")
    batch.add_argument("--model", required=True, help="OnlineRecommender dir or models:/name@alias")
    batch.add_argument("--events", required=True, help="CSV/TSV event file or folder")
    batch.add_argument(
        "--columns",
        default="user=user,time=time,item=item",
        help="e.g. user=uid,time=ts,item=track[,session=sid]",
    )
    batch.add_argument("--output", required=True, help=".jsonl or .parquet")
    batch.add_argument("--k", type=int, default=10)
    batch.add_argument("--exclude-seen", action="store_true")
    batch.add_argument("--engine", choices=["local", "ray"], default="local")
    batch.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    output = Path(args.output)
    rows = output.with_name(output.name + ".input.jsonl")
    n_users = write_user_rows(args.events, parse_columns(args.columns), rows)
    run_batch(
        SessionRecPredictor,
        {"model": args.model, "k": args.k, "exclude_seen": args.exclude_seen},
        rows,
        output,
        engine=args.engine,
        batch_size=args.batch_size,
    )
    print(f"{n_users} users → {output}")
    return 0
