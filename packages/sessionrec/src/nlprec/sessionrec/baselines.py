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

import hashlib
from collections import OrderedDict

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

    The neighbour similarities of every training user depend on the data, α, ``neighbours`` and
    ``shrink`` only: they are computed once per such setting (:data:`SIMILARITY_MEMO`), so a
    search over r and q reuses them.
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
        self.similarity = neighbour_similarity(
            self.user_items, self.alpha, self.neighbours, self.shrink
        )  # [U, U] sparse, zero diagonal
        self.train_pop = recent_popularity_matrix(
            [u.sessions for u in train.users], train.n_items, self.recency
        )  # [U, n] pop_r of each user's training sessions
        return self

    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        users = np.array([c.user for c in cases])
        weights = self.similarity[users].power(self.locality)  # [B, U]
        scores = (weights @ self.train_pop).toarray()  # [B, n]
        own = recent_popularity_matrix(
            [history_of(data, c)[0] for c in cases], data.n_items, self.recency
        )  # sim(u, u)^q = 1 with u's history up to the case
        return scores + own.toarray()


def recent_popularity_matrix(
    histories: list[list[np.ndarray]], n_items: int, recency: int
) -> sp.csr_matrix:
    """[len(histories), n] item frequency over each history's last ``recency`` sessions / their
    number (a zero row for an empty history)."""
    rows, cols, weights = [], [], []
    for row, sessions in enumerate(histories):
        recent = sessions[-recency:]
        if not recent:
            continue
        flat = np.concatenate(recent)
        rows.append(np.full(len(flat), row))
        cols.append(flat)
        weights.append(np.full(len(flat), 1.0 / len(recent)))
    if not rows:
        return sp.csr_matrix((len(histories), n_items))
    return sp.csr_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(histories), n_items),
    )  # duplicates summed


SIMILARITY_MEMO: OrderedDict[tuple, sp.csr_matrix] = OrderedDict()
SIMILARITY_MEMO_SIZE = 8


def neighbour_similarity(
    user_items: sp.csr_matrix, alpha: float, neighbours: int, shrink: float, batch: int = 512
) -> sp.csr_matrix:
    """[U, U] asymmetric cosine of each user to the others, all but the ``neighbours`` largest
    per row (ties at the cut kept) set to 0, zero diagonal; memoised on the matrix's content."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (user_items.indptr, user_items.indices):
        digest.update(np.ascontiguousarray(array).tobytes())
    key = (digest.hexdigest(), user_items.shape, alpha, neighbours, shrink)
    if key in SIMILARITY_MEMO:
        SIMILARITY_MEMO.move_to_end(key)
        return SIMILARITY_MEMO[key]
    n_users = user_items.shape[0]
    sizes = np.asarray(user_items.sum(axis=1)).ravel()
    blocks = []
    for start in range(0, n_users, batch):
        users = np.arange(start, min(start + batch, n_users))
        overlap = (user_items[users] @ user_items.T).toarray()  # [B, U]
        denom = sizes[users, None] ** alpha * sizes[None, :] ** (1 - alpha) + shrink
        sim = np.divide(overlap, denom, out=np.zeros_like(overlap), where=denom > 0)
        sim[np.arange(len(users)), users] = 0.0  # u itself is added at scoring, with weight 1
        if neighbours < n_users:
            cut = np.partition(sim, -neighbours, axis=1)[:, -neighbours][:, None]
            sim = np.where(sim >= cut, sim, 0.0)
        blocks.append(sp.csr_matrix(sim))
    similarity = sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, 0))
    SIMILARITY_MEMO[key] = similarity
    while len(SIMILARITY_MEMO) > SIMILARITY_MEMO_SIZE:
        SIMILARITY_MEMO.popitem(last=False)
    return similarity


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


def tifu_basket_weights(
    n: int, within_decay: float, group_decay: float, group_size: int
) -> np.ndarray:
    """[n] weight of each basket in the TIFU user vector (Hu et al. 2020, as in the authors'
    code): basket b (0-based, of N) weighted r_b^(N-1-b); baskets in the groups of
    :func:`tifu_groups`, each averaged; group g weighted r_g^(m-1-g) with m = ``group_size``
    (also when there are fewer groups); the sum divided by the number of groups."""
    weights = np.zeros(n)
    groups = tifu_groups(n, group_size)
    for g, members in enumerate(groups):
        weights[members] = (
            within_decay ** (n - 1 - members) / len(members) * group_decay ** (group_size - 1 - g)
        )
    return weights / max(len(groups), 1)


def tifu_user_matrix(
    histories: list[list[np.ndarray]],
    n_items: int,
    within_decay: float,
    group_decay: float,
    group_size: int,
) -> sp.csr_matrix:
    """[len(histories), n] TIFU user vectors (:func:`tifu_basket_weights`), sparse."""
    rows, cols, weights = [], [], []
    for row, sessions in enumerate(histories):
        if not sessions:
            continue
        basket_weights = tifu_basket_weights(len(sessions), within_decay, group_decay, group_size)
        baskets = [np.unique(s) for s in sessions]  # multi-hot baskets
        lengths = [len(s) for s in baskets]
        rows.append(np.full(sum(lengths), row))
        cols.append(np.concatenate(baskets))
        weights.append(np.repeat(basket_weights, lengths))
    if not rows:
        return sp.csr_matrix((len(histories), n_items))
    return sp.csr_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(histories), n_items),
    )


def tifu_user_vector(
    sessions: list[np.ndarray],
    n_items: int,
    within_decay: float,
    group_decay: float,
    group_size: int,
) -> np.ndarray:
    """[n] one user's TIFU vector (:func:`tifu_basket_weights`)."""
    return (
        tifu_user_matrix([sessions], n_items, within_decay, group_decay, group_size)
        .toarray()
        .ravel()
    )


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

    def _vectors(self, histories: list[list[np.ndarray]], n_items: int) -> sp.csr_matrix:
        return tifu_user_matrix(
            histories, n_items, self.within_decay, self.group_decay, self.group_size
        )

    def fit(self, split: Split) -> TIFUKNN:
        from sklearn.neighbors import NearestNeighbors  # slow to import: only where used

        train = split.train_data()
        self.vectors = self._vectors([u.sessions for u in train.users], train.n_items)
        self.index = NearestNeighbors(
            n_neighbors=min(self.k + 1, self.vectors.shape[0]), algorithm="brute"
        ).fit(self.vectors)
        return self

    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        own_sparse = self._vectors([history_of(data, c)[0] for c in cases], data.n_items)
        _, neighbours = self.index.kneighbors(own_sparse)  # [B, k+1]
        own = own_sparse.toarray()  # [B, n]
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
