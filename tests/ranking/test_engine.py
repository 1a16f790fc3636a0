"""SearchEngine: the online API the service uses."""

import pytest
from nlprec.ranking.data import DataError
from nlprec.ranking.dense import DenseConfig, DenseRetriever
from nlprec.ranking.engine import EngineSettings, Hit, SearchEngine
from nlprec.ranking.rerank import NoRerankerError


class FakeReranker:
    """Scores by word overlap: enough to check how the engine blends and orders."""

    config = None
    fingerprint = "fake"

    def score(self, query, documents):
        words = set(query.lower().split())
        return [float(len(words & set(d.lower().split()))) for d in documents]


@pytest.fixture()
def engine(demo, doc_vectors):
    docs = [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in demo["corpus"]]
    dense = DenseRetriever(DenseConfig()).build(docs, vectors=doc_vectors)
    return SearchEngine.build(docs, dense)


def test_search_modes_return_hits(engine, demo):
    queries = list(demo["queries"].values())[:3]
    for mode in ("bm25", "dense", "hybrid"):
        results = engine.search(queries, k=5, mode=mode)
        assert len(results) == 3 and all(isinstance(h, Hit) for hits in results for h in hits)
        assert all(len(hits) <= 5 for hits in results)
        assert all(hits == sorted(hits, key=lambda h: -h.score) for hits in results)
    vectors = engine.encode_queries(queries)
    assert vectors.shape == (3, 384)
    assert engine.search_dense_vectors(vectors, 5) == engine.search(queries, 5, "dense")
    with pytest.raises(ValueError, match="mode"):
        engine.search(queries, 5, mode="sparse")


def test_rerank_without_reranker_is_clear(engine):
    assert not engine.has_reranker
    with pytest.raises(NoRerankerError):
        engine.rerank("q", ["a"])
    with pytest.raises(NoRerankerError):
        engine.search(["q"], 3, "bm25", rerank=True)


def test_rerank_orders_the_top_by_the_reranker(engine, demo):
    engine.reranker = FakeReranker()
    engine.settings = EngineSettings(rerank_depth=10, rerank_alpha=1.0)
    query = list(demo["queries"].values())[0]
    hits = engine.search([query], 10, "bm25", rerank=True)[0]
    overlaps = FakeReranker().score(query, [engine._text(h.doc_id) for h in hits])
    assert overlaps == sorted(overlaps, reverse=True)


def test_documents_add_delete_save_load(engine, tmp_path):
    assert engine.document("d0")["id"] == "d0"
    engine.add_documents(
        [{"id": "new", "title": "Velvet planetarium", "text": "A velvet planetarium in Graz."}]
    )
    assert engine.search(["velvet planetarium"], 1, "hybrid")[0][0].doc_id == "new"
    with pytest.raises(DataError, match="already"):
        engine.add_documents([{"id": "new", "text": "again"}])
    engine.delete_document("d1")
    with pytest.raises(KeyError):
        engine.document("d1")
    target = tmp_path / "engine"
    engine.save(target)
    engine.save(target)  # overwriting goes through a temporary folder and a rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]
    loaded = SearchEngine.load(target)
    engine.bm25.compact()  # a loaded engine's BM25 is one index over the live documents
    queries = ["velvet planetarium", "granite lighthouse"]
    for mode in ("bm25", "dense", "hybrid"):
        assert loaded.search(queries, 5, mode) == engine.search(queries, 5, mode)
    assert "d1" not in {h.doc_id for hits in loaded.search(queries, 40, "hybrid") for h in hits}
    assert loaded.model_versions["encoder"].startswith("minilm@")


def test_snapshot_writes_the_state_it_copied(engine, tmp_path):
    write = engine.snapshot()
    engine.add_documents([{"id": "later", "title": "Later", "text": "Written after the copy."}])
    engine.delete_document("d2")
    write(tmp_path / "copy")
    loaded = SearchEngine.load(tmp_path / "copy")
    assert "later" not in loaded.documents and "d2" in loaded.documents
    assert loaded.dense.live_doc_ids() == set(loaded.documents)
    assert loaded.bm25.n_live == len(loaded.documents)
    assert "later" not in {h.doc_id for h in loaded.search(["written after copy"], 40, "bm25")[0]}
    assert "later" in {h.doc_id for h in engine.search(["written after copy"], 40, "bm25")[0]}


def test_load_rejects_non_engine_folders(tmp_path):
    with pytest.raises(DataError, match="not a SearchEngine folder"):
        SearchEngine.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt"):
        SearchEngine.load(tmp_path)
