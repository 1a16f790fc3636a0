"""Interpolating cross-encoder and first-stage scores, and keeping the tail below the reranked top."""

import pytest
from nlprec.ranking.rerank import interpolate, rerank_at_depth, rerank_with_tail


def test_interpolate_by_hand():
    ce = {"q": {"a": 0.0, "b": 10.0, "c": 5.0}}  # minmax -> a 0, b 1, c 0.5
    first = {"q": {"a": 3.0, "b": 1.0, "c": 2.0}}  # minmax -> a 1, b 0, c 0.5
    blended = interpolate(ce, first, alpha=0.25)["q"]
    assert blended == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.5})


def test_rerank_at_depth_reorders_only_the_top():
    first = {"q": {"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0}}
    ce = {"q": {"a": 0.1, "b": 0.9, "c": 5.0}}  # scored deeper than used: depth 2 ignores c
    ranked = rerank_at_depth(ce, first, depth=2, alpha=1.0)["q"]
    assert sorted(ranked, key=ranked.get, reverse=True) == ["b", "a", "c", "d"]
    assert (
        rerank_at_depth(ce, first, depth=2, alpha=0.0)["q"]["a"] > ranked["b"] - 1
    )  # alpha 0 keeps order
    order0 = rerank_at_depth(ce, first, depth=2, alpha=0.0)["q"]
    assert sorted(order0, key=order0.get, reverse=True) == ["a", "b", "c", "d"]


def test_queries_without_reranked_documents_keep_the_first_stage():
    first = {"q1": {"a": 1.0}, "q2": {"x": 2.0, "y": 1.0}}
    assert rerank_with_tail({"q1": {"a": 0.3}}, first)["q2"] == first["q2"]
