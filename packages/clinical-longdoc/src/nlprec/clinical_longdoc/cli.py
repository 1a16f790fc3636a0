"""``nlprec-longdoc``: longify an encoder, or run batch inference over a JSONL/Parquet file.

nlprec-longdoc longify --attention full --max-length 4096 --out models/minilm-long
nlprec-longdoc classify --model <saved classifier> --input notes.jsonl --output labels.jsonl [--engine ray]
nlprec-longdoc tag      --model <saved tagger>     --input notes.jsonl --output tags.jsonl
nlprec-longdoc answer   --model <saved QA model>   --input questions.jsonl --output answers.jsonl
"""

from __future__ import annotations

import argparse
import logging
import sys

from nlprec.clinical_longdoc.longify import ATTENTION_KINDS


def _batch_command(args) -> None:
    from nlprec.clinical_longdoc.batch import PREDICTORS
    from nlprec.core.batch import run_batch

    kwargs = {"model_dir": args.model, "device": args.device}
    if args.command in ("classify", "tag"):
        kwargs["text_field"] = args.text_field
    result = run_batch(
        PREDICTORS[args.command],
        kwargs,
        args.input,
        args.output,
        engine=args.engine,
        batch_size=args.batch_size,
    )
    print(result)


def _longify_command(args) -> None:
    from nlprec.clinical_longdoc.longify import longify_to_dir

    path = longify_to_dir(
        args.out,
        model=args.source,
        max_length=args.max_length,
        attention=args.attention,
        attention_window=args.attention_window,
        block_size=args.block_size,
    )
    print(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlprec-longdoc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("longify", help="convert a BERT/RoBERTa encoder into a long encoder")
    convert.add_argument(
        "--source", default="minilm", help="model name or directory (default: bundled MiniLM)"
    )
    convert.add_argument("--attention", choices=ATTENTION_KINDS, default="full")
    convert.add_argument("--max-length", type=int, default=4096)
    convert.add_argument("--attention-window", type=int, default=512)
    convert.add_argument("--block-size", type=int, default=64)
    convert.add_argument("--out", required=True)
    convert.set_defaults(handler=_longify_command)
    for name, help_text in (
        ("classify", "label long documents with a saved classifier"),
        ("tag", "tag words (NER) with a saved tagger"),
        ("answer", "answer questions over long contexts with a saved QA model"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument(
            "--model", required=True, help="directory written by a fine-tuning step"
        )
        command.add_argument("--input", required=True, help="JSONL or Parquet")
        command.add_argument("--output", required=True, help="JSONL or Parquet (by suffix)")
        command.add_argument("--engine", choices=("local", "ray"), default="local")
        command.add_argument("--batch-size", type=int, default=16)
        command.add_argument(
            "--device", default=None, help="cpu / cuda (default: cuda when available)"
        )
        if name != "answer":
            command.add_argument("--text-field", default="text")
        command.set_defaults(handler=_batch_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.handler(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
