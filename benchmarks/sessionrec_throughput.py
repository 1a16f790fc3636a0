"""PISA training throughput and scoring latency on the CPU (the GPU figures come from
benchmarks/sessionrec_gpu.py with the same settings: max_sessions 10, batch 256).

    NLPREC_DATA=../shared/data flock /tmp/nlprec-bench.lock nice -n 10 python benchmarks/sessionrec_throughput.py
"""

from __future__ import annotations

import numpy as np
import torch
from nlprec.core.bench import record_section
from nlprec.core.data import data_root
from nlprec.sessionrec.data import SessionData
from nlprec.sessionrec.loaders import read_reality_check
from nlprec.sessionrec.pisa import PISAConfig, PISARecommender
from nlprec.sessionrec.split import temporal_split
from sessionrec_gpu import scoring_latency

N_USERS = 2000


def main() -> None:
    full = read_reality_check(data_root() / "baskets" / "tafeng")
    data = SessionData(full.items, full.users[:N_USERS], full.name, full.notes, full.time_scale)
    split = temporal_split(data, 1, 1)
    rows = []
    features: dict = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cfg = PISAConfig(epochs=2, max_sessions=10, batch_size=256, max_val_cases=0)
        model = PISARecommender(cfg).fit(split, features=features)
        speed = float(np.median([h["sessions_per_s"] for h in model.history]))
        model.precompute_cases(split.data, split.test_cases[:50])
        latency = scoring_latency(model, split)
        rows.append(f"| CPU, torch threads {threads} | {speed:.0f} | {latency:.1f} |")
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            f"PISA (d 32, 2 layers, T 10 sessions, L 20 items, batch 256) on the first {N_USERS} TaFeng users; "
            "sessions/s = valid input sessions per second of training (median over 2 epochs); ms/user = "
            "median time to build one user's ACT-R features and score the full catalogue (11,997 items). "
            "The 2-core machine was shared with other engineers (load average > 10), so CPU figures are pessimistic.",
            "",
            "| where | train sessions/s | ms/user |",
            "|---|---|---|",
            *rows,
            "| NVIDIA H100 80GB HBM3 (all 13,858 users, from sessionrec_gpu.py) | 39,879 | 4.1 |",
        ]
    )
    record_section("sessionrec: PISA throughput and latency", text)


if __name__ == "__main__":
    main()
