"""Cross-encoder recipes on a BEIR folder: the plain recipe and better variants, GPU side only.

The GPU machine has neither bm25s nor ir-measures, so the work is split in three:

1. ``prepare`` (here, CPU): BM25 runs for the train and test queries, saved compactly (``.npz``).
2. ``train`` (GPU): dense MiniLM runs (exact search), the hybrid (linear fusion with the weights
   tuned on train queries earlier), then for each recipe: mine negatives on the train queries
   minus a held-out dev part, train a cross-encoder, and score the hybrid's top ``--depth`` for
   the dev and test queries. Everything goes to one JSON, rewritten after each recipe, so a run
   cut short keeps the recipes already done.
3. ``benchmarks/ranking_rerankers.py`` (here): depth and interpolation chosen on the dev queries,
   test nDCG@10 with ir-measures, the RESULTS.md table.

    python packages/ranking/scripts/rerank_recipes_gpu.py prepare --data DIR --out bm25.npz
    python packages/ranking/scripts/rerank_recipes_gpu.py train --data DIR --bm25 bm25.npz \
        --model MINILM_DIR --out OUT [--quick] [--budget-s 120]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from nlprec.ranking.data import Run, load_beir

TRAIN_K, TEST_K = 100, 1000  # the list depths the fusion weights were tuned with (beir_gpu.py)
FUSION_WEIGHTS = (0.55, 0.45)  # linear BM25/dense, tuned on SciFact train (RESULTS ranking-scifact)


def recipes(quick: bool) -> list[dict]:
    """The recipes in the order they run (the plain one first: a time budget cuts from the end)."""
    steps = 2 if quick else -1
    listwise = {"loss": "listwise", "epochs": 3, "batch_size": 32, "max_steps": steps}
    return [
        {"name": "ce_naive", "negatives_from": "bm25", "n_neg": 3, "sample_from": None,
         "train": {"loss": "bce", "epochs": 1, "batch_size": 16, "max_steps": steps}},
        {"name": "ce_head_lr", "negatives_from": "hybrid", "n_neg": 7, "sample_from": 30,
         "train": listwise | {"lr": 5e-5, "head_lr": 1e-3}},
        {"name": "ce_distill", "negatives_from": "hybrid", "n_neg": 7, "sample_from": 30,
         "train": listwise | {"lr": 5e-5, "head_lr": 1e-3, "distill_weight": 0.5}},
        {"name": "ce_more_negatives", "negatives_from": "hybrid", "n_neg": 7, "sample_from": 30,
         "train": {"loss": "bce", "epochs": 3, "batch_size": 32, "max_steps": steps}},
    ]  # fmt: skip


def split_dev(train_qids: list[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(dev, fit) query ids: the same held-out part as beir_gpu.py for the same seed and fraction."""
    shuffled = sorted(train_qids)
    random.Random(seed).shuffle(shuffled)
    n_dev = int(len(shuffled) * fraction)
    return sorted(shuffled[:n_dev]), sorted(shuffled[n_dev:])


def save_runs_npz(path: Path, runs: dict[str, Run], doc_ids: list[str]) -> None:
    """Runs as arrays: per split, query ids, (n_queries, k) document indices and scores."""
    index = {d: i for i, d in enumerate(doc_ids)}
    arrays = {}
    for split, run in runs.items():
        qids = list(run)
        k = max(len(s) for s in run.values())
        ids = np.full((len(qids), k), -1, dtype=np.int32)
        scores = np.zeros((len(qids), k), dtype=np.float32)
        for row, qid in enumerate(qids):
            ranked = sorted(run[qid].items(), key=lambda item: -item[1])
            ids[row, : len(ranked)] = [index[d] for d, _ in ranked]
            scores[row, : len(ranked)] = [s for _, s in ranked]
        arrays |= {f"{split}_qids": np.array(qids), f"{split}_ids": ids, f"{split}_scores": scores}
    np.savez_compressed(path, **arrays)


def load_runs_npz(path: Path, doc_ids: list[str]) -> dict[str, Run]:
    data = np.load(path)
    splits = sorted({k.rsplit("_", 1)[0] for k in data.files})
    runs = {}
    for split in splits:
        ids, scores = data[f"{split}_ids"], data[f"{split}_scores"]
        runs[split] = {
            str(q): {doc_ids[i]: float(s) for i, s in zip(row_i, row_s, strict=True) if i >= 0}
            for q, row_i, row_s in zip(data[f"{split}_qids"], ids, scores, strict=True)
        }
    return runs


def prepare(args) -> None:
    from nlprec.ranking.bm25 import BM25Retriever

    ds = load_beir(args.data)
    retriever = BM25Retriever().index(ds.corpus)
    runs = {}
    for split, k in (("train", TRAIN_K), ("test", TEST_K)):
        qids = sorted(ds.split_queries(split))
        hits = retriever.search([ds.queries[q] for q in qids], k)
        runs[split] = {q: dict(h) for q, h in zip(qids, hits, strict=True)}
    save_runs_npz(Path(args.out), runs, [d["id"] for d in ds.corpus])
    print(f"wrote {args.out}: {', '.join(f'{s} {len(r)} queries' for s, r in runs.items())}")


class RecipeRun:
    """The GPU side: first stages, then one cross-encoder per recipe, scores to one JSON."""

    def __init__(self, args) -> None:
        import torch

        self.args, self.t0 = args, time.time()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.backends.cuda.matmul.allow_tf32 = True  # scoring runs fp32 (training: bf16 autocast)
        ds = load_beir(args.data)
        self.docs, self.queries, self.qrels = ds.corpus, ds.queries, ds.qrels
        self.by_id = {d["id"]: d for d in ds.corpus}
        self.bm25 = load_runs_npz(Path(args.bm25), [d["id"] for d in ds.corpus])
        self.dev_q, self.fit_q = split_dev(list(self.bm25["train"]), args.dev_fraction)
        self.test_q = sorted(self.bm25["test"])
        if args.quick:
            self.dev_q, self.fit_q, self.test_q = self.dev_q[:8], self.fit_q[:40], self.test_q[:8]
            self.docs = self._quick_corpus()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.payload = {"device": torch.cuda.get_device_name(0) if self.device == "cuda" else "cpu",
                        "torch": torch.__version__, "depth": args.depth, "dev_fraction": args.dev_fraction,
                        "fusion_weights": FUSION_WEIGHTS, "n_dev": len(self.dev_q), "n_fit": len(self.fit_q),
                        "recipes": {}, "skipped": [], "first_stage": {}}  # fmt: skip

    def _quick_corpus(self) -> list[dict[str, str]]:
        """The documents the quick queries touch (BM25 top 20, judged), so CPU encoding is short."""
        keep = set()
        for split, qids in (("train", self.dev_q + self.fit_q), ("test", self.test_q)):
            for q in qids:
                keep |= set(sorted(self.bm25[split][q], key=self.bm25[split][q].get)[-20:])
                keep |= set(self.qrels[split].get(q, {}))
        return [d for d in self.docs if d["id"] in keep]

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.t0:7.1f}s] {message}", flush=True)

    def dense_runs(self) -> dict[str, Run]:
        from nlprec.ranking.data import document_text
        from nlprec.ranking.encoder import encode, load_encoder
        from nlprec.ranking.exact import exact_search

        model = load_encoder(self.args.model, device=self.device)
        doc_vecs = encode(model, [document_text(d) for d in self.docs], batch_size=128)  # (n, 384)
        runs = {}
        for split, k in (("train", TRAIN_K), ("test", TEST_K)):
            qids = list(self.bm25[split])
            q_vecs = encode(model, [self.queries[q] for q in qids], batch_size=128)
            scores, ids = exact_search(q_vecs, doc_vecs, k, self.device)
            runs[split] = {q: {self.docs[i]["id"]: float(s) for i, s in zip(row_i, row_s, strict=True)}
                           for q, row_i, row_s in zip(qids, ids, scores, strict=True)}  # fmt: skip
        return runs

    def first_stages(self) -> None:
        from nlprec.ranking.fusion import fuse

        dense = self.dense_runs()
        self.hybrid = {
            split: fuse([self.bm25[split], dense[split]], "linear", FUSION_WEIGHTS, TEST_K)
            for split in ("train", "test")
        }
        self.log("first stages done (bm25 carried, dense, hybrid)")
        depth = self.args.depth
        for name, runs in (("bm25", self.bm25), ("dense", dense), ("hybrid", self.hybrid)):
            self.payload["first_stage"][name] = {
                "dev": _top(runs["train"], self.dev_q, depth),
                "test": _top(runs["test"], self.test_q, depth),
            }
        self.save()

    def run_recipe(self, recipe: dict) -> None:
        from nlprec.ranking.rerank import CrossEncoderReranker, RerankerConfig
        from nlprec.ranking.training import (
            CrossEncoderTrainConfig,
            mine_hard_negatives,
            train_cross_encoder,
        )

        cfg = CrossEncoderTrainConfig(**recipe["train"])
        source = self.bm25 if recipe["negatives_from"] == "bm25" else self.hybrid
        examples = mine_hard_negatives(
            {q: self.queries[q] for q in self.fit_q}, self.qrels["train"], source["train"],
            self.by_id, recipe["n_neg"], 0, 0, recipe["sample_from"],
            with_teacher_scores=cfg.distill_weight > 0,
        )  # fmt: skip
        start = time.time()
        model_dir = train_cross_encoder(self.args.model, examples, cfg,
                                        Path("/tmp/rerank_recipes") / recipe["name"], self.device, 0, self.log)  # fmt: skip
        train_s = time.time() - start
        reranker = CrossEncoderReranker(
            RerankerConfig(model=str(model_dir), max_length=cfg.max_length, batch_size=512),
            device=self.device,
        )
        start = time.time()
        scores = {
            split: reranker.rerank_run(
                self.queries,
                self.payload["first_stage"]["hybrid"][split],
                self.by_id,
                self.args.depth,
            )
            for split in ("dev", "test")
        }
        self.payload["recipes"][recipe["name"]] = recipe | {
            "train": cfg.model_dump(), "n_examples": len(examples), "train_s": train_s,
            "score_s": time.time() - start, "scores": {s: _rounded(r) for s, r in scores.items()},
        }  # fmt: skip
        self.log(f"{recipe['name']}: {len(examples)} examples, trained {train_s:.1f}s")
        self.save()

    def save(self) -> None:
        self.payload["seconds"] = time.time() - self.t0
        tmp = self.out / "rerank_recipes.json.tmp"
        tmp.write_text(json.dumps(self.payload))
        tmp.replace(self.out / "rerank_recipes.json")


def _top(run: Run, qids: list[str], depth: int) -> Run:
    return {
        q: _rounded({q: dict(sorted(run[q].items(), key=lambda item: -item[1])[:depth])})[q]
        for q in qids
    }


def _rounded(run: Run) -> Run:
    return {q: {d: round(s, 5) for d, s in docs.items()} for q, docs in run.items()}


def train(args) -> None:
    x = RecipeRun(args)
    x.first_stages()
    for recipe in recipes(args.quick):
        if time.time() - x.t0 > args.budget_s:
            x.payload["skipped"].append(recipe["name"])
            x.log(f"{recipe['name']}: skipped, past the {args.budget_s}s budget")
            continue
        x.run_recipe(recipe)
    x.save()
    x.log("done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="BM25 runs (CPU, needs bm25s)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    t = sub.add_parser("train", help="dense + hybrid + cross-encoder recipes (GPU)")
    t.add_argument("--data", required=True)
    t.add_argument("--bm25", required=True)
    t.add_argument("--model", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--depth", type=int, default=100)
    t.add_argument("--dev-fraction", type=float, default=0.2)
    t.add_argument("--budget-s", type=float, default=1e9, help="start no recipe after this")
    t.add_argument("--quick", action="store_true", help="tiny sizes, to check on CPU")
    args = parser.parse_args()
    prepare(args) if args.command == "prepare" else train(args)


if __name__ == "__main__":
    main()
