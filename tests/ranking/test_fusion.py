"""Fusion against hand-computed values."""

import pytest
from nlprec.ranking.fusion import (
    fuse,
    linear_fuse,
    minmax_normalise,
    rrf_fuse,
    tune_fusion_weights,
    weight_grid,
)


def test_rrf_matches_hand_computed_scores():
    a = {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}  # ranks d1=1, d2=2, d3=3
    b = {"q": {"d3": 0.9, "d1": 0.5}}  # ranks d3=1, d1=2
    fused = rrf_fuse([a, b], k=60)["q"]
    assert fused["d1"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["d2"] == pytest.approx(1 / 62)
    assert fused["d3"] == pytest.approx(1 / 63 + 1 / 61)


def test_weighted_rrf_scales_each_system():
    a = {"q": {"d1": 1.0}}
    b = {"q": {"d2": 1.0}}
    fused = rrf_fuse([a, b], weights=[0.25, 0.75], k=60)["q"]
    assert fused == {"d1": pytest.approx(0.25 / 61), "d2": pytest.approx(0.75 / 61)}


def test_minmax_and_linear_fusion():
    assert minmax_normalise({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert minmax_normalise({"a": 5.0, "b": 5.0}) == {"a": 1.0, "b": 1.0}
    a = {"q": {"d1": 10.0, "d2": 0.0}}
    b = {"q": {"d2": 1.0, "d3": 0.5}}
    fused = linear_fuse([a, b], [0.3, 0.7])["q"]
    assert fused == {"d1": pytest.approx(0.3), "d2": pytest.approx(0.7), "d3": pytest.approx(0.0)}


def test_fuse_keeps_top_k():
    a = {"q": {f"d{i}": float(i) for i in range(10)}}
    assert list(fuse([a, a], "rrf", [0.5, 0.5], k=3)["q"]) == ["d9", "d8", "d7"]


def test_weight_grid_is_on_the_simplex():
    grid = weight_grid(2, 0.25)
    assert grid == [(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25), (1.0, 0.0)]
    assert all(abs(sum(w) - 1) < 1e-9 for w in weight_grid(3, 0.1))


def test_tuning_picks_the_system_that_is_right():
    qrels = {"q1": {"good": 1}, "q2": {"good2": 1}}
    right = {"q1": {"good": 1.0, "bad": 0.5}, "q2": {"good2": 1.0, "bad": 0.5}}
    wrong = {"q1": {"bad": 1.0, "good": 0.1}, "q2": {"bad": 1.0, "good2": 0.1}}

    def top1(qrels, run):
        return sum(max(run[q], key=run[q].get) in qrels[q] for q in qrels) / len(qrels)

    weights, score = tune_fusion_weights([wrong, right], qrels, "linear", top1, step=0.5)
    assert score == 1.0 and weights[1] > weights[0]
    with pytest.raises(ValueError, match="judged queries"):
        tune_fusion_weights([right], {}, "rrf", top1)
