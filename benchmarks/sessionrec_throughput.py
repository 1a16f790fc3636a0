"""PISA training throughput and scoring latency on the CPU, one process (1 and 2 torch threads)
and two gloo DDP processes under torchrun (the pipeline's train worker through nlprec.core.launch).

    NLPREC_DATA=../shared/data flock /tmp/nlprec-bench.lock nice -n 5 python \
        benchmarks/sessionrec_throughput.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from nlprec.core.bench import record_section
from nlprec.core.data import data_root
from nlprec.core.launch import run_distributed
from nlprec.sessionrec.data import SessionData
from nlprec.sessionrec.loaders import read_reality_check
from nlprec.sessionrec.pisa import PISAConfig, PISARecommender
from nlprec.sessionrec.split import temporal_split
from nlprec.sessionrec.steps import TrainConfig

N_USERS = 2000
MODEL = dict(epochs=2, max_sessions=10, batch_size=256)


def scoring_latency(model: PISARecommender, split, n_users: int = 50) -> float:
    """Median ms to score one user from scratch (ACT-R features + forward + full catalogue)."""
    times = []
    for case in split.test_cases[:n_users]:
        model.features["cases"].pop((case.user, case.position), None)
        start = time.perf_counter()
        model.score(split.data, [case])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def ddp_speed(data: SessionData, folder: Path, nproc: int = 2) -> float:
    """Median train sessions/s of ``nproc`` gloo processes (1 torch thread each) on ``data``."""
    data.save(folder / "sessions.json")
    cfg = TrainConfig(variant="pisa", seeds=[0], model=dict(MODEL, max_val_cases=0))
    result = run_distributed(
        "nlprec.sessionrec.steps:train_worker",
        {"train": cfg.model_dump(mode="json"), "phase": "test"},
        {
            "validation_file": str(folder / "sessions.json"),
            "test": str(folder / "sessions.json"),
            "ndcg_ideal": "all",
        },
        folder / "out",
        nproc,
        backend="gloo",
    )
    return float(np.median([row["sessions_per_s"] for row in result["history"][0]["epochs"]]))


def main() -> None:
    load_before = os.getloadavg()[0]
    full = read_reality_check(data_root() / "baskets" / "tafeng")
    data = SessionData(full.items, full.users[:N_USERS], full.name, full.notes, full.time_scale)
    split = temporal_split(data, 1, 1)
    rows = []
    features: dict = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cfg = PISAConfig(**MODEL, max_val_cases=0)
        model = PISARecommender(cfg).fit(split, features=features)
        speed = float(np.median([h["sessions_per_s"] for h in model.history]))
        model.precompute_cases(split.data, split.test_cases[:50])
        latency = scoring_latency(model, split)
        rows.append(f"| CPU, torch threads {threads} | {speed:.0f} | {latency:.1f} |")
        print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        speed = ddp_speed(data, Path(folder))
    rows.append(f"| CPU, 2 gloo DDP processes × 1 thread (torchrun) | {speed:.0f} | – |")
    print(rows[-1], flush=True)
    loads = f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    text = "\n".join(
        [
            f"PISA (d 32, 2 layers, T 10 sessions, L 20 items, batch 256) on the first {N_USERS} TaFeng users; "
            "sessions/s = valid input sessions per second of training (median over 2 epochs); ms/user = "
            "median time to build one user's ACT-R features and score the full catalogue (11,997 items). "
            f"The 2-core machine is shared with other engineers; {loads} (heavy jobs queue on a lock, "
            "so a load near 2 means the run had the machine nearly to itself).",
            "",
            "| where | train sessions/s | ms/user |",
            "|---|---|---|",
            *rows,
        ]
    )
    record_section("sessionrec: PISA throughput and latency", text)


if __name__ == "__main__":
    main()
