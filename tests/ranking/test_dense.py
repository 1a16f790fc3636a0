"""DenseRetriever: FAISS kinds against exact search, add/delete, save/load, bad indexes."""

import json

import numpy as np
import pytest
from nlprec.ranking.data import DataError
from nlprec.ranking.dense import DenseConfig, DenseRetriever, IndexMismatchError
from nlprec.ranking.exact import exact_search
from nlprec.ranking.faiss_index import FaissConfig


def _docs(demo):
    return [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in demo["corpus"]]


def test_flat_index_agrees_with_exact_search(dense_retriever, doc_vectors):
    queries = doc_vectors[:5] + 0.01
    scores, ids = exact_search(queries, doc_vectors, k=5)
    hits = dense_retriever.search_vectors(queries, k=5)
    for row_ids, row_scores, row_hits in zip(ids, scores, hits, strict=True):
        assert [dense_retriever.entries[i][0] for i in row_ids] == [d for d, _ in row_hits]
        np.testing.assert_allclose(row_scores, [s for _, s in row_hits], rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfsq8"])
def test_approximate_kinds_find_the_exact_neighbours(demo, doc_vectors, kind):
    cfg = DenseConfig(faiss=FaissConfig(kind=kind, nlist=1, nprobe=1))
    retriever = DenseRetriever(cfg).build(_docs(demo), vectors=doc_vectors)
    hits = retriever.search_vectors(doc_vectors[:10], k=1)
    assert [h[0][0] for h in hits] == [d["_id"] for d in demo["corpus"][:10]]


def test_add_and_delete_without_rebuild(demo, doc_vectors):
    for kind in ("flat", "hnsw"):  # hnsw cannot remove: tombstones must hide the document
        retriever = DenseRetriever(DenseConfig(faiss=FaissConfig(kind=kind))).build(
            _docs(demo), vectors=doc_vectors
        )
        retriever.add(
            [{"id": "new", "title": "Glass observatory", "text": "A glass observatory in Oslo."}]
        )
        assert retriever.search(["glass observatory Oslo"], 1)[0][0][0] == "new"
        retriever.delete("new")
        assert "new" not in dict(retriever.search(["glass observatory Oslo"], 5)[0])
        with pytest.raises(KeyError):
            retriever.delete("new")
        with pytest.raises(DataError, match="already indexed"):
            retriever.add([{"id": "d0", "title": "", "text": "dup"}])


def test_save_load_round_trip_and_damaged_files(demo, doc_vectors, tmp_path):
    retriever = DenseRetriever(DenseConfig(faiss=FaissConfig(kind="hnsw"))).build(
        _docs(demo), vectors=doc_vectors
    )
    retriever.delete("d3")
    retriever.save(tmp_path / "idx")
    loaded = DenseRetriever.load(tmp_path / "idx")
    assert loaded.search_vectors(doc_vectors[:4], 3) == retriever.search_vectors(doc_vectors[:4], 3)
    assert "d3" not in {d for hits in loaded.search_vectors(doc_vectors[:4], 10) for d, _ in hits}

    with pytest.raises(IndexMismatchError, match="dimension"):
        loaded.search_vectors(np.zeros((1, 12), dtype=np.float32), 3)

    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    (tmp_path / "idx" / "meta.json").write_text(json.dumps(meta | {"fingerprint": "another-model"}))
    with pytest.raises(IndexMismatchError, match="another encoder"):
        DenseRetriever.load(tmp_path / "idx")

    (tmp_path / "idx" / "meta.json").write_text(json.dumps(meta))
    data = (tmp_path / "idx" / "index.faiss").read_bytes()
    (tmp_path / "idx" / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexMismatchError, match="truncated"):
        DenseRetriever.load(tmp_path / "idx")


def test_empty_corpus_is_a_clear_error():
    with pytest.raises(DataError, match="empty corpus"):
        DenseRetriever().build([])


def test_passages_maxp(demo):
    from nlprec.ranking.dense import PassageConfig

    docs = _docs(demo)[:5] + [
        {"id": "long", "title": "", "text": "filler words here. " * 40 + "A copper dome in Ghent."}
    ]
    cfg = DenseConfig(passages=PassageConfig(window=32, stride=16, aggregation="maxp"))
    retriever = DenseRetriever(cfg).build(docs, progress=False)
    assert sum(doc == "long" for doc, _ in retriever.entries) > 3
    hits = retriever.search(["copper dome in Ghent"], 3)[0]
    assert hits[0][0] == "long" and len({d for d, _ in hits}) == len(hits)
