"""Recommendations and online event updates on a `nlprec.sessionrec` OnlineRecommender.

Recommending reads the model (many at once); adding events writes it (alone), after logging the
events durably (see `nlprec.service.state`). Every `snapshot_every_events` logged events, and on
shutdown, the recommender is snapshotted and the log emptied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nlprec.service.concurrency import InFlight, ModelRunner
from nlprec.service.lanes import Lane
from nlprec.service.problems import ProblemError
from nlprec.service.state import EventLog, Snapshots

logger = logging.getLogger("nlprec.service")
REPLAY_CHUNK = 10_000  # events per add_events call when replaying the log


class Recommender(Protocol):
    """What the service needs of `nlprec.sessionrec.online.OnlineRecommender`."""

    model_version: str

    def recommend(
        self,
        user_id: str | None = None,
        history: Any = None,
        k: int = 10,
        exclude_seen: bool = False,
    ) -> Any: ...
    def add_events(self, events: list[Any]) -> int: ...
    def known_user(self, user_id: str) -> bool: ...
    def save(self, directory: str | Path) -> Any: ...


@dataclass(frozen=True)
class Recommended:
    items: list[tuple[str, float, bool]]  # (item, score, repeat)
    fallback: bool
    notes: list[str]


def load_with_log(
    load: Callable[[Path], Recommender],
    source_dir: Path,
    folder: Path,
    make_event: Callable[..., Any],
) -> Recommender:
    """The latest snapshot (or the source model), with the event log replayed on top."""
    snapshot = Snapshots(folder).current()
    recommender = load(snapshot if snapshot is not None else source_dir)
    pending: list[Any] = []
    replayed = 0
    for fields in EventLog(folder / "events.jsonl").read():
        pending.append(make_event(**fields))
        if len(pending) == REPLAY_CHUNK:
            replayed += recommender.add_events(pending)
            pending = []
    if pending:
        replayed += recommender.add_events(pending)
    logger.info(
        "sessionrec: loaded %s, replayed %d logged events", snapshot or source_dir, replayed
    )
    return recommender


class RecommendBackend:
    def __init__(
        self,
        recommender: Recommender,
        runner: ModelRunner,
        folder: Path,
        make_event: Callable[..., Any],
        snapshot_every_events: int,
        max_pending: int,
        threads: int | None = None,
    ):
        self.recommender, self.runner = recommender, runner
        self.lane = Lane("recommend", max_pending, threads)
        self.make_event = make_event
        self.log = EventLog(folder / "events.jsonl")
        self.snapshots = Snapshots(folder)
        self.snapshot_every_events = snapshot_every_events
        self._logged_since_snapshot = len(self.log)
        self.in_flight = InFlight()  # calls in progress (a replaced backend waits for none)

    @property
    def model_version(self) -> str:
        return str(self.recommender.model_version)

    # ------------------------------------------------------------ worker threads

    def _recommend(
        self, user_id: str | None, history: Any, k: int, exclude_seen: bool
    ) -> Recommended:
        found = self.recommender.recommend(
            user_id=user_id, history=history, k=k, exclude_seen=exclude_seen
        )
        rows = [
            (str(i), float(s), bool(r)) for i, s, r in zip(found.items, found.scores, found.repeat)
        ]
        return Recommended(
            rows, bool(found.fallback), [str(n) for n in getattr(found, "notes", [])]
        )

    def _add_events(self, events: list[dict[str, Any]]) -> int:
        offset = self.log.append(events)  # durable before it is applied or acknowledged
        try:
            # The recommender validates the whole batch before changing anything.
            added = self.recommender.add_events([self.make_event(**fields) for fields in events])
        except ValueError as invalid:
            self.log.truncate(offset)  # a refused batch must not be replayed at the next start
            raise ProblemError(422, "invalid-events", str(invalid)) from invalid
        self._logged_since_snapshot += len(events)
        if self._logged_since_snapshot >= self.snapshot_every_events:
            self._snapshot()
        return added

    def _snapshot(self) -> None:
        self.snapshots.write(self.recommender.save)
        self.log.clear()
        self._logged_since_snapshot = 0

    # ------------------------------------------------------------ async API

    async def recommend(
        self, user_id: str | None, history: Any, k: int, exclude_seen: bool
    ) -> tuple[Recommended, float]:
        start = time.perf_counter()
        with self.in_flight, self.lane.admit():
            found = await self.lane.run(
                self.runner, self._recommend, user_id, history, k, exclude_seen
            )
        return found, (time.perf_counter() - start) * 1000

    async def add_events(self, events: list[dict[str, Any]]) -> int:
        """Log and apply the events; returns how many were new (not seen by event_id before)."""
        with self.in_flight:
            return await self.runner.write(self._add_events, events)

    async def close(self) -> None:
        """At shutdown: snapshot if anything was logged since the last snapshot, end the lane."""
        self.lane.shutdown()
        if self._logged_since_snapshot:
            await self.runner.write(self._snapshot)
