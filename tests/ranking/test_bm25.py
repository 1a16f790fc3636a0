"""BM25Retriever: ranking sanity, add/delete, save/load."""

import json

import pytest
from nlprec.ranking.bm25 import BM25Config, BM25Retriever
from nlprec.ranking.data import DataError

DOCS = [
    {"id": "a", "title": "Granite lighthouse", "text": "A granite lighthouse in Bergen."},
    {"id": "b", "title": "Brick mill", "text": "An old brick mill in Leeds with a clock tower."},
    {"id": "c", "title": "Glass museum", "text": "The museum of glass in Lyon."},
]


def test_search_ranks_matching_document_first_and_stems():
    retriever = BM25Retriever().index(DOCS)
    assert (
        retriever.search(["lighthouses of granite"], 2)[0][0][0] == "a"
    )  # stemming: lighthouses -> lighthous
    assert retriever.search(["zzzz"], 3) == [[]]  # no shared term -> nothing, not random documents


def test_add_delete_save_load(tmp_path):
    retriever = BM25Retriever(BM25Config(k1=1.2, b=0.75)).index(DOCS)
    retriever.add([{"id": "d", "title": "Copper dome", "text": "A copper dome theatre."}])
    assert retriever.search(["copper dome"], 1)[0][0][0] == "d"
    retriever.delete("d")
    assert retriever.search(["copper dome"], 3) == [[]]
    with pytest.raises(DataError, match="already indexed"):
        retriever.add([{"id": "a", "title": "", "text": "x"}])
    retriever.save(tmp_path)
    loaded = BM25Retriever.load(tmp_path)
    assert loaded.config.k1 == 1.2
    assert loaded.search(["brick mill", "copper dome"], 3) == retriever.search(
        ["brick mill", "copper dome"], 3
    )
    (tmp_path / "texts.json").write_text(json.dumps(["only one"]))
    with pytest.raises(DataError, match="truncated"):
        BM25Retriever.load(tmp_path)


def test_empty_corpus():
    with pytest.raises(DataError, match="empty corpus"):
        BM25Retriever().index([])
