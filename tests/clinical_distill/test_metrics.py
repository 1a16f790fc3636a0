"""Entity F1: seqeval agrees with the hand-counted reference; classification scores."""

import random

import pytest
from nlprec.clinical_distill.metrics import (
    classification_scores,
    entity_f1,
    entity_f1_reference,
    iob2_spans,
)


def test_spans_under_strict_iob2():
    assert iob2_spans(["B-D", "I-D", "O", "B-D", "B-D", "I-D"]) == {
        ("D", 0, 2),
        ("D", 3, 4),
        ("D", 4, 6),
    }
    assert iob2_spans(["O", "I-D", "I-D"]) == set()  # I without B starts nothing under strict IOB2


def test_known_value():
    gold = [["B-D", "I-D", "O", "B-D"]]
    pred = [["B-D", "I-D", "O", "O"]]  # 1 of 2 found, 1 of 1 right: F1 = 2/3
    assert entity_f1(gold, pred) == pytest.approx(2 / 3)
    assert entity_f1_reference(gold, pred) == pytest.approx(2 / 3)


def test_seqeval_matches_reference_on_random_tags():
    rng = random.Random(0)
    tags = ["O", "O", "B-Disease", "I-Disease"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in g] for g in gold]
    assert entity_f1(gold, pred) == pytest.approx(entity_f1_reference(gold, pred))


def test_classification_scores():
    scores = classification_scores(["a", "a", "b", "c"], ["a", "b", "b", "c"])
    assert scores["acc"] == pytest.approx(0.75)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
