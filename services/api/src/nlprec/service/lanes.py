"""Model lanes and admission control.

Each model the service runs (the first stage: BM25 and the bi-encoder; the cross-encoder; the
recommender) has its own *lane*: one worker thread that runs that model's calls one at a time,
and a bound on the work admitted to the lane (running or waiting). A request that would pass the
bound is refused at once with 503 `overloaded` and a `Retry-After` estimated from the lane's
backlog, instead of joining a queue that only grows. So a slow lane (a cross-encoder call costs
seconds on a CPU) keeps its own waiting time bounded and never holds up the other lanes.

Why one thread per lane: a Hugging Face fast tokenizer must not be used from two threads at once
("Already borrowed"), nor a PyStemmer stemmer, and on a small CPU two forward passes of one model
side by side are no faster than one after the other; micro-batching is what buys throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from nlprec.core.threads import set_threads
from nlprec.service.concurrency import ModelRunner
from nlprec.service.problems import ProblemError

T = TypeVar("T")
SMOOTHING = 0.2  # weight of the newest call in the running mean of seconds per item
MAX_RETRY_AFTER_S = 60


def _with_threads(threads: int | None, fn: Callable[..., T], *args: Any) -> T:
    set_threads(threads)
    return fn(*args)


class LaneFull(ProblemError):
    """503 overloaded: the lane already holds its bound of admitted work."""

    def __init__(self, lane: str, pending: int, limit: int, retry_after_s: int):
        detail = (
            f"overloaded: the {lane} lane already holds {pending} of its {limit} admitted "
            f"requests (admission.{lane}_queue); retry in {retry_after_s} s"
        )
        super().__init__(503, "overloaded", detail, {"Retry-After": str(retry_after_s)})


class Lane:
    """One model's worker thread, with a bound on the work admitted to it."""

    def __init__(
        self,
        name: str,
        max_pending: int,
        threads: int | None = None,
        wide: tuple[int, int] | None = None,
    ):
        """`threads`: torch/FAISS threads for the lane's calls (None: the libraries' default).
        `wide` = (threads, items): calls of at least that many items use that many threads
        (a large batch keeps several cores busy; a small call would only spin them)."""
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.name, self.max_pending = name, max_pending
        self.threads, self.wide = threads, wide
        self.pending = 0  # items admitted and not finished (running or waiting)
        # torch keeps a thread's own setting once the thread has used it, so each lane's thread
        # sets its cap as it starts (one thread per call: 4x less CPU per query encoding than two
        # on the loaded 2-core machine)
        self.executor = ThreadPoolExecutor(
            1, thread_name_prefix=f"nlprec-{name}", initializer=set_threads, initargs=(threads,)
        )
        self.seconds_per_item = 0.0  # running mean over recent calls
        self._turn: asyncio.Lock | None = None  # created on the event loop at first use

    def retry_after_s(self) -> int:
        """Seconds until the backlog is likely worked off (at least 1, at most a minute)."""
        backlog_s = self.pending * self.seconds_per_item
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(backlog_s)))

    @contextlib.contextmanager
    def admit(self, items: int = 1) -> Iterator[None]:
        """Hold `items` of the lane's bound for the duration, or raise LaneFull (503) at once."""
        if self.pending + items > self.max_pending:
            raise LaneFull(self.name, self.pending, self.max_pending, self.retry_after_s())
        self.pending += items
        try:
            yield
        finally:
            self.pending -= items

    async def run(self, runner: ModelRunner, fn: Callable[..., T], *args: Any, items: int = 1) -> T:
        """`fn(*args)` on the lane's thread, after the lane's earlier calls, as a read of `runner`."""
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            start = time.perf_counter()
            if self.wide is not None:
                threads = self.wide[0] if items >= self.wide[1] else self.threads
                fn = functools.partial(_with_threads, threads, fn)
            result = await runner.read(fn, *args, executor=self.executor)
            self._observe((time.perf_counter() - start) / max(items, 1))
        return result

    def _observe(self, seconds_per_item: float) -> None:
        if self.seconds_per_item == 0.0:
            self.seconds_per_item = seconds_per_item
        else:
            self.seconds_per_item += SMOOTHING * (seconds_per_item - self.seconds_per_item)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)
