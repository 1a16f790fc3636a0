"""Model work off the event loop: a thread pool guarded by a readers-writer lock.

Searches and recommendations read a model and may run side by side; index updates and event
writes change it and run alone. The lock lives on the event loop (asyncio), so waiting for it
never blocks a thread, and the model call itself runs in a worker thread (torch, faiss and numpy
release the GIL), so the event loop keeps answering /health while a model computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


class AsyncReadWriteLock:
    """Many readers or one writer; a waiting writer stops new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._condition = asyncio.Condition()
        self._readers = 0
        self._writer_active = False
        self._writers_waiting = 0

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        async with self._condition:
            await self._condition.wait_for(
                lambda: not self._writer_active and self._writers_waiting == 0
            )
            self._readers += 1
        try:
            yield
        finally:
            async with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        async with self._condition:
            self._writers_waiting += 1
            try:
                await self._condition.wait_for(
                    lambda: not self._writer_active and self._readers == 0
                )
            finally:
                self._writers_waiting -= 1
            self._writer_active = True
        try:
            yield
        finally:
            async with self._condition:
                self._writer_active = False
                self._condition.notify_all()


class ModelRunner:
    """Runs calls on one model in threads: `read` calls share, `write` calls are exclusive.

    `executor` is where calls run unless the caller names another (each lane has its own thread).
    """

    def __init__(self, executor: Executor):
        self.executor = executor
        self.lock = AsyncReadWriteLock()

    async def _in_thread(self, executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor or self.executor, functools.partial(fn, *args))

    async def _read(self, executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
        async with self.lock.reading():
            return await self._in_thread(executor, fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        async with self.lock.writing():
            return await self._in_thread(None, fn, *args)

    # The locked call runs in its own task, shielded from the caller: if a client goes away,
    # the thread still finishes its work while holding the lock (a write is never half-left,
    # and no reader slips in beside a write that is still running).
    async def read(self, fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> T:
        return await asyncio.shield(asyncio.ensure_future(self._read(executor, fn, *args)))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.shield(asyncio.ensure_future(self._write(fn, *args)))


class InFlight:
    """Counts calls in progress (`with in_flight:`); a replaced backend is stopped at zero."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
