"""PISA training under ``torchrun``: DistributedDataParallel, rank 0 alone evaluates and writes.

    torchrun --standalone --nproc-per-node 2 -m nlprec.sessionrec.ddp \\
        --sessions sessions.json --config train.json --out out/ [--backend gloo]

``--sessions``: a SessionData JSON (the ``load`` step's ``sessions.json``); ``--config``: a
JSON of :class:`nlprec.sessionrec.steps.TrainConfig` fields (``model.batch_size`` is the global
batch). Rank 0 writes ``out/result.json`` (test metrics per seed, epoch history) and, with
``save_model``, ``out/model``. The pipeline's train step runs this itself when
``nproc_per_node`` > 1; it also runs as one plain process (``python -m nlprec.sessionrec.ddp``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from nlprec.core.distributed import distributed_session, write_json_on_main
from nlprec.sessionrec.data import SessionData
from nlprec.sessionrec.split import temporal_split
from nlprec.sessionrec.steps import TrainConfig, train_seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", required=True, help="SessionData JSON file")
    parser.add_argument("--config", required=True, help="TrainConfig JSON file")
    parser.add_argument("--out", required=True, help="output folder (rank 0 writes)")
    parser.add_argument("--ideal", choices=["k", "all"], default="k", help="NDCG ideal")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None)
    args = parser.parse_args(argv)
    cfg = TrainConfig.model_validate_json(Path(args.config).read_text())
    with distributed_session(args.backend) as dist_ctx:
        torch.set_num_threads(cfg.threads)
        split = temporal_split(SessionData.load(args.sessions), cfg.test_sessions, cfg.val_sessions)
        out = Path(args.out)
        result = train_seeds(split, cfg, dist_ctx.device, args.ideal, out, dist_ctx=dist_ctx)
        result = {**result, "world_size": dist_ctx.world_size}
        write_json_on_main(out / "result.json", result, dist_ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
