"""Segment strategies, aggregation (fast vs reference), token-budget batching, metrics."""

from __future__ import annotations

import logging
import random

import pytest
import torch
from nlprec.clinical_longdoc.metrics import exact_match, qa_scores, token_f1
from nlprec.clinical_longdoc.segments import (
    aggregate_segments,
    aggregate_segments_reference,
    chunks,
    head_tail,
    make_segments,
    tokenize_bodies,
)
from nlprec.clinical_longdoc.training import group_by_tokens

CLS, SEP = 101, 102


def test_head_tail_keeps_both_ends():
    body = list(range(1000))
    kept = head_tail(body, budget=510)
    assert len(kept) == 510
    assert kept[:128] == list(range(128)) and kept[128:] == list(range(1000 - 382, 1000))
    assert head_tail(list(range(10)), budget=510) == list(range(10))


def test_chunks_cover_the_body_exactly():
    body = list(range(1100))
    pieces = chunks(body, 510)
    assert [len(p) for p in pieces] == [510, 510, 80]
    assert sum(pieces, []) == body


@pytest.mark.parametrize("strategy", ["long", "head", "head_tail", "chunk_mean"])
def test_segments_fit_the_window(strategy):
    bodies = [list(range(5, 5 + n)) for n in (3, 300, 1000)]
    for doc in make_segments(bodies, strategy, 128, CLS, SEP):
        for segment in doc:
            assert len(segment) <= 128 and segment[0] == CLS and segment[-1] == SEP


def test_truncation_is_logged_not_silent(caplog):
    with caplog.at_level(logging.WARNING):
        make_segments([list(range(1000)), list(range(10))], "head", 512, CLS, SEP)
    assert "truncated 1 of 2 documents to 512 tokens" in caplog.text


def test_empty_documents_are_refused_with_positions(tokenizer):
    with pytest.raises(ValueError, match=r"2 empty documents \(positions 1, 3\)"):
        tokenize_bodies(tokenizer, ["a note", "", "another", "   "])


@pytest.mark.parametrize("how", ["mean", "max"])
def test_aggregate_matches_reference(how):
    torch.manual_seed(0)
    logits = torch.randn(9, 4)
    doc_index = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4])
    fast = aggregate_segments(logits, doc_index, 5, how)
    assert torch.allclose(fast, aggregate_segments_reference(logits, doc_index, 5, how))


def test_group_by_tokens_respects_the_budget():
    rng = random.Random(0)
    widths = [rng.randint(10, 500) for _ in range(200)]
    rows = [rng.randint(1, 3) for _ in range(200)]
    batches = group_by_tokens(widths, rows, max_tokens=2048, max_batch=8)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for batch in batches:
        cost = sum(rows[i] for i in batch) * max(widths[i] for i in batch)
        assert len(batch) == 1 or (cost <= 2048 and len(batch) <= 8)


def test_squad_style_scores():
    assert exact_match("The Mother-to-child transmission.", "mother to child transmission") == 0.0
    assert exact_match("the MTCT", "MTCT") == 1.0
    assert token_f1("main cause of infection", "the main cause") == pytest.approx(
        2 * (2 / 4) * (2 / 2) / (2 / 4 + 1)
    )
    assert qa_scores(["a b", "x"], ["a b", "y"]) == {"em": 0.5, "f1": 0.5, "n": 2}
