"""Distillation of one student under torchrun with DistributedDataParallel:

    torchrun --standalone --nproc-per-node 2 -m nlprec.clinical_distill.ddp \\
        --teacher TEACHER_DIR --texts train.jsonl --student '{"kind": "factorised", ...}' \\
        --distill '{"steps": 1200, "batch_size": 64, ...}' --out OUT_DIR

gloo on CPU, NCCL on GPUs (``nlprec.core.distributed``). Every process loads the same teacher and
corpus, builds the same student (same seed) and draws and masks the same global batches; each trains
on its block of rows, and the losses are normalised by the item counts of the whole global batch
(masked tokens, real tokens, attention rows over every rank), so N processes take the optimisation
steps one process takes on the same global batches. Rank 0 alone writes the student
(``OUT_DIR/model``, a Hugging Face directory) and ``OUT_DIR/history.json`` (the loss parts of every
step). Also runs as one plain process (``python -m nlprec.clinical_distill.ddp ...``); the
``distill_student`` pipeline step launches it when ``nproc_per_node`` > 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from nlprec.core.distributed import distributed_session, write_json_on_main

from .distill import DistillConfig, copied_layer_maps, distill
from .export import export_hf
from .factorised import token_counts
from .models import load_masked_lm, load_tokenizer, quiet_transformers
from .students import StudentConfig, build_student, student_layers

HISTORY_FILE = "history.json"
MODEL_DIR = "model"


def read_texts(path: str | Path) -> list[str]:
    """A corpus file of JSON strings, one a line (what the `corpus` step writes)."""
    texts = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{path}: line {bad[0] + 1} is not a JSON string")
    return texts


def new_student(teacher, tokenizer, cfg: StudentConfig, texts: list[str]):
    """build_student, with the corpus token counts a factorised student's embedding SVD is weighted by."""
    counts = (
        token_counts(tokenizer, texts, teacher.config.vocab_size)
        if cfg.kind == "factorised"
        else None
    )
    return build_student(teacher, cfg, counts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nlprec.clinical_distill.ddp", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--teacher", required=True, help="the (adapted) teacher: a masked-LM directory"
    )
    parser.add_argument("--texts", required=True, help="training corpus: JSON strings, one a line")
    parser.add_argument("--student", default="{}", help="StudentConfig as JSON")
    parser.add_argument(
        "--distill", default="{}", help="DistillConfig as JSON (batch_size is the global batch)"
    )
    parser.add_argument("--out", required=True, help="where rank 0 writes model/ and history.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the student's initialisation")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    quiet_transformers()
    student_cfg = StudentConfig(**json.loads(args.student))
    distill_cfg = DistillConfig(**json.loads(args.distill))
    with distributed_session() as dist_ctx:
        teacher = load_masked_lm(args.teacher, attention_outputs=distill_cfg.attention_weight > 0)
        tokenizer = load_tokenizer(args.teacher)
        texts = read_texts(args.texts)
        torch.manual_seed(args.seed)
        student = new_student(teacher, tokenizer, student_cfg, texts)
        cfg = copied_layer_maps(distill_cfg, student_layers(teacher, student_cfg))
        history = distill(
            teacher,
            student,
            tokenizer,
            texts,
            cfg,
            dist_ctx.device,
            show_progress=dist_ctx.is_main,
            dist_ctx=dist_ctx,
        )
        out = Path(args.out)
        if dist_ctx.is_main:
            export_hf(student.cpu(), tokenizer, out / MODEL_DIR)
        write_json_on_main(
            out / HISTORY_FILE, {"history": history, "world_size": dist_ctx.world_size}, dist_ctx
        )
        return history


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
