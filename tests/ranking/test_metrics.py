"""Metrics against hand-computed values; significance tests on known cases."""

import math

import numpy as np
import pytest
from nlprec.ranking.evaluate import (
    compare_systems,
    evaluate_run,
    paired_randomization_test,
    per_query_scores,
)


def test_ndcg_mrr_recall_by_hand():
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}}
    run = {"q1": {"x": 3.0, "a": 2.0, "b": 1.0}, "q2": {"c": 1.0}}
    scores = evaluate_run(qrels, run)
    dcg_q1 = 1 / math.log2(3) + 1 / math.log2(4)
    idcg_q1 = 1 + 1 / math.log2(3)
    assert scores["ndcg@10"] == pytest.approx((dcg_q1 / idcg_q1 + 1.0) / 2)
    assert scores["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert scores["recall@100"] == pytest.approx(1.0)
    assert scores["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)


def test_judged_queries_missing_from_the_run_count_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 1.0}, "q3": {"z": 1.0}}  # q3 has no qrels: ignored
    assert evaluate_run(qrels, run)["ndcg@10"] == pytest.approx(0.5)
    assert per_query_scores(qrels, run, ["mrr@10"])["mrr@10"] == {"q1": 1.0, "q2": 0.0}


def test_randomization_test():
    a = np.array([0.5, 0.6, 0.7, 0.8])
    assert paired_randomization_test(a, a) == pytest.approx(1.0)
    better = np.linspace(0.5, 0.9, 40)
    assert paired_randomization_test(better, better - 0.2) < 0.01


def test_compare_systems_reports_delta_and_p_values():
    per_query = {"bm25": {"q1": 0.2, "q2": 0.4}, "dense": {"q1": 0.4, "q2": 0.6}}
    (row,) = compare_systems(per_query, "bm25")
    assert row["system"] == "dense" and row["delta"] == pytest.approx(0.2)
    assert 0 <= row["p_ttest"] <= 1 and 0 <= row["p_randomization"] <= 1
