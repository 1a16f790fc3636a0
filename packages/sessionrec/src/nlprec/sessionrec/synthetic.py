"""A seeded generator of listening logs whose users behave by ACT-R-like memory.

Each user has a taste (a few item clusters) and, as they listen, a memory of what they
played. A session mixes three behaviours:

- **repeat**: replay a past item with probability ∝ exp(B_v), where
  B_v = ln Σ_k (t − t_k)^(−d) is the base-level activation (frequency and power-law recency);
- **favourites**: a handful of items per user come back across the whole history;
- **explore**: a new item from the user's clusters (Zipf popularity inside a cluster), or, with
  a small probability, from anywhere in the catalogue.

Sessions are chains within a cluster (items of one cluster co-occur, so spreading activation
and item embeddings carry signal). The output is a flat :class:`EventLog` with epoch-second
timestamps, so the usual sessionizer (20-minute gap) recovers the sessions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from nlprec.sessionrec.data import EventLog
from pydantic import BaseModel, Field

START_TIME = 1_700_000_000.0  # 2023-11-14, an arbitrary fixed epoch
SECONDS_PER_PLAY = 200.0
ACTR_DECAY = 0.5


class SyntheticConfig(BaseModel):
    model_config = {"extra": "forbid"}
    n_users: int = Field(300, ge=1)
    n_items: int = Field(2000, ge=20)
    n_clusters: int = Field(40, ge=2)
    sessions_per_user: tuple[int, int] = (12, 30)
    session_len: tuple[int, int] = (4, 12)
    clusters_per_user: int = Field(3, ge=1)
    n_favourites: int = Field(5, ge=0)
    p_repeat: float = Field(0.45, ge=0, le=1)
    p_favourite: float = Field(0.15, ge=0, le=1)
    p_random: float = Field(0.05, ge=0, le=1)
    mean_gap_hours: float = Field(20.0, gt=0)
    seed: int = 0


def generate_listening_log(cfg: SyntheticConfig) -> EventLog:
    """Generate a deterministic (given ``cfg.seed``) listening log."""
    rng = np.random.default_rng(cfg.seed)
    cluster_of_item = rng.integers(0, cfg.n_clusters, size=cfg.n_items)
    members = [np.flatnonzero(cluster_of_item == c) for c in range(cfg.n_clusters)]
    members = [m if len(m) else np.array([c % cfg.n_items]) for c, m in enumerate(members)]
    # Zipf popularity inside each cluster (rank 1 most popular).
    weights = [1.0 / np.arange(1, len(m) + 1) ** 1.1 for m in members]
    weights = [w / w.sum() for w in weights]

    rows: list[tuple[str, float, str]] = []
    for u in range(cfg.n_users):
        user = f"u{u:05d}"
        clusters = rng.choice(
            cfg.n_clusters, size=min(cfg.clusters_per_user, cfg.n_clusters), replace=False
        )
        favourites = np.concatenate([rng.choice(members[c], size=2) for c in clusters])[
            : cfg.n_favourites
        ]
        played: list[int] = []
        played_at: list[float] = []
        t = START_TIME + rng.uniform(0, 7 * 86400)
        for _ in range(int(rng.integers(cfg.sessions_per_user[0], cfg.sessions_per_user[1] + 1))):
            t += rng.exponential(cfg.mean_gap_hours * 3600) + 3600  # >= 1 h between sessions
            cluster = rng.choice(clusters)
            n_plays = int(rng.integers(cfg.session_len[0], cfg.session_len[1] + 1))
            for k in range(n_plays):
                item = _next_item(
                    rng, cfg, played, played_at, t, favourites, members[cluster], weights[cluster]
                )
                stamp = t + k * SECONDS_PER_PLAY
                rows.append((user, stamp, f"i{item:05d}"))
                played.append(item)
                played_at.append(stamp)
            t += n_plays * SECONDS_PER_PLAY
    return EventLog(
        pd.DataFrame(rows, columns=["user", "time", "item"]), source=f"synthetic-{cfg.seed}"
    )


def _next_item(rng, cfg, played, played_at, now, favourites, cluster_items, cluster_weights) -> int:
    draw = rng.random()
    if played and draw < cfg.p_repeat:
        items, activation = _base_level(np.asarray(played), np.asarray(played_at), now)
        p = np.exp(activation - activation.max())
        return int(rng.choice(items, p=p / p.sum()))
    if len(favourites) and draw < cfg.p_repeat + cfg.p_favourite:
        return int(rng.choice(favourites))
    if draw < cfg.p_repeat + cfg.p_favourite + cfg.p_random:
        return int(rng.integers(0, cfg.n_items))
    return int(rng.choice(cluster_items, p=cluster_weights))


def _base_level(
    played: np.ndarray, played_at: np.ndarray, now: float
) -> tuple[np.ndarray, np.ndarray]:
    """B_v = ln Σ_k (now − t_k)^(−d) over past plays (times in hours, at least one play ago)."""
    age_hours = np.maximum(now - played_at, SECONDS_PER_PLAY) / 3600.0
    items, inverse = np.unique(played, return_inverse=True)
    strength = np.bincount(inverse, weights=age_hours ** (-ACTR_DECAY))
    return items, np.log(strength)
