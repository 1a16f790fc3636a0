"""BM25 queries per second: nlprec's BM25Retriever (bm25s) against rank-bm25, same corpus and queries.

Both tokenise the same way (bm25s' tokenizer: lower-case, English stopwords, Snowball stemmer), so
the comparison is the scoring engine. nDCG@10 of both is reported to show they rank alike.

    python benchmarks/ranking_bm25.py [--data DIR] [--queries N]
"""

from __future__ import annotations

import argparse
import os
import time

import bm25s
import numpy as np
from nlprec.core.bench import machine_description, record_section
from nlprec.ranking.bm25 import BM25Retriever
from nlprec.ranking.data import document_text, load_beir
from nlprec.ranking.evaluate import evaluate_run
from rank_bm25 import BM25Okapi


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data",
        default=os.path.join(os.environ.get("NLPREC_DATA", "../shared/data"), "beir/scifact"),
    )
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    ds = load_beir(args.data)
    queries = ds.split_queries("test")
    qids = list(queries)[: args.queries]
    texts = [queries[q] for q in qids]
    qrels = {q: ds.qrels["test"][q] for q in qids}

    ours = BM25Retriever().index(ds.corpus)
    start = time.perf_counter()
    hits = ours.search(texts, 10)
    ours_s = time.perf_counter() - start
    ours_ndcg = evaluate_run(qrels, {q: dict(h) for q, h in zip(qids, hits, strict=True)})[
        "ndcg@10"
    ]

    tokenize = ours._tokenize
    plain = BM25Okapi(tokenize([document_text(d) for d in ds.corpus]), k1=0.9, b=0.4)
    ids = [d["id"] for d in ds.corpus]
    start = time.perf_counter()
    run = {}
    for qid, tokens in zip(qids, tokenize(texts), strict=True):
        scores = plain.get_scores(tokens)
        top = np.argsort(-scores)[:10]
        run[qid] = {ids[i]: float(scores[i]) for i in top}
    plain_s = time.perf_counter() - start
    plain_ndcg = evaluate_run(qrels, run)["ndcg@10"]

    table = "\n".join([
        f"SciFact corpus ({len(ds.corpus)} docs), {len(qids)} test queries, top-10, one process; {machine_description()}"
        " (shared machine: other jobs were running).",
        "",
        "| engine | queries/s | nDCG@10 |",
        "|---|---|---|",
        f"| nlprec BM25Retriever (bm25s {bm25s.__version__}, Lucene BM25 k1=0.9 b=0.4) | {len(qids) / ours_s:.0f} | {ours_ndcg:.4f} |",
        f"| rank-bm25 BM25Okapi (k1=0.9 b=0.4) | {len(qids) / plain_s:.0f} | {plain_ndcg:.4f} |",
        "",
        f"Speed-up: {plain_s / ours_s:.1f}x.",
    ])  # fmt: skip
    print(table)
    record_section("ranking-bm25", table)


if __name__ == "__main__":
    main()
