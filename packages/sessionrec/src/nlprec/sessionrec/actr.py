"""ACT-R memory components, written as the equations they are.

- Base-level activation (frequency and power-law recency of past uses of item v):
      B_v(t_ref) = ln Σ_{k : t_k < t_ref} (t_ref − t_k)^(−d),   d = 0.5
  computed causally: only occurrences strictly before ``t_ref`` count.
- Spreading activation from a context set K (e.g. the previous session):
      S_v = Σ_{u ∈ K} C[u, v],   C = D^(−½) F D^(−½)
  where F[u, v] counts training sessions holding both u and v (diagonal zeroed) and D is the
  diagonal of F's row sums. C is a scipy sparse matrix; nothing is n×n dense.
- Partial matching from item embeddings: P_v = Σ_{u ∈ K, u ≠ v} cos(e_v, e_u).
- Each component is softmax-normalised over the candidate set of one user (or one session),
  so components on different scales can be mixed by learned weights.

``*_reference`` functions are plain loops over the definitions; tests check the vectorised
versions against them.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

ACTR_DECAY = 0.5
MIN_AGE = 1.0 / 60.0  # in time units (hours for dated logs): ages below a minute are clipped
SECONDS_PER_HOUR = 3600.0


def base_level_reference(
    occurrence_items: np.ndarray,
    occurrence_times: np.ndarray,
    t_ref: float,
    decay: float = ACTR_DECAY,
) -> dict[int, float]:
    """B_v(t_ref) for every item with an occurrence before ``t_ref`` (loop version)."""
    strength: dict[int, float] = {}
    for item, t_k in zip(occurrence_items.tolist(), occurrence_times.tolist()):
        if t_k < t_ref:
            age = max(t_ref - t_k, MIN_AGE)
            strength[item] = strength.get(item, 0.0) + age ** (-decay)
    return {item: math.log(s) for item, s in strength.items()}


def base_level_matrix(
    occurrence_items: np.ndarray,  # [n_occ] item index of each past use
    occurrence_times: np.ndarray,  # [n_occ] its time (in time units)
    t_refs: np.ndarray,  # [P] reference times, one per position
    decay: float = ACTR_DECAY,
) -> tuple[np.ndarray, np.ndarray]:
    """B[p, a] for every position p and every distinct item a of this history, vectorised.

    Returns ``(items [U], activation [P, U])`` with ``-inf`` where item a has no use before
    ``t_refs[p]``. U is the number of distinct items of one user, so [P, U] stays small.
    """
    items, local = np.unique(occurrence_items, return_inverse=True)  # items [U], local [n_occ]
    age = t_refs[:, None] - occurrence_times[None, :]  # [P, n_occ]
    weight = np.where(age > 0, np.maximum(age, MIN_AGE) ** (-decay), 0.0)  # [P, n_occ]
    one_hot = sp.csr_matrix(
        (np.ones(len(local)), (np.arange(len(local)), local)), shape=(len(local), len(items))
    )  # [n_occ, U]
    strength = np.asarray((one_hot.T @ weight.T).T)  # [P, U]
    with np.errstate(divide="ignore"):
        return items, np.log(strength)


def session_occurrences(
    sessions: list[np.ndarray], times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten sessions into (item, time) occurrences; an item's time is its session's start."""
    if not sessions:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
    return np.concatenate(sessions).astype(np.int64), np.repeat(
        np.asarray(times, dtype=float), lengths
    )


def cooccurrence_matrix(
    sessions: list[np.ndarray], n_items: int, max_len: int = 50
) -> sp.csr_matrix:
    """C = D^(−½) F D^(−½) with F[u, v] = #sessions holding u and v (u ≠ v). Sparse [n, n]."""
    rows = np.repeat(np.arange(len(sessions)), [min(len(s), max_len) for s in sessions])
    cols = np.concatenate([s[:max_len] for s in sessions]) if sessions else np.zeros(0, np.int64)
    incidence = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(sessions), n_items))
    counts = (incidence.T @ incidence).tocsr()  # F + diag(item frequencies)
    counts.setdiag(0)
    counts.eliminate_zeros()
    degree = np.asarray(counts.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    scale = sp.diags(inv_sqrt)
    return (scale @ counts @ scale).tocsr()


def cooccurrence_reference(sessions: list[np.ndarray], n_items: int) -> np.ndarray:
    """Dense loop version of :func:`cooccurrence_matrix` (tests only: tiny n)."""
    counts = np.zeros((n_items, n_items))
    for s in sessions:
        for u in s:
            for v in s:
                if u != v:
                    counts[u, v] += 1
    degree = counts.sum(axis=1)
    inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0.0)
    return inv_sqrt[:, None] * counts * inv_sqrt[None, :]


def spreading_activation(
    cooc: sp.csr_matrix, context: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """S_v = Σ_{u ∈ context} C[u, v] for each candidate v. Returns [len(candidates)]."""
    if len(context) == 0:
        return np.zeros(len(candidates))
    rows = cooc[np.unique(context)]  # [|K|, n] sparse
    return np.asarray(rows[:, candidates].sum(axis=0)).ravel()


def partial_matching(
    embeddings: np.ndarray, context: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """P_v = Σ_{u ∈ context, u ≠ v} cos(e_v, e_u). Returns [len(candidates)]."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sim = unit[candidates] @ unit[context].T  # [C, K]
    sim[candidates[:, None] == context[None, :]] = 0.0
    return sim.sum(axis=1)


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax that maps all-``-inf`` rows to zeros instead of NaN."""
    top = np.max(scores, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    exp = np.exp(scores - top)
    total = exp.sum(axis=axis, keepdims=True)
    return np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)
