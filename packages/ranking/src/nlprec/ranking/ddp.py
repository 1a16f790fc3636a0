"""Fine-tuning the bi-encoder and the cross-encoder under torchrun (issue #10):

    torchrun --standalone --nproc-per-node 2 -m nlprec.ranking.ddp --model MODEL \\
        --examples examples.jsonl --out OUT --biencoder '{"epochs": 1, "batch_size": 64}' \\
        [--cross-encoder '{"loss": "listwise"}']

gloo on CPU, NCCL on GPUs (``nlprec.core.distributed``). ``examples.jsonl`` holds one
``TrainingExample`` per line (query, positive, negatives; ``write_examples`` writes it from
``mine_hard_negatives``). Every process draws the same global batches and trains on its share;
for MultipleNegativesRankingLoss the embeddings of all ranks are gathered with their gradients,
so every query still sees the whole global batch as negatives, and the averaged gradients make
N processes take the steps one process takes on the same global batches. Rank 0 alone writes
``OUT/biencoder/model``, ``OUT/cross_encoder/model`` and ``OUT/ddp.json``. Also runs as one plain
process (``python -m nlprec.ranking.ddp ...``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nlprec.core.distributed import distributed_session, write_json_on_main
from nlprec.ranking.training import (
    BiEncoderTrainConfig,
    CrossEncoderTrainConfig,
    TrainingExample,
    train_biencoder,
    train_cross_encoder,
)

SUMMARY_FILE = "ddp.json"


def write_examples(examples: list[TrainingExample], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(e.model_dump_json() + "\n" for e in examples), encoding="utf-8")
    return path


def read_examples(path: str | Path) -> list[TrainingExample]:
    examples = []
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    examples.append(TrainingExample.model_validate_json(line))
                except ValueError as err:
                    raise ValueError(f"{path}:{line_no}: not a training example ({err})") from err
    if not examples:
        raise ValueError(f"{path}: no training examples")
    return examples


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nlprec.ranking.ddp", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="encoder to start from (name or folder)")
    parser.add_argument("--examples", required=True, help="JSONL of TrainingExample")
    parser.add_argument("--out", required=True)
    parser.add_argument("--biencoder", help="BiEncoderTrainConfig as JSON (global batch size)")
    parser.add_argument("--cross-encoder", help="CrossEncoderTrainConfig as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.biencoder is None and args.cross_encoder is None:
        parser.error("nothing to train: give --biencoder and/or --cross-encoder")
    return args


def run(args: argparse.Namespace) -> dict:
    with distributed_session() as dist_ctx:
        examples = read_examples(args.examples)
        out = Path(args.out)
        log = print if dist_ctx.is_main else (lambda _: None)
        summary = {"world_size": dist_ctx.world_size, "n_examples": len(examples)}
        if args.biencoder is not None:
            cfg = BiEncoderTrainConfig(**json.loads(args.biencoder))
            train_biencoder(args.model, examples, cfg, out / "biencoder", dist_ctx.device,
                            args.seed, log, dist_ctx)  # fmt: skip
            summary["biencoder"] = cfg.model_dump()
        if args.cross_encoder is not None:
            cfg = CrossEncoderTrainConfig(**json.loads(args.cross_encoder))
            train_cross_encoder(args.model, examples, cfg, out / "cross_encoder",
                                dist_ctx.device, args.seed, log, dist_ctx)  # fmt: skip
            summary["cross_encoder"] = cfg.model_dump()
        write_json_on_main(out / SUMMARY_FILE, summary, dist_ctx)
        return summary


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
