"""Online serving: recommend for a user or an ad-hoc history, absorb new events incrementally.

State kept per user: the time-ordered list of (timestamp, item) events. A recommendation
computes the ACT-R base-level activation of that user's items at query time (and, when a
trained PISA model is attached, PISA's full-catalogue scores) from that user's events only,
so adding events never triggers a recomputation over other users or a retraining.

Directory layout (written atomically: a temporary sibling directory renamed into place)::

    meta.json         model_version, settings, item vocabulary, train popularity
    users.jsonl       one line per user: {"user": ..., "events": [[t, item], ...]}
    event_ids.json    ids of every absorbed event (idempotency)
    pisa/             optional trained model (see nlprec.sessionrec.pisa)
"""

from __future__ import annotations

import bisect
import json
import time as wallclock
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nlprec.core.hashing import hash_value
from nlprec.core.io import atomic_directory
from nlprec.sessionrec.actr import base_level_matrix, softmax
from nlprec.sessionrec.data import SessionData

FUTURE_TOLERANCE_S = 24 * 3600.0
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Event:
    user_id: str
    item: str
    timestamp: float  # epoch seconds
    event_id: str


@dataclass
class Recommendation:
    items: list[str]
    scores: list[float]
    repeat: list[bool]  # the item is in the user's (or the given) history
    fallback: bool  # True: popularity fallback (no usable history)
    notes: list[str] = field(default_factory=list)


class OnlineRecommender:
    """Serve recommendations from a trained state; see the module docstring."""

    def __init__(
        self,
        items: list[str],
        popularity: np.ndarray,
        user_events: dict[str, list[tuple[float, str]]],
        event_ids: set[str] | None = None,
        time_scale: float = 3600.0,
        session_gap_s: float = 20 * 60.0,
        model_version: str | None = None,
        pisa=None,
    ):
        if len(items) != len(popularity):
            raise ValueError(f"{len(items)} items but {len(popularity)} popularity values")
        self.items = list(items)
        self.item_index = {item: i for i, item in enumerate(self.items)}
        self.popularity = np.asarray(popularity, dtype=float)
        self.user_events = {u: sorted(ev) for u, ev in user_events.items()}
        self.event_ids = set(event_ids or ())
        self.time_scale = time_scale
        self.session_gap_s = session_gap_s
        self.pisa = pisa  # a trained nlprec.sessionrec.pisa.PISARecommender, or None
        self.model_version = model_version or self._fingerprint()
        order = np.argsort(-self.popularity, kind="stable")
        self._popularity_order = order

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_sessions(
        cls,
        data: SessionData,
        popularity: np.ndarray | None = None,
        time_scale: float | None = None,
        pisa=None,
        **kwargs,
    ) -> OnlineRecommender:
        """State from sessions: each session item becomes an event at its session's start."""
        if popularity is None:
            popularity = np.zeros(data.n_items)
            for u in data.users:
                for s in u.sessions:
                    popularity[s] += 1
        events = {
            u.user: [
                (float(t), data.items[i]) for s, t in zip(u.sessions, u.times) for i in s.tolist()
            ]
            for u in data.users
        }
        return cls(
            data.items,
            popularity,
            events,
            time_scale=time_scale or data.time_scale,
            pisa=pisa,
            **kwargs,
        )

    def _fingerprint(self) -> str:
        sample = [len(self.items), self.items[:50], self.popularity[:50].tolist()]
        return f"sessionrec-{hash_value(sample, length=12)}"

    # -- queries ---------------------------------------------------------------------------
    def known_user(self, user_id: str) -> bool:
        return user_id in self.user_events

    def recommend(
        self,
        user_id: str | None = None,
        history: list[str] | None = None,
        k: int = 10,
        exclude_seen: bool = False,
        now: float | None = None,
    ) -> Recommendation:
        """Top-k items for a known user, or for an explicit ``history`` (oldest first).

        With both, ``history`` is appended to the user's stored events (at query time).
        Unknown items in ``history`` are ignored (listed in ``notes``). A user with no usable
        history gets the popularity ranking with ``fallback=True``.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        now = wallclock.time() if now is None else float(now)
        notes: list[str] = []
        events = list(self.user_events.get(user_id, [])) if user_id is not None else []
        if user_id is not None and user_id not in self.user_events and history is None:
            notes.append(f"unknown user {user_id!r}: popularity fallback")
        if history is not None:
            unknown = [item for item in history if item not in self.item_index]
            if unknown:
                notes.append(f"{len(unknown)} unknown item(s) ignored, e.g. {unknown[:3]}")
            start = max(now, events[-1][0] if events else now)
            events += [(start, item) for item in history]
        known = [(t, self.item_index[i]) for t, i in events if i in self.item_index]
        seen = {i for _, i in known}
        if not known:
            scores = self._popularity_scores()
            fallback = True
        else:
            t_ref = max(now, known[-1][0] + 1.0)
            scores = self._history_scores(known, t_ref)
            fallback = False
        if exclude_seen and seen:
            scores[list(seen)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argsort(-scores, kind="stable")[:k]
        return Recommendation(
            items=[self.items[i] for i in top],
            scores=[float(scores[i]) for i in top],
            repeat=[bool(i in seen) for i in top],
            fallback=fallback,
            notes=notes,
        )

    def _popularity_scores(self) -> np.ndarray:
        top = self.popularity.max() if self.popularity.max() > 0 else 1.0
        return self.popularity / top

    def _history_scores(self, known: list[tuple[float, int]], t_ref: float) -> np.ndarray:
        """PISA scores if a model is attached, else ACT-R base level over the user's items
        (softmax over them, in [1, 2]) above a popularity fill (in [0, 1))."""
        if self.pisa is not None:
            return self.pisa.score_events(known, t_ref, self.session_gap_s)
        items = np.array([i for _, i in known])
        times = np.array([t for t, _ in known]) / self.time_scale
        distinct, activation = base_level_matrix(items, times, np.array([t_ref / self.time_scale]))
        scores = 0.999 * self._popularity_scores()
        scores[distinct] = 1.0 + softmax(activation[0])
        return scores

    # -- updates ---------------------------------------------------------------------------
    def add_events(self, events: list[Event], now: float | None = None) -> int:
        """Absorb new events; returns how many were new (already seen event ids are skipped).

        Validation happens before anything changes: a future timestamp (more than a day
        ahead), an empty user/item/event id or a non-finite time raises ``ValueError`` naming
        the event, and nothing of the batch is applied. Out-of-order events are inserted in
        time order. Events for unknown items are recorded (they count as seen) but cannot be
        recommended until the next training.
        """
        limit = (wallclock.time() if now is None else now) + FUTURE_TOLERANCE_S
        for ev in events:
            if not ev.user_id or not ev.item or not ev.event_id:
                raise ValueError(f"event {ev!r}: user_id, item and event_id must be non-empty")
            if not np.isfinite(ev.timestamp):
                raise ValueError(
                    f"event {ev.event_id!r}: timestamp {ev.timestamp!r} is not a finite number"
                )
            if ev.timestamp > limit:
                raise ValueError(
                    f"event {ev.event_id!r}: timestamp {ev.timestamp} is in the future"
                )
        added = 0
        for ev in events:
            if ev.event_id in self.event_ids:
                continue
            self.event_ids.add(ev.event_id)
            bisect.insort(
                self.user_events.setdefault(ev.user_id, []), (float(ev.timestamp), ev.item)
            )
            added += 1
        return added

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the whole state to ``directory`` atomically (temp dir + rename)."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            meta = {
                "format": FORMAT_VERSION,
                "model_version": self.model_version,
                "time_scale": self.time_scale,
                "session_gap_s": self.session_gap_s,
                "items": self.items,
                "popularity": self.popularity.tolist(),
                "has_pisa": self.pisa is not None,
            }
            (tmp / "meta.json").write_text(json.dumps(meta))
            with (tmp / "users.jsonl").open("w") as handle:
                for user, events in self.user_events.items():
                    handle.write(json.dumps({"user": user, "events": events}) + "\n")
            (tmp / "event_ids.json").write_text(json.dumps(sorted(self.event_ids)))
            if self.pisa is not None:
                self.pisa.save(tmp / "pisa")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> OnlineRecommender:
        directory = Path(directory)
        meta_file = directory / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{directory} is not an OnlineRecommender directory (no meta.json)"
            )
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: format {meta.get('format')} is not {FORMAT_VERSION}")
        user_events = {}
        with (directory / "users.jsonl").open() as handle:
            for line in handle:
                row = json.loads(line)
                user_events[row["user"]] = [(float(t), str(i)) for t, i in row["events"]]
        pisa = None
        if meta["has_pisa"]:
            from nlprec.sessionrec.pisa import PISARecommender

            pisa = PISARecommender.load(directory / "pisa")
        return cls(
            meta["items"],
            np.asarray(meta["popularity"]),
            user_events,
            set(json.loads((directory / "event_ids.json").read_text())),
            time_scale=meta["time_scale"],
            session_gap_s=meta["session_gap_s"],
            model_version=meta["model_version"],
            pisa=pisa,
        )
