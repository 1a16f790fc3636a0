"""Fine-tuning under ``torchrun``: DistributedDataParallel, rank 0 alone evaluates and writes.

    torchrun --standalone --nproc-per-node 2 -m nlprec.clinical_longdoc.ddp \\
        --task classify|qa|ner --config finetune.json --inputs inputs.json --out OUT [--backend gloo]

``--config``: a JSON of :class:`nlprec.clinical_longdoc.steps.FineTuneConfig` fields
(``max_tokens`` / ``max_batch`` bound the *global* batch); ``--inputs``: the output dict of the
data step (``load_documents`` / ``load_covid_qa`` / ``load_ncbi``: paths of train/dev/test json,
and the label or tag list). Every rank builds the same global batches and trains on its share of
each (`nlprec.clinical_longdoc.training.rank_batches`), so N processes take the optimisation steps
one process takes. Rank 0 writes ``OUT/result.json`` (test scores per seed) and, with
``save_model``, ``OUT/model`` (the last seed's). The fine-tune steps run this themselves when
``nproc_per_node`` > 1; it also runs as one plain process (``python -m nlprec.clinical_longdoc.ddp``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from nlprec.clinical_longdoc.steps import (
    TASKS,
    FineTuneConfig,
    _settings,
    load_task_splits,
    train_one_seed,
)
from nlprec.core.distributed import barrier, distributed_session, write_json_on_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--config", required=True, help="FineTuneConfig JSON file")
    parser.add_argument("--inputs", required=True, help="the data step's output dict (JSON)")
    parser.add_argument("--out", required=True, help="output folder (rank 0 writes)")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None)
    args = parser.parse_args(argv)
    cfg = FineTuneConfig.model_validate_json(Path(args.config).read_text())
    upstream = json.loads(Path(args.inputs).read_text())
    with distributed_session(args.backend) as dist_ctx:
        torch.set_num_threads(cfg.threads)
        splits = load_task_splits(args.task, upstream)
        out = Path(args.out)
        per_seed, model = [], None
        for seed in cfg.seeds:
            torch.manual_seed(seed)
            started = time.perf_counter()
            settings = _settings(cfg, dist_ctx.device, seed, dist_ctx)
            model, scores = train_one_seed(args.task, cfg, upstream, splits, settings)
            per_seed.append(
                {**scores, "seed": seed, "train_seconds": time.perf_counter() - started}
            )
        if cfg.save_model and model is not None and dist_ctx.is_main:
            model.save(out / "model")
        barrier(dist_ctx)
        write_json_on_main(
            out / "result.json", {"per_seed": per_seed, "world_size": dist_ctx.world_size}, dist_ctx
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
