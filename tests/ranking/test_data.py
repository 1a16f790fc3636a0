"""BEIR and TREC files: round trips and clear errors on bad input."""

import gzip
import json

import pytest
from nlprec.ranking.data import (
    DataError,
    load_beir,
    read_corpus,
    read_trec_qrels,
    read_trec_run,
    write_trec_qrels,
    write_trec_run,
)
from nlprec.ranking.demo_data import generate_demo_corpus, write_beir_folder


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_trec_run_and_qrels_round_trip(tmp_path):
    run = {"q1": {"d1": 2.5, "d2": 1.0}, "q2": {"d3": 0.5}}
    write_trec_run(run, tmp_path / "run.trec", tag="x")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 2.500000 x" and lines[1].split()[3] == "2"
    assert read_trec_run(tmp_path / "run.trec") == run
    qrels = {"q1": {"d1": 1, "d2": 0}}
    write_trec_qrels(qrels, tmp_path / "qrels.txt")
    assert read_trec_qrels(tmp_path / "qrels.txt") == qrels


def test_beir_folder_with_gzipped_corpus_and_no_train_split(tmp_path):
    data = generate_demo_corpus(20, 9, seed=1)
    data["qrels"].pop("train")
    folder = write_beir_folder(data, tmp_path / "beir")
    corpus = (folder / "corpus.jsonl").read_bytes()
    (folder / "corpus.jsonl").unlink()
    (folder / "corpus.jsonl.gz").write_bytes(gzip.compress(corpus))
    ds = load_beir(folder)
    assert len(ds.corpus) == 20 and set(ds.qrels) == {"test"}
    assert set(ds.split_queries("test")) == set(data["qrels"]["test"])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "empty"),
        ([{"_id": "1", "text": "a"}, {"_id": "1", "text": "b"}], "duplicate document id '1'"),
        ([{"title": "no id", "text": "b"}], "without an id"),
    ],
)
def test_bad_corpus_is_a_clear_error(tmp_path, rows, message):
    _write_jsonl(tmp_path / "corpus.jsonl", rows)
    with pytest.raises(DataError, match=message):
        read_corpus(tmp_path / "corpus.jsonl")


def test_malformed_json_names_the_line(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "ok"}\n{"_id": \n')
    with pytest.raises(DataError, match="corpus.jsonl:2"):
        read_corpus(tmp_path / "corpus.jsonl")


def test_missing_folder_and_missing_qrels(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_beir(tmp_path / "nope")
    _write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "1", "text": "a"}])
    _write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q", "text": "a"}])
    with pytest.raises(DataError, match="qrels"):
        load_beir(tmp_path)
