"""BM25Retriever: ranking sanity, add/delete, exact scores around compaction, save/load."""

import json
import random
import threading

import pytest
from nlprec.ranking import bm25 as bm25_module
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


def _random_corpus(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    words = [f"term{i}" for i in range(200)]
    return [
        {"id": f"d{i}", "title": "", "text": " ".join(rng.choices(words, k=rng.randint(1, 30)))}
        for i in range(n)
    ]


def _queries(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices([f"term{i}" for i in range(200)], k=4)) for _ in range(n)]


def _scores(retriever: BM25Retriever, queries: list[str]) -> list[dict[str, float]]:
    return [dict(hits) for hits in retriever.search(queries, 10_000)]


def test_added_documents_score_as_a_full_index_and_compaction_makes_all_exact():
    corpus = _random_corpus(300)
    main, added = corpus[:240], corpus[240:]
    retriever = BM25Retriever(delta_limit=10_000).index(main)
    retriever.add(added[:20])
    retriever.add(added[20:])
    retriever.delete("d3")  # a main document
    retriever.delete("d250")  # an added one
    queries = _queries(40)
    # Before compaction: an added document scores as in a from-scratch index over main + delta
    # (deleted documents still counted); a main document as in the index of the last build.
    everything = _scores(BM25Retriever().index(corpus), queries)
    main_only = _scores(BM25Retriever().index(main), queries)
    for got, full, old in zip(_scores(retriever, queries), everything, main_only, strict=True):
        assert "d3" not in got and "d250" not in got
        expected = {
            d: (full[d] if int(d[1:]) >= 240 else old[d]) for d in full if d not in ("d3", "d250")
        }
        assert got.keys() == expected.keys()
        assert all(abs(got[d] - expected[d]) <= 1e-6 for d in got)
    retriever.compact()
    live = [d for d in corpus if d["id"] not in ("d3", "d250")]
    rebuilt = _scores(BM25Retriever().index(live), queries)
    for got, want in zip(_scores(retriever, queries), rebuilt, strict=True):
        assert got.keys() == want.keys()
        assert all(abs(got[d] - want[d]) <= 1e-6 for d in got)
    assert retriever.pending == 0


def test_background_compaction_keeps_what_is_written_while_it_builds(monkeypatch):
    corpus = _random_corpus(200)
    retriever = BM25Retriever(delta_limit=10).index(corpus[:150])
    building, release = threading.Event(), threading.Event()
    original = bm25_module.build_main_in_subprocess

    def slow_build(texts, config):
        built = original(texts, config)
        building.set()
        assert release.wait(30)
        return built

    monkeypatch.setattr(bm25_module, "build_main_in_subprocess", slow_build)
    retriever.add(corpus[150:160])  # reaches the limit: a rebuild starts in the background
    assert building.wait(60) and retriever.compacting
    queries = _queries(20)
    during = retriever.search(queries, 5)  # reads go on
    assert all(during)
    retriever.add(corpus[160:200])  # writes go on
    retriever.delete("d155")  # in the snapshot being built
    retriever.delete("d170")  # written during the build
    retriever.add([{"id": "d155", "title": "", "text": "term1 term2 fresh"}])  # replaced
    release.set()
    retriever.wait_for_compaction(30)
    assert not retriever.compacting and retriever.builds == 2
    assert retriever.n_live == 199 and retriever.search(["fresh"], 3)[0][0][0] == "d155"
    retriever.compact()
    live = [d for d in corpus if d["id"] not in ("d155", "d170")]
    live.append({"id": "d155", "title": "", "text": "term1 term2 fresh"})
    rebuilt = _scores(BM25Retriever().index(live), queries)
    for got, want in zip(_scores(retriever, queries), rebuilt, strict=True):
        assert got.keys() == want.keys()
        assert all(abs(got[d] - want[d]) <= 1e-6 for d in got)


def test_methods_with_a_non_occurrence_score_rebuild_on_add():
    corpus = _random_corpus(60)
    retriever = BM25Retriever(BM25Config(method="bm25+")).index(corpus[:50])
    retriever.add(corpus[50:])
    queries = _queries(10)
    assert _scores(retriever, queries) == _scores(
        BM25Retriever(BM25Config(method="bm25+")).index(corpus), queries
    )


def test_save_keeps_live_documents_only(tmp_path):
    corpus = _random_corpus(30)
    retriever = BM25Retriever().index(corpus[:20])
    retriever.add(corpus[20:])
    retriever.delete("d5")
    retriever.delete("d25")
    retriever.save(tmp_path)
    state = json.loads((tmp_path / "bm25.json").read_text())
    assert "d5" not in state["doc_ids"] and "d25" not in state["doc_ids"]
    loaded = BM25Retriever.load(tmp_path)
    live = [d for d in corpus if d["id"] not in ("d5", "d25")]
    queries = _queries(10)
    assert _scores(loaded, queries) == _scores(BM25Retriever().index(live), queries)


def test_a_build_in_a_subprocess_scores_as_one_in_process():
    texts = [d["text"] for d in _random_corpus(80)]
    config = BM25Config()
    (here, here_stats), (there, there_stats) = (
        bm25_module.build_main(texts, config),
        bm25_module.build_main_in_subprocess(texts, config),
    )
    assert there_stats == here_stats
    tokens = bm25_module.tokenize(_queries(10), config)
    for query in tokens:  # token ids may differ (bm25s' vocabulary order), scores may not
        assert (there.get_scores(query) == here.get_scores(query)).all()
