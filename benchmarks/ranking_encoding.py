"""Corpus encoding throughput, side by side in one process: a bare SentenceTransformer.encode and
nlprec's DenseRetriever.encode_documents on each backend (PyTorch float32 and int8, ONNX Runtime
float32 and int8), same model, batch size, max length and thread count; then each path's
nDCG@10 on a SciFact slice.

Rounds alternate the paths (A B C D E, A B C D E, ...) so a busy machine slows them alike; the
table gives the median docs/s and the median of the per-round ratios to bare encode (each ratio
compares runs seconds apart). The nDCG slice is every test-relevant abstract plus random others,
all test queries.

    python benchmarks/ranking_encoding.py [--docs 64] [--batch-size 32] [--repeats 4] [--slice 100]
        [--queries N] [--dry]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import time

import torch
from nlprec.core.bench import machine_description, record_section
from nlprec.ranking.data import document_text, load_beir
from nlprec.ranking.dense import DenseConfig, DenseRetriever
from nlprec.ranking.encoder import load_encoder
from nlprec.ranking.evaluate import evaluate_run

BARE = "bare SentenceTransformer.encode (PyTorch fp32)"
PATHS = {  # label -> DenseConfig fields
    "nlprec DenseRetriever, PyTorch fp32": {},
    "nlprec DenseRetriever, PyTorch int8 (torch dynamic quantisation)": {"int8": True},
    "nlprec DenseRetriever, ONNX Runtime fp32": {"backend": "onnx"},
    "nlprec DenseRetriever, ONNX Runtime int8 (per-channel dynamic)": {"backend": "onnx", "int8": True},
    "nlprec DenseRetriever, ONNX Runtime int8, tanh GELU": {"backend": "onnx", "int8": True, "onnx_gelu": "tanh"},
}  # fmt: skip


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def slice_ndcg(ds, retriever: DenseRetriever, n_others: int, n_queries: int | None) -> float:
    qrels = dict(sorted(ds.qrels["test"].items())[:n_queries])
    relevant = {d for docs in qrels.values() for d in docs}
    others = [d for d in ds.corpus if d["id"] not in relevant]
    corpus = [d for d in ds.corpus if d["id"] in relevant] + random.Random(0).sample(
        others, n_others
    )
    queries = {q: t for q, t in ds.split_queries("test").items() if q in qrels}
    retriever.build(corpus, progress=False)
    hits = retriever.search(list(queries.values()), 100)
    return evaluate_run(qrels, {q: dict(h) for q, h in zip(queries, hits, strict=True)})["ndcg@10"]


def encoding_arguments(repeats: int) -> argparse.ArgumentParser:
    """The workload options this benchmark shares with ranking_encoding_profile.py."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data",
        default=os.path.join(os.environ.get("NLPREC_DATA", "../shared/data"), "beir/scifact"),
    )
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--dry", action="store_true", help="print only, RESULTS.md untouched")
    return parser


def main() -> None:
    parser = encoding_arguments(repeats=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--slice", type=int, default=100, help="random non-relevant documents in the nDCG slice"
    )
    parser.add_argument("--queries", type=int, default=None, help="first N test queries (all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_beir(args.data)
    texts = [document_text(d) for d in ds.corpus[: args.docs]]
    bare = load_encoder("minilm", device="cpu")
    retrievers = {
        label: DenseRetriever(DenseConfig(batch_size=args.batch_size, device="cpu",
                                          threads=args.threads, **fields))
        for label, fields in PATHS.items()
    }  # fmt: skip
    runs = {BARE: lambda: bare.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)}
    for label, retriever in retrievers.items():
        runs[label] = lambda r=retriever: r.encode_documents(texts, progress=False)
    for fn in runs.values():  # warm-up: model loading, ONNX export (cached), first allocations
        fn()
    seconds = {name: [] for name in runs}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, fn in runs.items():
            seconds[name].append(timed(fn))
        load.append(os.getloadavg()[0])
    ratios = {
        name: statistics.median(b / s for b, s in zip(seconds[BARE], secs, strict=True))
        for name, secs in seconds.items()
    }
    ndcg = {label: slice_ndcg(ds, r, args.slice, args.queries) for label, r in retrievers.items()}
    fp32 = ndcg["nlprec DenseRetriever, PyTorch fp32"]
    rows = [
        f"| {BARE} | {len(texts) / statistics.median(seconds[BARE]):.1f} | 1.00x | {fp32:.4f} | - |"
    ]
    for label in PATHS:
        speed = len(texts) / statistics.median(seconds[label])
        rows.append(
            f"| {label} | {speed:.1f} | {ratios[label]:.2f}x | {ndcg[label]:.4f} | {ndcg[label] - fp32:+.4f} |"
        )
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    table = "\n".join([
        f"{len(texts)} SciFact abstracts, batch {args.batch_size}, max length {bare.max_seq_length}, "
        f"{args.threads} threads (torch and ONNX Runtime), {args.repeats} alternating rounds; "
        f"{machine_description()}. Load average (1 min) during the rounds: "
        f"{min(load):.1f}-{max(load):.1f} (`uptime` at the end: {uptime}).",
        "",
        "| path | docs/s (median) | vs bare (median of per-round ratios) | nDCG@10 slice | vs fp32 |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"nDCG@10 slice: SciFact test-relevant abstracts + {args.slice} others, "
        f"{args.queries or 'all 300'} test queries, Flat index (bare encode gives the PyTorch fp32 vectors: tested to 1e-5).",
    ])  # fmt: skip
    print(table)
    if not args.dry:
        record_section("ranking-encoding", table)


if __name__ == "__main__":
    main()
