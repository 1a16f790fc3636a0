"""``nlprec-longdoc``: longify an encoder, or run batch inference over a JSONL/Parquet file.

nlprec-longdoc longify --attention full --max-length 4096 --out models/minilm-long
nlprec-longdoc classify --model <saved classifier>|models:/... --input notes.jsonl --output labels.jsonl
                        [--engine local|ray] [--concurrency N] [--num-gpus G]
nlprec-longdoc tag      --model <saved tagger>     --input notes.jsonl --output tags.jsonl
nlprec-longdoc answer   --model <saved QA model>   --input questions.jsonl --output answers.jsonl
"""

from __future__ import annotations

import argparse
import logging
import sys

from nlprec.core.batch import (
    add_model_io_arguments,
    add_version_argument,
    batch_options,
    command_main,
)

PROG = "nlprec-longdoc"


def _batch_command(args) -> None:
    from nlprec.clinical_longdoc.batch import PREDICTORS
    from nlprec.core.batch import run_batch
    from nlprec.core.models import resolve

    kwargs = {"model_dir": str(resolve(args.model)), "device": args.device}
    if args.command in ("classify", "tag"):
        kwargs["text_field"] = args.text_field
    result = run_batch(
        PREDICTORS[args.command],
        kwargs,
        args.input,
        args.output,
        **batch_options(args).model_dump(),
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
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_version_argument(parser, "nlprec-clinical-longdoc")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("longify", help="convert a BERT/RoBERTa encoder into a long encoder")
    convert.add_argument(
        "--source", default="minilm", help="model name or directory (default: bundled MiniLM)"
    )
    convert.add_argument(
        "--attention", default="full", help="longformer, bigbird, full or local (checked by longify)"
    )
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
        add_model_io_arguments(command, "directory written by a fine-tuning step, or models:/...")
        command.add_argument(
            "--device", default=None, help="cpu / cuda (default: cuda when available)"
        )
        if name != "answer":
            command.add_argument("--text-field", default="text")
        command.set_defaults(handler=_batch_command)
    return parser


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.handler(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
