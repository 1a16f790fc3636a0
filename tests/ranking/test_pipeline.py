"""The demo pipeline end to end through the CLI (tiny sizes), and a real SciFact slice."""

import json
import random

import pytest
from nlprec.core import cli


def test_demo_pipeline_through_the_cli(nlprec_env, tmp_path):
    summary = tmp_path / "summary.json"
    overrides = ["params.n_docs=40", "params.n_queries=36"]
    argv = ["run", "pipelines/ranking-demo.yaml", "--summary", str(summary)]
    repo_pipeline = cli.__file__.split("/packages/")[0] + "/pipelines/ranking-demo.yaml"
    argv[1] = repo_pipeline
    for item in overrides:
        argv += ["--set", item]
    assert cli.main(argv) in (0, None)
    result = json.loads(summary.read_text())
    for system in ("bm25", "dense", "hybrid", "dense_ft", "rerank"):
        for metric in ("ndcg@10", "mrr@10", "recall@100"):
            assert 0.0 <= result["metrics"][f"{system}.{metric}"] <= 1.0
    assert result["metrics"]["bm25.ndcg@10"] > 0.5  # the generated relevance is findable
    for step in ("data", "bm25", "dense", "train_reranker", "rerank"):
        assert result["steps"][step]["memory"]["peak_rss_mb"] > 0
    assert 0 <= result["metrics"]["rerank.ndcg@10.p_vs_first_stage"] <= 1


def test_scifact_slice_with_the_bundled_model(shared_data):
    from nlprec.ranking.bm25 import BM25Retriever
    from nlprec.ranking.data import load_beir
    from nlprec.ranking.dense import DenseConfig, DenseRetriever
    from nlprec.ranking.evaluate import evaluate_run

    ds = load_beir(shared_data / "beir" / "scifact")
    qrels = dict(sorted(ds.qrels["test"].items())[:150])  # 150 test claims and all their abstracts
    relevant = {d for docs in qrels.values() for d in docs}
    others = [d for d in ds.corpus if d["id"] not in relevant]
    corpus = [d for d in ds.corpus if d["id"] in relevant] + random.Random(0).sample(others, 100)
    queries = {q: t for q, t in ds.split_queries("test").items() if q in qrels}
    bm25 = BM25Retriever().index(corpus)
    dense = DenseRetriever(DenseConfig(max_seq_length=128)).build(corpus, progress=False)
    scores = {}
    for name, retriever in (("bm25", bm25), ("dense", dense)):
        hits = retriever.search(list(queries.values()), 100)
        scores[name] = evaluate_run(
            qrels, {q: dict(h) for q, h in zip(queries, hits, strict=True)}
        )["ndcg@10"]
    # on ~270 documents both first stages must find most relevant abstracts near the top
    assert scores["bm25"] > 0.7 and scores["dense"] > 0.7, scores


pytest.importorskip("faiss")
