"""PISA training throughput and scoring latency on the CPU, one process (1 and 2 torch threads)
and two gloo DDP processes under torchrun; the GPU rows are read from the device runs' JSON
(benchmarks/sessionrec_gpu.py, benchmarks/sessionrec_tuned.py; same settings: max_sessions 10,
batch 256).

    NLPREC_DATA=../shared/data flock /tmp/nlprec-bench.lock nice -n 5 python \
        benchmarks/sessionrec_throughput.py --gpu-json sessionrec_tafeng.json sessionrec_completejourney.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from nlprec.core.bench import record_section
from nlprec.core.data import data_root
from nlprec.core.distributed import launch_torchrun
from nlprec.sessionrec.data import SessionData
from nlprec.sessionrec.loaders import read_reality_check
from nlprec.sessionrec.pisa import PISAConfig, PISARecommender
from nlprec.sessionrec.split import temporal_split
from nlprec.sessionrec.steps import TrainConfig
from sessionrec_gpu import scoring_latency

N_USERS = 2000
MODEL = dict(epochs=2, max_sessions=10, batch_size=256)
DATA_LABELS = {
    "tafeng": "all 13,858 TaFeng users, 12k items",
    "completejourney": "Complete Journey, 68k items",
}


def ddp_speed(data: SessionData, folder: Path, nproc: int = 2) -> float:
    """Median train sessions/s of ``nproc`` gloo processes (1 torch thread each) on ``data``."""
    data.save(folder / "sessions.json")
    cfg = TrainConfig(variant="pisa", seeds=[0], model=dict(MODEL, max_val_cases=0))
    (folder / "train.json").write_text(cfg.model_dump_json())
    args = ["-m", "nlprec.sessionrec.ddp", "--sessions", folder / "sessions.json"]
    args += ["--config", folder / "train.json", "--out", folder / "out", "--backend", "gloo"]
    launch_torchrun(args, nproc, env={"OMP_NUM_THREADS": "1"})
    history = json.loads((folder / "out" / "result.json").read_text())["history"]
    return float(np.median([row["sessions_per_s"] for row in history[0]["epochs"]]))


def gpu_rows(paths: list[str]) -> list[str]:
    """Rows from sessionrec_gpu.py (TaFeng pisa) and sessionrec_tuned.py (timing) result files."""
    rows = []
    for path in paths:
        report = json.loads(Path(path).read_text())
        tafeng = report.get("runs", {}).get("tafeng", {}).get("pisa")
        if tafeng:
            speed = np.median([r["train_sessions_per_s"] for r in tafeng])
            rows.append(
                f"| {report['card']}, all 13,858 TaFeng users (sessionrec_gpu.py) | {speed:,.0f} | "
                f"{tafeng[0]['latency_ms_per_user']:.1f} |"
            )
        if report.get("timing"):
            t = report["timing"]
            data = DATA_LABELS[report.get("dataset", "completejourney")]
            rows.append(
                f"| {t['card']}, {data} (sessionrec_tuned.py) | "
                f"{t['train_sessions_per_s']:,.0f} | {t['latency_ms_per_user']:.1f} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-json", nargs="*", default=[], help="device result files")
    args = parser.parse_args()
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
            *gpu_rows(args.gpu_json),
        ]
    )
    record_section("sessionrec: PISA throughput and latency", text)


if __name__ == "__main__":
    main()
