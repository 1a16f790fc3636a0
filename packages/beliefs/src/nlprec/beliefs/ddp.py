"""Breakpoint-model training under ``torchrun``: DistributedDataParallel, rank 0 writes.

    torchrun --standalone --nproc-per-node 2 -m nlprec.beliefs.ddp \\
        --train train.jsonl --config config.json --out out/ [--backend gloo]

``--train``: story records (the ``load`` step's ``train.jsonl``); ``--config``: a JSON object
``{"model": BreakpointConfig fields, "train": TrainConfig fields}`` (``train.batch_size`` is the
global batch, in stories). Rank 0 saves the model to ``out/model`` and the training statistics to
``out/stats.json``. The ``breakpoint_model`` step runs this itself when ``nproc_per_node`` > 1; it
also runs as one plain process (``python -m nlprec.beliefs.ddp``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.records import Story
from nlprec.beliefs.training import TrainConfig, train_breakpoint
from nlprec.core.data import read_jsonl
from nlprec.core.distributed import distributed_session, write_json_on_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="JSONL of story records")
    parser.add_argument("--config", required=True, help='JSON {"model": {...}, "train": {...}}')
    parser.add_argument("--out", required=True, help="output folder (rank 0 writes)")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    model_cfg = BreakpointConfig(**config.get("model", {}))
    train_cfg = TrainConfig(**config.get("train", {}))
    with distributed_session(args.backend) as dist_ctx:
        torch.set_num_threads(args.threads)
        stories = [Story.from_dict(r) for r in read_jsonl(args.train)]
        torch.manual_seed(train_cfg.seed)  # same initial heads on every rank
        model = BreakpointModel(model_cfg)
        stats = train_breakpoint(model, stories, train_cfg, dist_ctx.device, dist_ctx)
        out = Path(args.out)
        if dist_ctx.is_main:
            model.save(out / "model")
        stats = {**stats, "world_size": dist_ctx.world_size}
        write_json_on_main(out / "stats.json", stats, dist_ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
