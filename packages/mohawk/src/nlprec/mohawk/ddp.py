"""Stage 3 (end-to-end distillation) under torchrun with DistributedDataParallel:

    torchrun --standalone --nproc-per-node 2 -m nlprec.mohawk.ddp \\
        --teacher T_DIR --student S_DIR --tokens tokens.safetensors --out OUT_DIR --budget 100000

gloo on CPU, NCCL on GPUs (``nlprec.core.distributed``). Every process loads the same teacher,
student and token stream and draws the same global batches; DDP averages the gradients of the
ranks' shares, so N processes take the optimisation steps one process takes on the same global
batches. Rank 0 alone writes the distilled student (``save_student``) and ``stage3.json`` (its
losses). Also runs as one plain process (``python -m nlprec.mohawk.ddp ...``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from nlprec.core.distributed import distributed_session, write_json_on_main
from nlprec.mohawk.stages import stage3_distillation
from nlprec.mohawk.student import load_student, save_student
from nlprec.mohawk.teacher import load_teacher
from nlprec.mohawk.training import OptimConfig
from safetensors.torch import load_file

LOSSES_FILE = "stage3.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nlprec.mohawk.ddp", description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a saved Hugging Face causal LM")
    parser.add_argument("--student", required=True, help="a saved student to start from")
    parser.add_argument(
        "--tokens", required=True, help="safetensors file with a 1-D 'train' tensor"
    )
    parser.add_argument("--out", required=True, help="where rank 0 writes the distilled student")
    parser.add_argument("--budget", type=int, required=True, help="training tokens of Stage 3")
    parser.add_argument("--optim", default="{}", help="OptimConfig as JSON (global batch size)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[float]:
    with distributed_session() as dist_ctx:
        torch.manual_seed(args.seed)
        teacher = load_teacher(args.teacher, dist_ctx.device)
        student = load_student(args.student, dist_ctx.device).train()
        tokens = load_file(args.tokens)["train"]
        optim = OptimConfig(**json.loads(args.optim))
        losses = stage3_distillation(
            student, teacher, tokens, args.budget, optim, args.temperature, args.seed, dist_ctx
        )
        out = Path(args.out)
        if dist_ctx.is_main:
            save_student(student.eval(), out)
        write_json_on_main(out / LOSSES_FILE, {"rank0_losses": losses}, dist_ctx)
        return losses


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
