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
        return SessionData(
            self.data.items, users, self.data.name, self.data.notes, self.data.time_scale
        )

    def merged_validation(self) -> Split:
        """The same test cases with validation sessions moved into training (for models that
        tune nothing on validation)."""
        first_test = np.asarray([len(u.sessions) for u in self.data.users]) - np.bincount(
            [c.user for c in self.test_cases], minlength=len(self.data.users)
        )
        return Split(self.data, first_test, [], self.test_cases)

    def train_popularity(self) -> np.ndarray:
        """[n_items] number of training sessions holding each item."""
        counts = np.zeros(self.data.n_items)
        for u, n in zip(self.data.users, self.n_train):
            for s in u.sessions[:n]:
                counts[s] += 1
        return counts


def temporal_split(data: SessionData, test_sessions: int = 1, val_sessions: int = 1) -> Split:
    """Split every user who has at least one session before the test sessions.

    Users with too few sessions for the full validation part get fewer validation sessions
    (at least one training session always remains), so every user with a history is tested.
    """
    if test_sessions < 1 or val_sessions < 0:
        raise ValueError(
            f"need test_sessions >= 1 and val_sessions >= 0, got {test_sessions}, {val_sessions}"
        )
    kept = [u for u in data.users if len(u.sessions) > test_sessions]
    if not kept:
        raise ValueError(f"no user has more than test_sessions={test_sessions} sessions")
    notes = list(data.notes)
    if len(kept) < len(data.users):
        notes.append(
            f"{len(data.users) - len(kept)} users with <= {test_sessions} sessions dropped"
        )
    data = SessionData(data.items, kept, data.name, notes, data.time_scale)
    n_val = np.asarray([min(val_sessions, len(u.sessions) - test_sessions - 1) for u in kept])
    n_train = np.asarray([len(u.sessions) - test_sessions for u in kept]) - n_val
    val = [Case(i, int(n + k)) for i, (n, v) in enumerate(zip(n_train, n_val)) for k in range(v)]
    test = [
        Case(i, int(n + v + k))
        for i, (n, v) in enumerate(zip(n_train, n_val))
        for k in range(test_sessions)
    ]
    return Split(data, n_train, val, test)
