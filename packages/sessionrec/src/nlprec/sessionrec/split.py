"""Per-user temporal splits and train-only statistics.

The last ``test_sessions`` sessions of each user are test targets, the ``val_sessions`` before
them validation targets, the rest is training. Every test session is predicted from all the
sessions before it (so the second test session sees the first). Popularity and co-occurrence
come from training sessions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nlprec.sessionrec.data import SessionData, UserSessions


@dataclass(frozen=True)
class Case:
    """Predict ``data.users[user].sessions[position]`` from the sessions before it."""

    user: int
    position: int


@dataclass
class Split:
    data: SessionData  # every session (histories for evaluation come from here)
    n_train: np.ndarray  # [n_users] number of leading training sessions per user
    val_cases: list[Case]
    test_cases: list[Case]

    def train_data(self) -> SessionData:
        """Only the training sessions (what models may fit on)."""
        users = [
            UserSessions(u.user, u.sessions[:n], u.times[:n])
            for u, n in zip(self.data.users, self.n_train)
        ]
        return SessionData(self.data.items, users, self.data.name, self.data.notes)

    def train_popularity(self) -> np.ndarray:
        """[n_items] number of training sessions holding each item."""
        counts = np.zeros(self.data.n_items)
        for u, n in zip(self.data.users, self.n_train):
            for s in u.sessions[:n]:
                counts[s] += 1
        return counts


def temporal_split(data: SessionData, test_sessions: int = 1, val_sessions: int = 1) -> Split:
    """Split every user with at least ``test + val + 1`` sessions; shorter users are an error
    only if none remains (they are counted and dropped otherwise)."""
    if test_sessions < 1 or val_sessions < 0:
        raise ValueError(
            f"need test_sessions >= 1 and val_sessions >= 0, got {test_sessions}, {val_sessions}"
        )
    need = test_sessions + val_sessions + 1
    kept = [u for u in data.users if len(u.sessions) >= need]
    if not kept:
        raise ValueError(
            f"no user has the {need} sessions a split with test={test_sessions}, val={val_sessions} needs"
        )
    data = SessionData(
        data.items,
        kept,
        data.name,
        data.notes
        + (
            [f"{len(data.users) - len(kept)} users with < {need} sessions dropped"]
            if len(kept) < len(data.users)
            else []
        ),
    )
    n_train = np.asarray([len(u.sessions) - test_sessions - val_sessions for u in kept])
    val = [Case(i, int(n + k)) for i, n in enumerate(n_train) for k in range(val_sessions)]
    test = [
        Case(i, int(n + val_sessions + k))
        for i, n in enumerate(n_train)
        for k in range(test_sessions)
    ]
    return Split(data, n_train, val, test)
