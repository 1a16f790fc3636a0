"""`nlprec-mohawk generate`: sample text from a saved student with its recurrent state.

    nlprec-mohawk generate --model DIR|models:/NAME@ALIAS --prompt "Once upon" [--max-new-tokens 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nlprec.core.batch import add_version_argument, command_main

PROG = "nlprec-mohawk"


def _generate(args: argparse.Namespace) -> int:
    import torch
    from nlprec.core.models import resolve
    from nlprec.mohawk.student import generate, load_student
    from transformers import PreTrainedTokenizerFast

    model_dir = Path(resolve(args.model))
    if not (model_dir / "tokenizer.json").is_file():
        print(
            f"error: {model_dir} has no tokenizer.json (was the student saved with one?)",
            file=sys.stderr,
        )
        return 2
    try:
        model = load_student(model_dir, args.device)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids.to(args.device)
    if ids.numel() == 0:
        print("error: the prompt is empty after tokenisation", file=sys.stderr)
        return 2
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    tokens = generate(model, ids, args.max_new_tokens, args.temperature, args.top_k, generator)
    print(tokenizer.decode(tokens[0]))
    return 0


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version_argument(parser, "nlprec-mohawk")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="sample a continuation of a prompt")
    gen.add_argument(
        "--model", required=True, help="directory written by save_student, or models:/NAME@ALIAS"
    )
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=100)
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=40)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    return _generate(args)


def main(argv: list[str] | None = None) -> int:
    return command_main(PROG, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
