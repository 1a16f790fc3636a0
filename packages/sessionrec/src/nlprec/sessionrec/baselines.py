"""Baselines that run through the same split and evaluator as PISA.

Every model has ``fit(split)`` (training sessions only) and ``score(data, cases) -> [B, n]``
(higher is better; ``-inf`` = never recommend). Histories at scoring time are the sessions
before each case's target.

- G-TopFreq: global popularity. P-TopFreq: the user's own item frequencies (ties broken by
  first appearance, as the Reality-Check code does). GP-TopFreq: P-TopFreq filled up with
  G-TopFreq.
- ACT-R BL: the user's items ranked by base-level activation at the target's start, filled
  with popularity (no training).
- UP-CF@r (Faggioli et al. 2020): recency-window user popularity spread through asymmetric
  cosine user similarity raised to the locality q.
- TIFU-KNN (Hu et al. 2020): time-decayed group-averaged user vectors, mixed with the mean of
  the k nearest users' vectors.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from nlprec.sessionrec.actr import (
    ACTR_DECAY,
    base_level_matrix,
    session_occurrences,
    softmax,
)
from nlprec.sessionrec.data import SessionData
from nlprec.sessionrec.split import Case, Split


def history_of(data: SessionData, case: Case) -> tuple[list[np.ndarray], np.ndarray, float]:
    """(sessions before the target, their start times, the target's start time)."""
    user = data.users[case.user]
    return (
        user.sessions[: case.position],
        user.times[: case.position],
        float(user.times[case.position]),
    )


def popularity_ranks(popularity: np.ndarray) -> np.ndarray:
    """[n] score in (0, 1] decreasing with popularity rank (ties: lower item index first)."""
    order = np.argsort(-popularity, kind="stable")
    score = np.empty(len(popularity))
    score[order] = 1.0 - np.arange(len(popularity)) / (len(popularity) + 1)
    return score


def frequency_scores(sessions: list[np.ndarray], n_items: int) -> np.ndarray:
    """[n] count of each item in the sessions + a (0, 1) tie-break favouring first appearance;
    ``-inf`` for items never seen."""
    scores = np.full(n_items, -np.inf)
    if not sessions:
        return scores
    flat = np.concatenate(sessions)
    counts = np.bincount(flat, minlength=n_items).astype(float)
    _, first = np.unique(flat, return_index=True)
    order = flat[np.sort(first)]  # items by first appearance
    scores[order] = counts[order] + 1.0 - (np.arange(len(order)) + 1) / (len(order) + 2)
    return scores


class GTopFreq:
    name = "g_topfreq"

    def fit(self, split: Split) -> GTopFreq:
        self.score_row = popularity_ranks(split.train_popularity())
        return self

    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        return np.tile(self.score_row, (len(cases), 1))


class PTopFreq:
    name = "p_topfreq"

    def fit(self, split: Split) -> PTopFreq:
        return self

    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        return np.stack([frequency_scores(history_of(data, c)[0], data.n_items) for c in cases])


class GPTopFreq:
    """Personal frequencies first (scores >= 1), then global popularity (scores in (-1, 0))."""

    name = "gp_topfreq"

    def fit(self, split: Split) -> GPTopFreq:
        self.fill = popularity_ranks(split.train_popularity()) - 1.0
        return self

    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        personal = PTopFreq().score(data, cases)
        return np.where(np.isfinite(personal), personal, self.fill[None, :])


class ActrBaseLevel:
    """softmax_u(B_v) over the user's items (each in [0, 1] + 1), then popularity fill (< 0).

    ``decay`` is the base-level d (ACT-R's 0.5; 0 ranks by frequency alone); ``clock`` is
    "time" (the timestamps in ``data.time_scale`` units) or "sessions" (session k at time k, the
    target at its own index: ages counted in sessions, as PISA's ``clock``)."""

    name = "actr_bl"

    def __init__(self, decay: float = ACTR_DECAY, clock: str = "time"):
        if clock not in ("time", "sessions"):
            raise ValueError(f"ActrBaseLevel clock must be 'time' or 'sessions', got {clock!r}")
        self.decay, self.clock = decay, clock

    def fit(self, split: Split) -> ActrBaseLevel:
        self.fill = popularity_ranks(split.train_popularity()) - 1.0
        return self

    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        out = np.tile(self.fill, (len(cases), 1))
        for row, case in enumerate(cases):
            sessions, times, t_ref = history_of(data, case)
            if self.clock == "sessions":
                times, t_ref, scale = np.arange(len(sessions), dtype=float), case.position, 1.0
            else:
                scale = data.time_scale
            items, times_k = session_occurrences(sessions, times / scale)
            if len(items) == 0:
                continue
            distinct, activation = base_level_matrix(
                items, times_k, np.array([t_ref / scale]), self.decay
            )
            out[row, distinct] = 1.0 + softmax(activation[0])
        return out


class UPCF:
    """score(u) = Σ_v sim(u, v)^q · pop_r(v), pop_r = item frequency over v's last r sessions / r.

    sim(u, v) = |I_u ∩ I_v| / (|I_u|^α |I_v|^(1−α) + shrink) on the 0/1 train user–item matrix,
    the ``neighbours`` most similar other users kept, sim(u, u) = 1.

    ``shrink`` defaults to 0, as in the Reality-Check code (similaripy's default). A large shrink
    is not harmless here: with q = 10 it makes every neighbour term ~1e-25, below float64
    resolution next to u's own pop_r (≥ 1/r), so u's tied items were ranked by item index instead
    of by their neighbours (TaFeng NDCG@10 0.097 with shrink 1000 vs 0.111 with 0).
    """

    name = "up_cf"

    def __init__(
        self,
        recency: int = 10,
        alpha: float = 0.75,
        locality: int = 10,
        neighbours: int = 100,
        shrink: float = 0.0,
    ):
        self.recency, self.alpha, self.locality = recency, alpha, locality
        self.neighbours, self.shrink = neighbours, shrink

    def fit(self, split: Split) -> UPCF:
        train = split.train_data()
        self.user_items = (user_item_matrix(train) > 0).astype(float)  # [U, n] 0/1
        self.sizes = np.asarray(self.user_items.sum(axis=1)).ravel()  # [U]
        self.train_pop = sp.vstack(
            [sp.csr_matrix(self.recent_popularity(u.sessions, train.n_items)) for u in train.users]
        ).tocsr()  # [U, n] pop_r of each user's training sessions
        return self

    def recent_popularity(self, sessions: list[np.ndarray], n_items: int) -> np.ndarray:
        recent = sessions[-self.recency :]
        if not recent:
            return np.zeros(n_items)
        return np.bincount(np.concatenate(recent), minlength=n_items) / len(recent)

    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        users = np.array([c.user for c in cases])
        overlap = (self.user_items[users] @ self.user_items.T).toarray()  # [B, U]
        denom = self.sizes[users, None] ** self.alpha * self.sizes[None, :] ** (1 - self.alpha)
        denom = denom + self.shrink
        sim = np.divide(overlap, denom, out=np.zeros_like(overlap), where=denom > 0)
        sim[np.arange(len(cases)), users] = 0.0  # u itself is added below, with weight 1
        if self.neighbours < sim.shape[1]:
            cut = np.partition(sim, -self.neighbours, axis=1)[:, -self.neighbours][:, None]
            sim = np.where(sim >= cut, sim, 0.0)
        scores = (sp.csr_matrix(sim**self.locality) @ self.train_pop).toarray()  # [B, n]
        for row, case in enumerate(cases):  # sim(u, u)^q = 1 with u's history up to the case
            scores[row] += self.recent_popularity(history_of(data, case)[0], data.n_items)
        return scores


def user_item_matrix(data: SessionData) -> sp.csr_matrix:
    """[U, n] counts of each item over each user's sessions."""
    rows, cols = [], []
    for u, user in enumerate(data.users):
        if user.sessions:
            flat = np.concatenate(user.sessions)
            rows.append(np.full(len(flat), u))
            cols.append(flat)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(data.users), data.n_items))


def tifu_groups(n: int, group_size: int) -> list[np.ndarray]:
    """Consecutive basket groups as the TIFU-KNN authors build them: with fewer than m
    (``group_size``) baskets each basket is its own group; otherwise m groups, the larger
    (one basket more) ones LAST."""
    if n < group_size:
        return [np.array([b]) for b in range(n)]
    small, extra = divmod(n, group_size)
    sizes = [small] * (group_size - extra) + [small + 1] * extra
    return np.split(np.arange(n), np.cumsum(sizes)[:-1])


def tifu_user_vector(
    sessions: list[np.ndarray],
    n_items: int,
    within_decay: float,
    group_decay: float,
    group_size: int,
) -> np.ndarray:
    """TIFU user vector (Hu et al. 2020, as in the authors' code): basket b (0-based, of N)
    weighted r_b^(N-1-b); baskets in the groups of :func:`tifu_groups`, each averaged; group g
    weighted r_g^(m-1-g) with m = ``group_size`` (also when there are fewer groups); the sum
    divided by the number of groups."""
    n = len(sessions)
    vec = np.zeros(n_items)
    if n == 0:
        return vec
    groups = tifu_groups(n, group_size)
    for g, members in enumerate(groups):
        group_vec = np.zeros(n_items)
        for b in members:
            group_vec[sessions[b]] += within_decay ** (n - 1 - b)
        vec += group_vec / len(members) * group_decay ** (group_size - 1 - g)
    return vec / len(groups)


class TIFUKNN:
    name = "tifu_knn"

    def __init__(
        self,
        k: int = 300,
        within_decay: float = 0.9,
        group_decay: float = 0.7,
        alpha: float = 0.7,
        group_size: int = 7,
    ):
        self.k, self.within_decay, self.group_decay = k, within_decay, group_decay
        self.alpha, self.group_size = alpha, group_size

    def _vector(self, sessions: list[np.ndarray], n_items: int) -> np.ndarray:
        return tifu_user_vector(
            sessions, n_items, self.within_decay, self.group_decay, self.group_size
        )

    def fit(self, split: Split) -> TIFUKNN:
        from sklearn.neighbors import NearestNeighbors  # slow to import: only where used

        train = split.train_data()
        self.vectors = sp.vstack(
            [sp.csr_matrix(self._vector(u.sessions, train.n_items)) for u in train.users]
        ).tocsr()
        self.index = NearestNeighbors(
            n_neighbors=min(self.k + 1, self.vectors.shape[0]), algorithm="brute"
        ).fit(self.vectors)
        return self

    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        own = np.stack(
            [self._vector(history_of(data, c)[0], data.n_items) for c in cases]
        )  # [B, n]
        _, neighbours = self.index.kneighbors(sp.csr_matrix(own))  # [B, k+1]
        rows, cols, weights = [], [], []
        for row, case in enumerate(cases):
            others = [v for v in neighbours[row] if v != case.user][: self.k]
            rows += [row] * len(others)
            cols += others
            weights += [1.0 / len(others)] * len(others)
        averaging = sp.csr_matrix(
            (weights, (rows, cols)), shape=(len(cases), self.vectors.shape[0])
        )
        mean = (averaging @ self.vectors).toarray()  # [B, n] mean of the k neighbours' vectors
        lonely = np.asarray(averaging.sum(axis=1)).ravel() == 0  # a single-user log
        scores = self.alpha * own + (1 - self.alpha) * mean
        scores[lonely] = own[lonely]
        return scores
