"""Batch inference: recommendations for every user of an event file (JSONL/Parquet out).

    nlprec-sessionrec recommend --model models:/sessionrec-listening@champion \\
        --input logs.csv --columns user=user,time=time,item=item --output recs.jsonl \\
        [--engine local|ray] [--concurrency N] [--num-gpus G]

The event file is read with the usual loader (bad lines reported with their numbers), grouped
into one row per user ``{"user_id", "history": [items, oldest first], "now": last event time}``
and written next to the output as ``<output>.input.jsonl``; ``nlprec.core.batch.run_batch``
then maps :class:`SessionRecPredictor` over it (progress bar, resumable parts, Ray Data with
``--engine ray``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nlprec.core.batch import add_batch_arguments, add_version_argument, batch_options, command_main

PROG = "nlprec-sessionrec"


class SessionRecPredictor:
    """Loads an :class:`OnlineRecommender` directory once; maps batches of users to top-k lists."""

    def __init__(self, model: str, k: int = 10, exclude_seen: bool = False):
        from nlprec.core.models import resolve
        from nlprec.sessionrec.online import OnlineRecommender

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


def write_user_rows(events_path: str, columns, rows_path: Path) -> int:
    """One JSONL row per user of the event file; returns the number of users."""
    from nlprec.sessionrec.loaders import read_event_logs

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


def parse_columns(text: str):
    """`user=uid,time=ts,item=track[,session=sid]` -> ColumnMapping (digits: column positions)."""
    from nlprec.sessionrec.loaders import ColumnMapping

    pairs = dict(part.split("=", 1) for part in text.split(",") if part)
    return ColumnMapping(**{k: (int(v) if v.isdigit() else v) for k, v in pairs.items()})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="sessionrec batch recommendations")
    add_version_argument(parser, "nlprec-sessionrec")
    sub = parser.add_subparsers(dest="command", required=True)
    batch = sub.add_parser(
        "recommend", aliases=["batch"], help="recommendations for every user of an event file"
    )
    batch.add_argument("--model", required=True, help="OnlineRecommender dir or models:/name@alias")
    batch.add_argument(
        "--input",
        "--events",
        dest="input",
        required=True,
        help="CSV/TSV/Parquet event file or folder",
    )
    batch.add_argument(
        "--columns",
        default="user=user,time=time,item=item",
        help="e.g. user=uid,time=ts,item=track[,session=sid]",
    )
    batch.add_argument("--output", required=True, help=".jsonl or .parquet")
    batch.add_argument("--k", type=int, default=10)
    batch.add_argument("--exclude-seen", action="store_true")
    add_batch_arguments(batch)
    return parser


def _run(argv: list[str] | None) -> int:
    from nlprec.core.batch import run_batch

    args = _parser().parse_args(argv)
    output = Path(args.output)
    rows = output.with_name(output.name + ".input.jsonl")
    n_users = write_user_rows(args.input, parse_columns(args.columns), rows)
    run_batch(
        SessionRecPredictor,
        {"model": args.model, "k": args.k, "exclude_seen": args.exclude_seen},
        rows,
        output,
        **batch_options(args).model_dump(),
    )
    print(f"{n_users} users → {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
