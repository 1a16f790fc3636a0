"""The BEIR experiment on a GPU machine without MLflow/FAISS: every first stage, fine-tuning variant
and reranking variant, evaluated with the package's own functions.

Dense search here is exact (``nlprec.ranking.exact``, identical to FAISS Flat IP). Selection of
fusion weights, rerank depth and interpolation uses training queries only: fusion on the whole
train split, reranking on train queries held out from cross-encoder training (``--dev-fraction``).
Test figures of every variant are reported; none is chosen by its test score.

    python packages/ranking/scripts/beir_gpu.py --data DIR --model MODEL_DIR --out OUT [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import tarfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from nlprec.ranking.bm25 import BM25Retriever
from nlprec.ranking.data import document_text, load_beir, write_trec_run
from nlprec.ranking.encoder import encode, load_encoder
from nlprec.ranking.evaluate import compare_systems, evaluate_run, ndcg10, per_query_scores
from nlprec.ranking.exact import exact_search
from nlprec.ranking.fusion import fuse, tune_fusion_weights
from nlprec.ranking.rerank import CrossEncoderReranker, RerankerConfig, rerank_at_depth
from nlprec.ranking.training import (
    BiEncoderTrainConfig,
    CrossEncoderTrainConfig,
    mine_hard_negatives,
    train_biencoder,
    train_cross_encoder,
)

METRICS = ["ndcg@10", "mrr@10", "recall@100", "recall@1000", "map"]


class Experiment:
    def __init__(self, args):
        self.args, self.device = args, "cuda" if torch.cuda.is_available() else "cpu"
        self.out = Path(args.out)
        self.work = Path("/tmp/beir_gpu_work")
        ds = load_beir(args.data)
        self.docs = ds.corpus
        self.by_id = {d["id"]: d for d in ds.corpus}
        self.queries = ds.queries
        rng = random.Random(0)
        self.test_q = sorted(ds.split_queries("test"))
        self.train_q = sorted(ds.split_queries("train"))
        if args.quick:
            self.test_q, self.train_q = self.test_q[:16], self.train_q[:60]
        self.qrels = {"test": {q: ds.qrels["test"][q] for q in self.test_q},
                      "train": {q: ds.qrels["train"][q] for q in self.train_q}}  # fmt: skip
        shuffled = list(self.train_q)
        rng.shuffle(shuffled)
        n_dev = int(len(shuffled) * args.dev_fraction)
        self.dev_q, self.fit_q = sorted(shuffled[:n_dev]), sorted(shuffled[n_dev:])
        self.results: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}  # system -> {"test": run, "train": run}
        self.notes: list[str] = []
        self.t0 = time.time()

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.t0:7.1f}s] {message}", flush=True)

    def record(self, system: str, runs: dict, extra: dict | None = None) -> None:
        self.runs[system] = runs
        scores = evaluate_run(self.qrels["test"], runs["test"], METRICS)
        self.results[system] = scores | (extra or {})
        self.log(
            f"{system}: ndcg@10 {scores['ndcg@10']:.4f} mrr@10 {scores['mrr@10']:.4f} r@100 {scores['recall@100']:.4f}"
        )

    # -- first stages ------------------------------------------------------------------------------
    def bm25(self) -> None:
        retriever = BM25Retriever().index(self.docs)
        runs = {}
        for split, qids, k in (("test", self.test_q, 1000), ("train", self.train_q, 100)):
            hits = retriever.search([self.queries[q] for q in qids], k)
            runs[split] = {q: dict(h) for q, h in zip(qids, hits, strict=True)}
        self.record("bm25", runs)

    def dense(self, system: str, model_dir: str, extra: dict | None = None) -> None:
        model = load_encoder(model_dir, device=self.device)
        start = time.time()
        doc_vecs = encode(
            model, [document_text(d) for d in self.docs], batch_size=128
        )  # (n_docs, dim)
        encode_s = time.time() - start
        runs = {}
        for split, qids, k in (("test", self.test_q, 1000), ("train", self.train_q, 100)):
            q_vecs = encode(model, [self.queries[q] for q in qids], batch_size=128)
            scores, ids = exact_search(q_vecs, doc_vecs, k, self.device)
            runs[split] = {q: {self.docs[i]["id"]: float(s) for i, s in zip(row_i, row_s, strict=True)}
                           for q, row_i, row_s in zip(qids, ids, scores, strict=True)}  # fmt: skip
        self.record(system, runs, (extra or {}) | {"encode_docs_per_s": len(self.docs) / encode_s})
        del model
        torch.cuda.empty_cache() if self.device == "cuda" else None

    def hybrid(self, system: str, sources: list[str]) -> None:
        trials = {m: tune_fusion_weights([self.runs[s]["train"] for s in sources], self.qrels["train"], m, ndcg10, 0.05)
                  for m in ("rrf", "linear")}  # fmt: skip
        method = max(trials, key=lambda m: trials[m][1])
        weights, train_score = trials[method]
        runs = {
            split: fuse([self.runs[s][split] for s in sources], method, weights, 1000)
            for split in ("test", "train")
        }
        self.record(system, runs, {"method": method, "weights": list(weights), "train_ndcg@10": train_score,
                                   "sources": sources})  # fmt: skip

    # -- fine-tuning ---------------------------------------------------------------------------------
    def finetune_biencoder(
        self, name: str, negatives_from: str, n_neg: int, cfg: BiEncoderTrainConfig
    ) -> None:
        queries = {q: self.queries[q] for q in self.train_q}
        examples = mine_hard_negatives(
            queries, self.qrels["train"], self.runs[negatives_from]["train"], self.by_id, n_neg
        )
        start = time.time()
        model_dir = train_biencoder(
            self.args.model, examples, cfg, self.work / name, self.device, 0, self.log
        )
        extra = {"train_s": time.time() - start, "n_examples": len(examples), "negatives_from": negatives_from,
                 "n_negatives": n_neg, **cfg.model_dump()}  # fmt: skip
        self.dense(name, str(model_dir), extra)

    def train_reranker(self, name: str, negatives_from: str, n_neg: int, sample_from: int | None,
                       cfg: CrossEncoderTrainConfig) -> Path:  # fmt: skip
        queries = {q: self.queries[q] for q in self.fit_q}
        examples = mine_hard_negatives(
            queries,
            self.qrels["train"],
            self.runs[negatives_from]["train"],
            self.by_id,
            n_neg,
            0,
            0,
            sample_from,
        )
        start = time.time()
        model_dir = train_cross_encoder(
            self.args.model, examples, cfg, self.work / name, self.device, 0, self.log
        )
        self.log(f"{name}: trained on {len(examples)} examples in {time.time() - start:.1f}s")
        self.results.setdefault("_rerankers", {})[name] = {
            "train_s": time.time() - start, "n_examples": len(examples), "negatives_from": negatives_from,
            "n_negatives": n_neg, "sample_from": sample_from, **cfg.model_dump(),
        }  # fmt: skip
        return model_dir

    def rerank(
        self,
        name: str,
        model_dir: Path,
        first_stage: str,
        depths=(20, 50, 100),
        max_length: int = 256,
    ) -> None:
        reranker = CrossEncoderReranker(RerankerConfig(model=str(model_dir), max_length=max_length, batch_size=256),
                                        device=self.device)  # fmt: skip
        first = self.runs[first_stage]
        max_depth = max(depths)
        dev_first = {q: first["train"][q] for q in self.dev_q}
        dev_qrels = {q: self.qrels["train"][q] for q in self.dev_q}
        dev_scores = reranker.rerank_run(self.queries, dev_first, self.by_id, max_depth)
        test_scores = reranker.rerank_run(self.queries, first["test"], self.by_id, max_depth)
        alphas = [round(a, 2) for a in np.arange(0, 1.0001, 0.1)]
        grid = {
            (d, a): ndcg10(dev_qrels, rerank_at_depth(dev_scores, dev_first, d, a))
            for d in depths
            for a in alphas
        }
        (depth, alpha), dev_best = max(grid.items(), key=lambda item: item[1])
        pure_depth = max(depths, key=lambda d: grid[(d, 1.0)])
        for suffix, d, a in (("", depth, alpha), ("_pure", pure_depth, 1.0)):
            run = rerank_at_depth(test_scores, first["test"], d, a)
            self.record(f"{name}{suffix}", {"test": run},
                        {"first_stage": first_stage, "depth": d, "alpha": a, "dev_ndcg@10": grid[(d, a)]})  # fmt: skip
        for d in depths:  # every depth with pure reranking, for the record (not used to choose)
            self.results[name + "_pure"][f"test_ndcg@10_depth{d}"] = ndcg10(
                self.qrels["test"], rerank_at_depth(test_scores, first["test"], d, 1.0)
            )
        del reranker
        torch.cuda.empty_cache() if self.device == "cuda" else None

    def guarded(self, label: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:  # one failing variant must not lose the others' figures
            self.notes.append(f"{label} failed: {traceback.format_exc(limit=3)}")
            self.log(self.notes[-1])
            return None

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        per_query = {
            s: per_query_scores(self.qrels["test"], r["test"], ["ndcg@10"])["ndcg@10"]
            for s, r in self.runs.items()
        }
        payload = {
            "device": torch.cuda.get_device_name(0) if self.device == "cuda" else "cpu",
            "torch": torch.__version__,
            "n_docs": len(self.docs), "n_test": len(self.test_q), "n_train": len(self.train_q),
            "n_dev": len(self.dev_q), "seconds": time.time() - self.t0,
            "results": self.results, "significance_vs_bm25": compare_systems(per_query, "bm25"), "notes": self.notes,
        }  # fmt: skip
        (self.out / "results.json").write_text(json.dumps(payload, indent=1))
        runs_dir = self.work / "runs"
        for system, runs in self.runs.items():
            top100 = {
                q: dict(sorted(s.items(), key=lambda item: -item[1])[:100])
                for q, s in runs["test"].items()
            }
            write_trec_run(top100, runs_dir / f"{system}.test.trec", tag=system)
        with tarfile.open(self.out / "runs_top100.tar.gz", "w:gz") as tar:
            tar.add(runs_dir, arcname="runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings to check the script on CPU"
    )
    parser.add_argument(
        "--core-only", action="store_true", help="skip the extra bi-encoder variants"
    )
    args = parser.parse_args()
    x = Experiment(args)
    steps = 2 if args.quick else -1
    x.bm25()
    x.dense("dense", args.model)
    x.hybrid("hybrid", ["bm25", "dense"])
    x.save()
    # bi-encoder: the plain recipe, then more negatives (from the hybrid) and epochs
    if not args.core_only:
        x.guarded("dense_ft_plain", x.finetune_biencoder, "dense_ft_plain", "bm25", 1,
                  BiEncoderTrainConfig(epochs=1, batch_size=32, max_steps=steps))  # fmt: skip
    x.guarded("dense_ft", x.finetune_biencoder, "dense_ft", "hybrid", 3,
              BiEncoderTrainConfig(epochs=3, batch_size=64, max_steps=steps))  # fmt: skip
    x.hybrid("hybrid_ft", ["bm25", "dense_ft" if "dense_ft" in x.runs else "dense"])
    if "dense_ft_plain" in x.runs:
        x.hybrid("hybrid_ft_plain", ["bm25", "dense_ft_plain"])
    x.save()
    # cross-encoder variants, all reranking hybrid_ft: the full system first, then the baselines
    variants = [
        (
            "rerank",
            "hybrid_ft",
            15,
            50,
            CrossEncoderTrainConfig(epochs=4, batch_size=32, loss="listwise"),
        ),
        ("ce_naive", "bm25", 3, None, CrossEncoderTrainConfig(epochs=1, batch_size=16, loss="bce")),
        (
            "ce_bce",
            "hybrid_ft",
            7,
            30,
            CrossEncoderTrainConfig(epochs=3, batch_size=32, loss="bce"),
        ),
    ]
    depths = (5, 10) if args.quick else (20, 50, 100)
    for name, source, n_neg, sample_from, cfg in variants:
        cfg = cfg.model_copy(update={"max_steps": steps})
        model_dir = x.guarded(name, x.train_reranker, name, source, n_neg, sample_from, cfg)
        if model_dir is not None:
            x.guarded(name + "_eval", x.rerank, name, model_dir, "hybrid_ft", depths)
        x.save()
    # the cached (GradCache) loss with a large batch
    if not args.core_only:
        x.guarded("dense_ft_cached", x.finetune_biencoder, "dense_ft_cached", "hybrid", 3,
                  BiEncoderTrainConfig(epochs=3, batch_size=256, loss="cached_mnrl", mini_batch_size=64,
                                       lr=5e-5, max_steps=steps))  # fmt: skip
    x.save()
    x.log("done")


if __name__ == "__main__":
    main()
