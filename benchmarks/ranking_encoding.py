"""Corpus encoding throughput: nlprec's DenseRetriever path against a bare SentenceTransformer.encode
(same model, batch size and max length), and the optional int8 path with its nDCG@10 cost.

Runs alternate (A B A B ...) so a busy machine slows both alike; the median is reported.
nDCG@10 of fp32 vs int8 is measured on a SciFact slice: every test-relevant abstract plus random
others, all test queries.

    python benchmarks/ranking_encoding.py [--docs 256] [--batch-size 32] [--repeats 3] [--slice 300]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch
from nlprec.core.bench import machine_description, record_section
from nlprec.ranking.data import document_text, load_beir
from nlprec.ranking.dense import DenseConfig, DenseRetriever
from nlprec.ranking.encoder import load_encoder
from nlprec.ranking.evaluate import evaluate_run


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def slice_ndcg(ds, int8: bool, n_others: int) -> float:
    qrels = ds.qrels["test"]
    relevant = {d for docs in qrels.values() for d in docs}
    others = [d for d in ds.corpus if d["id"] not in relevant]
    corpus = [d for d in ds.corpus if d["id"] in relevant] + random.Random(0).sample(
        others, n_others
    )
    queries = ds.split_queries("test")
    retriever = DenseRetriever(DenseConfig(int8=int8, device="cpu")).build(corpus, progress=False)
    hits = retriever.search(list(queries.values()), 100)
    return evaluate_run(qrels, {q: dict(h) for q, h in zip(queries, hits, strict=True)})["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data",
        default=os.path.join(os.environ.get("NLPREC_DATA", "../shared/data"), "beir/scifact"),
    )
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--slice", type=int, default=300, help="random non-relevant documents in the nDCG slice"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    ds = load_beir(args.data)
    docs = ds.corpus[: args.docs]
    texts = [document_text(d) for d in docs]
    bare = load_encoder("minilm", device="cpu")
    ours = DenseRetriever(DenseConfig(batch_size=args.batch_size, device="cpu"))
    quantised = DenseRetriever(DenseConfig(batch_size=args.batch_size, device="cpu", int8=True))
    runs = {
        "bare SentenceTransformer.encode": lambda: bare.encode(
            texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False
        ),
        "nlprec DenseRetriever.encode_documents": lambda: ours.encode_documents(
            texts, progress=False
        ),
        "nlprec int8 (dynamic quantisation)": lambda: quantised.encode_documents(
            texts, progress=False
        ),
    }
    for fn in runs.values():  # warm-up: model loading, first allocation
        fn()
    seconds = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            seconds[name].append(timed(fn))
    median = {name: statistics.median(s) for name, s in seconds.items()}
    base = median["bare SentenceTransformer.encode"]
    ndcg_fp32, ndcg_int8 = slice_ndcg(ds, False, args.slice), slice_ndcg(ds, True, args.slice)
    rows = [f"| {name} | {len(texts) / s:.1f} | {base / s:.2f}x |" for name, s in median.items()]
    table = "\n".join([
        f"{len(texts)} SciFact abstracts, batch {args.batch_size}, max length {bare.max_seq_length}, torch threads 2, "
        f"median of {args.repeats} alternating runs; {machine_description()} (shared machine: other jobs were running).",
        "",
        "| path | docs/s | vs bare |",
        "|---|---|---|",
        *rows,
        "",
        f"nDCG@10 on a SciFact slice (test-relevant abstracts + {args.slice} others, all test queries): "
        f"fp32 {ndcg_fp32:.4f}, int8 {ndcg_int8:.4f} (loss {ndcg_fp32 - ndcg_int8:+.4f}).",
    ])  # fmt: skip
    print(table)
    record_section("ranking-encoding", table)


if __name__ == "__main__":
    main()
