"""Micro-batching: concurrent requests share one model call.

Encoding one short query with MiniLM costs nearly as much as encoding thirty (the matrix products
are tiny and the per-call overhead dominates on CPU), so under load the service gathers the
queries that arrive together and encodes them in one call. The rule, per batcher:

1. a worker task waits for the first queued item;
2. it then takes whatever else is queued, and waits at most `max_wait_s` for more, until the
   batch holds `max_batch_size` items;
3. it runs `process(items)` through `run` (off the event loop) and hands each caller its result.

While one batch runs, new arrivals queue up and form the next batch, so the wait in step 2 only
costs latency when the service is nearly idle. `max_batch_size=1` is the unbatched reference:
every item is processed alone, in arrival order. The queue itself is unbounded: callers bound the
work they admit (`nlprec.service.lanes`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

BatchRunner = Callable[
    [Callable[[list[Item]], Sequence[Result]], list[Item]], Awaitable[Sequence[Result]]
]


class BatcherClosed(RuntimeError):
    """The batcher was stopped; no more items are accepted."""


class MicroBatcher(Generic[Item, Result]):
    """Gathers concurrent `submit` calls into batches for one `process(items) -> results` call."""

    def __init__(
        self,
        process: Callable[[list[Item]], Sequence[Result]],
        run: BatchRunner,
        *,
        max_batch_size: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.process, self.run = process, run
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.on_batch = on_batch
        # None is the stop sentinel: queued after every accepted item, so those finish first.
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]] | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name="micro-batcher"
            )

    async def submit(self, item: Item) -> Result:
        """Queue one item and wait for its result (or the exception its batch raised)."""
        if self._closed:
            raise BatcherClosed("the service is shutting down")
        self.start()
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def stop(self) -> None:
        """Finish every accepted item (queued or running), then stop the worker."""
        self._closed = True
        if self._worker is None:
            return
        await self._queue.put(None)
        await self._worker
        self._worker = None

    async def _collect(self) -> tuple[list[tuple[Item, asyncio.Future[Result]]], bool]:
        """The next batch, and whether the stop sentinel was reached."""
        first = await self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    entry = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                entry = self._queue.get_nowait()
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    async def _work(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = await self._collect()
            # A caller that gave up (client disconnected) no longer needs its item processed.
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            if self.on_batch is not None:
                self.on_batch(len(live))
            items = [item for item, _ in live]
            try:
                results = await self.run(self.process, items)
                if len(results) != len(items):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(items)} items"
                    )
            except Exception as error:  # every caller of this batch sees the failure
                for _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(live, results):
                if not future.done():
                    future.set_result(result)
