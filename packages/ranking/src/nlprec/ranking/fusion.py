"""Combining first-stage rankings.

Reciprocal rank fusion (Cormack et al. 2009):  RRF(d) = sum_s w_s / (k + rank_s(d)),  k = 60.
Normalised linear fusion: min-max normalise each system's scores per query to [0, 1], then
LIN(d) = sum_s w_s * norm_s(d); a document a system did not return contributes 0 for it.
Weights are tuned by grid search on a train/dev split (``tune_fusion_weights``), never on test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from nlprec.ranking.data import Qrels, Run

FusionMethod = Literal["rrf", "linear"]
RRF_K = 60


def _ranked(scores: dict[str, float]) -> list[str]:
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


def rrf_fuse(runs: Sequence[Run], weights: Sequence[float] | None = None, k: int = RRF_K) -> Run:
    weights = list(weights) if weights is not None else [1.0] * len(runs)
    fused: Run = {}
    for run, weight in zip(runs, weights, strict=True):
        for qid, scores in run.items():
            target = fused.setdefault(qid, {})
            for rank, doc in enumerate(_ranked(scores), start=1):
                target[doc] = target.get(doc, 0.0) + weight / (k + rank)
    return fused


def minmax_normalise(scores: dict[str, float]) -> dict[str, float]:
    """Scores mapped to [0, 1]; a list of equal scores maps to 1."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return dict.fromkeys(scores, 1.0)
    return {doc: (s - low) / (high - low) for doc, s in scores.items()}


def linear_fuse(runs: Sequence[Run], weights: Sequence[float]) -> Run:
    fused: Run = {}
    for run, weight in zip(runs, weights, strict=True):
        for qid, scores in run.items():
            target = fused.setdefault(qid, {})
            for doc, s in minmax_normalise(scores).items():
                target[doc] = target.get(doc, 0.0) + weight * s
    return fused


def fuse(
    runs: Sequence[Run], method: FusionMethod, weights: Sequence[float], k: int | None = None
) -> Run:
    """Fuse and keep the top ``k`` documents per query (all when ``k`` is None)."""
    fused = rrf_fuse(runs, weights) if method == "rrf" else linear_fuse(runs, weights)
    if k is None:
        return fused
    return {qid: dict(sorted(s.items(), key=lambda item: -item[1])[:k]) for qid, s in fused.items()}


def weight_grid(n_systems: int, step: float) -> list[tuple[float, ...]]:
    """Weight vectors on the simplex (summing to 1) at resolution ``step``."""
    ticks = np.round(np.arange(0, 1 + 1e-9, step), 6)
    return [w for w in itertools.product(ticks, repeat=n_systems) if abs(sum(w) - 1) < 1e-6]


def tune_fusion_weights(
    runs: Sequence[Run],
    qrels: Qrels,
    method: FusionMethod,
    score: Callable[[Qrels, Run], float],
    step: float = 0.1,
) -> tuple[tuple[float, ...], float]:
    """The simplex weights that maximise ``score`` (e.g. mean nDCG@10) on the given (train) qrels."""
    if not qrels:
        raise ValueError(
            "fusion weights need judged queries (a train or dev split); none were given"
        )
    best_weights, best_score = None, -1.0
    for weights in weight_grid(len(runs), step):
        value = score(qrels, fuse(runs, method, weights))
        if value > best_score + 1e-12:
            best_weights, best_score = weights, value
    return tuple(float(w) for w in best_weights), best_score
