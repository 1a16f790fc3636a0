"""`nlprec-distill`: batch inference with any saved student, and export of a student to HF + ONNX.

nlprec-distill tag      --model DIR|models:/... --input in.jsonl --output out.jsonl [--engine local|ray]
                        [--concurrency N] [--num-gpus G] [--batch-size 64] [--max-len 128]
nlprec-distill classify --model DIR|models:/... --input in.jsonl --output out.jsonl [...]
nlprec-distill export   --model DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nlprec.core.batch import (
    add_model_io_arguments,
    add_version_argument,
    batch_options,
    command_main,
)

PROG = "nlprec-distill"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version_argument(parser, "nlprec-clinical-distill")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, what in (
        ("tag", "tag words (column `tokens` or `text`) with a token classifier"),
        ("classify", "label `text` (and `text_pair`) with a sequence classifier"),
    ):
        sub = commands.add_parser(name, help=what)
        add_model_io_arguments(sub, "saved fine-tuned student (directory or models:/...)")
        sub.add_argument("--max-len", type=int, default=None)
    export = commands.add_parser(
        "export", help="write a masked-LM student as HF directory + ONNX encoder"
    )
    export.add_argument("--model", required=True)
    export.add_argument("out_dir")
    return parser


def _run(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "export":
        from .export import export_hf, export_onnx, onnx_max_difference  # noqa: PLC0415
        from .models import load_masked_lm, load_tokenizer  # noqa: PLC0415

        out = Path(args.out_dir)
        export_hf(load_masked_lm(args.model), load_tokenizer(args.model), out / "hf")
        onnx_path = export_onnx(out / "hf", out / "encoder.onnx")
        diff = onnx_max_difference(out / "hf", onnx_path, ["The patient denies chest pain."])
        print(f"exported {out / 'hf'} and {onnx_path} (max |onnx - torch| = {diff:.2e})")
        return 0
    from nlprec.core.batch import run_batch  # noqa: PLC0415

    from .batch import TextClassifier, TokenTagger  # noqa: PLC0415

    predictor = TokenTagger if args.command == "tag" else TextClassifier
    kwargs = {"model": args.model, **({"max_len": args.max_len} if args.max_len else {})}
    run_batch(predictor, kwargs, args.input, args.output, **batch_options(args).model_dump())
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
