"""``nlprec-beliefs predict``: batch inference over JSONL/Parquet (see predict.py for the format)."""

from __future__ import annotations

import argparse
import sys

from nlprec.beliefs.records import StoryError


def main(argv: list[str] | None = None) -> int:
    from nlprec.core.batch import add_model_io_arguments, add_version_argument

    parser = argparse.ArgumentParser(prog="nlprec-beliefs", description=__doc__)
    add_version_argument(parser, "nlprec-beliefs")
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="belief table per story for a JSONL of stories")
    add_model_io_arguments(predict, "model directory or models:/name@alias")
    predict.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    from nlprec.beliefs.predict import BeliefPredictor
    from nlprec.core.batch import batch_options, run_batch
    from nlprec.core.errors import UserError

    try:
        result = run_batch(
            BeliefPredictor,
            {"model": args.model, "device": args.device},
            args.input,
            args.output,
            **batch_options(args).model_dump(),
        )
    except (UserError, StoryError) as error:
        print(f"nlprec-beliefs: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({result})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
