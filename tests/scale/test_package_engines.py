"""Every package batch command that runs on nlprec.core.batch gives the same rows on both engines:
corpus encoding and search (ranking), NER tagging (clinical-distill), document classification
(clinical-longdoc), recommendations (sessionrec) and belief tables (beliefs). Models are tiny and random (or the bundled MiniLM):
the point is the engine, not the model. Floats are compared with a tolerance because Ray actors run
with their own thread count, which may change the order of floating-point sums."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from nlprec.core.batch import run_batch

pytestmark = pytest.mark.slow
TEXTS = [
    "The patient denies chest pain and reports mild fever",
    "Aspirin was given for the headache",
    "No history of diabetes",
    "Follow-up in two weeks with cardiology",
    "Blood pressure was normal on admission",
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def assert_rows_close(left: object, right: object, where: str = "rows") -> None:
    """Equal structure and values; floats equal to 1e-5 relative (1e-6 absolute)."""
    if isinstance(left, float) or isinstance(right, float):
        assert math.isclose(left, right, rel_tol=1e-5, abs_tol=1e-6), f"{where}: {left} != {right}"
    elif isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys(), f"{where}: keys differ"
        for key in left:
            assert_rows_close(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, list):
        assert isinstance(right, list) and len(left) == len(right), f"{where}: lengths differ"
        for i, (a, b) in enumerate(zip(left, right)):
            assert_rows_close(a, b, f"{where}[{i}]")
    else:
        assert left == right, f"{where}: {left!r} != {right!r}"


# ------------------------------------------------------------------ one case per package command


def ranking_encode(tmp_path: Path) -> tuple[type, dict, Path]:
    from nlprec.ranking.cli import DocumentEncoder
    from nlprec.ranking.demo_data import generate_demo_corpus

    corpus = generate_demo_corpus(n_docs=24, n_queries=6, seed=1)["corpus"]
    return (
        DocumentEncoder,
        {"model": "minilm", "batch_size": 8},
        write_rows(tmp_path / "corpus.jsonl", corpus),
    )


def ranking_search(tmp_path: Path) -> tuple[type, dict, Path]:
    from nlprec.ranking.cli import QuerySearcher
    from nlprec.ranking.cli import main as ranking_main
    from nlprec.ranking.demo_data import generate_demo_corpus

    demo = generate_demo_corpus(n_docs=24, n_queries=6, seed=1)
    corpus = write_rows(tmp_path / "corpus.jsonl", demo["corpus"])
    assert (
        ranking_main(
            ["index", "--corpus", str(corpus), "--out", str(tmp_path / "index"), "--index", "flat"]
        )
        == 0
    )
    queries = [{"_id": qid, "text": text} for qid, text in demo["queries"].items()]
    kwargs = {"index": str(tmp_path / "index"), "k": 5, "mode": "hybrid"}
    return QuerySearcher, kwargs, write_rows(tmp_path / "queries.jsonl", queries)


def distill_tag(tmp_path: Path) -> tuple[type, dict, Path]:
    import torch
    from nlprec.clinical_distill.batch import TokenTagger
    from nlprec.clinical_distill.models import load_tokenizer
    from transformers import BertConfig, BertForTokenClassification

    tokenizer = load_tokenizer("minilm")
    labels = ["O", "B-Disease", "I-Disease"]
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, num_labels=3, id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )  # fmt: skip
    torch.manual_seed(0)
    BertForTokenClassification(config).save_pretrained(tmp_path / "tagger")
    tokenizer.save_pretrained(tmp_path / "tagger")
    rows = [{"id": i, "text": text} for i, text in enumerate(TEXTS)]
    return (
        TokenTagger,
        {"model": str(tmp_path / "tagger"), "max_len": 64},
        write_rows(tmp_path / "notes.jsonl", rows),
    )


def longdoc_classify(tmp_path: Path) -> tuple[type, dict, Path]:
    import torch
    from nlprec.clinical_longdoc.batch import ClassifyPredictor
    from nlprec.clinical_longdoc.classify import DocumentClassifierModel
    from nlprec.clinical_longdoc.encoder import LongEncoder
    from nlprec.core.models import resolve
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(resolve("minilm")))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    model = DocumentClassifierModel(LongEncoder(BertModel(config).eval()), tokenizer, ["cardio", "neuro", "other"],
                                    strategy="chunk_max")  # fmt: skip
    model.save(tmp_path / "classifier")
    rows = [{"id": i, "text": " ".join(TEXTS[i:] + TEXTS[:i])} for i in range(len(TEXTS))] + [
        {"id": 99, "text": ""}
    ]
    return (
        ClassifyPredictor,
        {"model_dir": str(tmp_path / "classifier")},
        write_rows(tmp_path / "docs.jsonl", rows),
    )


def sessionrec_recommend(tmp_path: Path) -> tuple[type, dict, Path]:
    import numpy as np
    from nlprec.sessionrec.batch import SessionRecPredictor
    from nlprec.sessionrec.data import SessionData, UserSessions
    from nlprec.sessionrec.online import OnlineRecommender

    items = [f"i{j}" for j in range(8)]
    users = [
        UserSessions("alice", [np.array([0, 1]), np.array([1, 2])], np.array([0.0, 7200.0])),
        UserSessions(
            "bob", [np.array([3]), np.array([4, 5]), np.array([3])], np.array([0.0, 3600.0, 9000.0])
        ),
    ]
    OnlineRecommender.from_sessions(SessionData(items, users)).save(tmp_path / "recommender")
    rows = [
        {"user_id": "alice", "history": ["i0", "i1", "i2"], "now": 8000.0},
        {"user_id": "bob", "history": ["i3", "i4", "i5", "i3"], "now": 10000.0},
        {"user_id": "carol", "history": ["i6"], "now": 50.0},
    ]
    kwargs = {"model": str(tmp_path / "recommender"), "k": 4}
    return SessionRecPredictor, kwargs, write_rows(tmp_path / "users.jsonl", rows)


def beliefs_predict(tmp_path: Path) -> tuple[type, dict, Path]:
    import torch
    from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
    from nlprec.beliefs.predict import BeliefPredictor
    from nlprec.core.models import resolve
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(resolve("minilm")))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    model = BreakpointModel(BreakpointConfig(encoder=str(tmp_path / "encoder"), proj_dim=16))
    model.save(tmp_path / "beliefs")
    rows = [
        {"story_id": "a", "story": "Mary went to the kitchen. John went to the garden.",
         "propositions": ["Mary is in the kitchen", "John is in the kitchen"]},
        {"story_id": "b", "sentences": ["Sandra moved to the office."],
         "propositions": ["Sandra is in the office"]},
        {"story_id": "c", "story": "Daniel got the apple. Daniel went to the hallway. Mary left.",
         "propositions": ["Daniel has the apple", "the apple is in the hallway"]},
    ]  # fmt: skip
    kwargs = {"model": str(tmp_path / "beliefs"), "device": "cpu"}
    return BeliefPredictor, kwargs, write_rows(tmp_path / "stories.jsonl", rows)


CASES: dict[str, Callable[[Path], tuple[type, dict, Path]]] = {
    "ranking-encode": ranking_encode,
    "ranking-search": ranking_search,
    "distill-tag": distill_tag,
    "longdoc-classify": longdoc_classify,
    "sessionrec-recommend": sessionrec_recommend,
    "beliefs-predict": beliefs_predict,
}


CASE_MARKS: dict[str, list] = {}


@pytest.mark.parametrize(
    "case", [pytest.param(name, marks=CASE_MARKS.get(name, [])) for name in CASES]
)
def test_local_and_ray_engines_agree(case, tmp_path, ray_local):
    predictor_cls, kwargs, source = CASES[case](tmp_path)
    local, ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run_batch(predictor_cls, kwargs, source, local, batch_size=4, progress=False)
    run_batch(predictor_cls, kwargs, source, ray, engine="ray", batch_size=4, progress=False)
    local_rows = [json.loads(line) for line in local.read_text().splitlines()]
    ray_rows = [json.loads(line) for line in ray.read_text().splitlines()]
    assert len(local_rows) == sum(1 for line in source.read_text().splitlines() if line.strip()) > 0
    assert_rows_close(ray_rows, local_rows)
