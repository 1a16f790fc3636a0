# make bench: skip records a GPU run's reranker logits (needs the run's output file)
"""Record what each cross-encoder recipe gives (``packages/ranking/scripts/rerank_recipes_gpu.py``).

The GPU run leaves cross-encoder logits for the hybrid's top 100 of the dev queries (train queries
held out from cross-encoder training) and the test queries. Here, per recipe and depth (20, 100):
pure reranking (alpha = 1) and interpolation with the hybrid, alpha chosen on the dev queries;
then test nDCG@10 and a paired randomisation test against the hybrid. Nothing is chosen on test.

    python benchmarks/ranking_rerankers.py OUT/rerank_recipes.json[.gz|.xz] --data ../shared/data/beir/scifact \
        --device "<card from the run's reply>"
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
from pathlib import Path

import numpy as np
from nlprec.core.bench import record_section
from nlprec.ranking.data import load_beir
from nlprec.ranking.evaluate import ndcg10, paired_randomization_test, per_query_scores
from nlprec.ranking.rerank import rerank_at_depth

DEPTHS = (20, 100)
ALPHAS = [round(a, 2) for a in np.arange(0, 1.0001, 0.1)]
GPU_COMMAND = (
    "PYTHONPATH=packages/core/src:packages/ranking/src python packages/ranking/scripts/"
    "rerank_recipes_gpu.py train --data <scifact> --bm25 bm25.npz --model <MiniLM dir> --out OUT "
    "--budget-s 100 (bm25.npz from its `prepare` command, on CPU)"
)


def settings(recipe: dict) -> str:
    cfg = recipe["train"]
    parts = [f"{cfg['loss']}", f"{recipe['n_neg']} neg. from {recipe['negatives_from']}"
             + (f" (top {recipe['sample_from']})" if recipe["sample_from"] else ""),
             f"{cfg['epochs']} ep., batch {cfg['batch_size']}, lr {cfg['lr']:g}"]  # fmt: skip
    if cfg.get("head_lr"):
        parts.append(f"head lr {cfg['head_lr']:g}")
    if cfg.get("distill_weight"):
        parts.append(f"distil. λ {cfg['distill_weight']:g}, τ {cfg['teacher_temperature']:g}")
    return ", ".join(parts)


def evaluate_recipe(recipe: dict, hybrid: dict, qrels: dict) -> dict:
    """Per depth: pure test nDCG@10 and (alpha from dev, test nDCG@10, per-query test scores)."""
    scores = recipe["scores"]
    out = {}
    for depth in DEPTHS:
        dev = {
            a: ndcg10(qrels["dev"], rerank_at_depth(scores["dev"], hybrid["dev"], depth, a))
            for a in ALPHAS
        }
        alpha = max(ALPHAS, key=lambda a: (dev[a], -abs(a - 0.5)))  # ties: the less extreme alpha
        test_run = rerank_at_depth(scores["test"], hybrid["test"], depth, alpha)
        pure_run = rerank_at_depth(scores["test"], hybrid["test"], depth, 1.0)
        out[depth] = {"alpha": alpha, "dev": dev[alpha],
                      "test": per_query_scores(qrels["test"], test_run, ["ndcg@10"])["ndcg@10"],
                      "pure": ndcg10(qrels["test"], pure_run)}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--data", required=True)
    parser.add_argument("--device", required=True, help="the card, as the run's reply named it")
    parser.add_argument("--dry", action="store_true", help="print only, RESULTS.md untouched")
    args = parser.parse_args()
    path = Path(args.results)
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rt", encoding="utf-8") as handle:
        payload = json.load(handle)
    ds = load_beir(args.data)
    hybrid = payload["first_stage"]["hybrid"]
    qrels = {"dev": {q: ds.qrels["train"][q] for q in hybrid["dev"]},
             "test": {q: ds.qrels["test"][q] for q in hybrid["test"]}}  # fmt: skip
    first = {n: ndcg10(qrels["test"], r["test"]) for n, r in payload["first_stage"].items()}
    base = per_query_scores(qrels["test"], hybrid["test"], ["ndcg@10"])["ndcg@10"]
    qids = sorted(base)
    lines = [
        f"SciFact, cross-encoders fine-tuned from the all-MiniLM-L6-v2 weights (a fresh 1-logit head on "
        f"its pooler) on {payload['n_fit']} train queries; depth and alpha chosen on the other "
        f"{payload['n_dev']} train queries (dev); test = {len(hybrid['test'])} queries. They rerank the top 20 or 100 of "
        f"the hybrid (linear BM25/dense {payload['fusion_weights']}, weights tuned on train). "
        f"Max length 256; training in bf16 autocast, scoring fp32 (TF32 matmuls); {payload['device']} (the run's reply: {args.device}).",
        "",
        "First stages, test nDCG@10: "
        + ", ".join(f"{n} {v:.4f}" for n, v in first.items())
        + " (the hybrid is the baseline below).",
        "",
        "| recipe | settings | examples | train s | pure @20 | pure @100 | interp. @20 (α) | interp. @100 (α) | best on dev vs hybrid (p) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, recipe in payload["recipes"].items():
        res = evaluate_recipe(recipe, hybrid, qrels)
        best = max(DEPTHS, key=lambda d: res[d]["dev"])
        a = np.array([res[best]["test"][q] for q in qids])
        b = np.array([base[q] for q in qids])
        p = paired_randomization_test(a, b)
        interp = [
            f"{np.mean(list(res[d]['test'].values())):.4f} ({res[d]['alpha']:g})" for d in DEPTHS
        ]
        lines.append(
            f"| {name} | {settings(recipe)} | {recipe['n_examples']} | {recipe['train_s']:.0f} | "
            f"{res[20]['pure']:.4f} | {res[100]['pure']:.4f} | {interp[0]} | {interp[1]} | "
            f"@{best}: {a.mean() - b.mean():+.4f} ({p:.3f}) |"
        )
    if payload["skipped"]:
        lines += ["", f"Not run (past the time budget): {', '.join(payload['skipped'])}."]
    lines += [
        "",
        "pure = the cross-encoder's order alone over the top k; interp. = α·minmax(CE) + (1 − α)·minmax(hybrid) "
        "over the top k, α on dev (α = 0 is the hybrid itself); last column: the depth whose interpolation "
        "scored best on dev, its test nDCG@10 minus the hybrid's, paired randomisation p.",
        "",
        f"GPU command: `{GPU_COMMAND}`",
    ]
    table = "\n".join(lines)
    print(table)
    if args.dry:
        return
    record_section("ranking: reranker recipes (GPU)", table,
                   command=f"python benchmarks/ranking_rerankers.py {args.results} --data {args.data} --device '{args.device}'",
                   machine=f"{args.device} (training, scoring); x86_64 CPU, 2 cores (evaluation)")  # fmt: skip


if __name__ == "__main__":
    main()
