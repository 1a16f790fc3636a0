"""Record the SciFact figures of ``packages/ranking/scripts/beir_gpu.py`` in benchmarks/RESULTS.md.

The GPU script writes results.json (it runs where MLflow is not installed); this formats one or
more of them (a later file wins for a system both contain) against the issue's targets.

    python benchmarks/ranking_scifact.py packages/ranking/results/scifact_gpu_run1.json \
        packages/ranking/results/scifact_gpu_run2.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nlprec.core.bench import record_section

TARGETS = {
    "bm25": ("≥ 0.665", lambda x: x >= 0.665),
    "dense": ("0.645 ± 0.005", lambda x: abs(x - 0.645) <= 0.005),
    "hybrid": ("≥ 0.71", lambda x: x >= 0.71),
    "rerank": ("≥ 0.74", lambda x: x >= 0.74),
}
GPU_COMMAND = (
    "PYTHONPATH=packages/core/src:packages/ranking/src python packages/ranking/scripts/beir_gpu.py "
    "--data ../shared/data/beir/scifact --model <MiniLM dir> --out OUT [--core-only]"
)


def describe(system: str, row: dict) -> str:
    keys = (
        "method",
        "weights",
        "negatives_from",
        "n_negatives",
        "epochs",
        "batch_size",
        "loss",
        "depth",
        "alpha",
    )
    return ", ".join(f"{k}={row[k]}" for k in keys if k in row)


def main(paths: list[str]) -> None:
    results, rerankers, device = {}, {}, ""
    for path in paths:
        payload = json.loads(Path(path).read_text())
        device = payload["device"]
        rerankers |= payload["results"].pop("_rerankers", {})
        results |= payload["results"]
    lines = [
        f"SciFact test (300 queries, 5,183 documents); selection on train queries only; {device}.",
        "Fusion weights tuned on the 809 train queries; rerank depth and alpha on 161 train queries",
        "held out from cross-encoder training. Dense search is exact (same ranking as FAISS Flat IP).",
        "",
        "| system | nDCG@10 | MRR@10 | R@100 | R@1000 | MAP | target | settings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system, row in results.items():
        target, check = TARGETS.get(system, ("", None))
        verdict = f"{target} {'met' if check(row['ndcg@10']) else 'MISSED'}" if check else ""
        lines.append(
            f"| {system} | {row['ndcg@10']:.4f} | {row['mrr@10']:.4f} | {row['recall@100']:.4f} | "
            f"{row['recall@1000']:.4f} | {row['map']:.4f} | {verdict} | {describe(system, row)} |"
        )
    lines += ["", "Cross-encoders (monoBERT from the MiniLM weights):", ""]
    for name, cfg in rerankers.items():
        lines.append(f"- {name}: {cfg['n_examples']} examples, {cfg['loss']}, {cfg['n_negatives']} negatives from "
                     f"{cfg['negatives_from']}, {cfg['epochs']} epochs, trained in {cfg['train_s']:.0f}s")  # fmt: skip
    lines += ["", f"GPU command: `{GPU_COMMAND}`"]
    table = "\n".join(lines)
    print(table)
    record_section("ranking-scifact", table)


if __name__ == "__main__":
    main(sys.argv[1:])
