"""Search, rerank and index updates on a `nlprec.ranking` SearchEngine, served asynchronously.

Which call goes where:

- dense queries go through a micro-batcher: one `encode_queries` for the whole batch, then one
  `search_dense_vectors` with the largest k asked, each caller keeping its own top k;
- hybrid and bm25 queries go through a micro-batcher each, grouped by k, as one
  `search(queries, k, mode)` per group;
- reranked searches run `search(..., rerank=True)` one request at a time.

Every engine call holds `model_lane`, so the engine runs one call at a time: a Hugging Face fast
tokenizer must not be used from two threads at once (it raises "Already borrowed"), nor a
PyStemmer stemmer (not thread-safe), and on a small CPU two concurrent forward passes are no faster
than one after the other anyway; batching is what buys throughput. Document updates are writes:
they wait for running reads, run alone, and save the engine (atomically) before answering.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from nlprec.service.batching import BatcherFull, MicroBatcher
from nlprec.service.concurrency import ModelRunner
from nlprec.service.config import BatchingConfig
from nlprec.service.problems import ProblemError


class Engine(Protocol):
    """What the service needs of `nlprec.ranking.engine.SearchEngine`."""

    has_reranker: bool
    model_versions: dict[str, str]

    def search(
        self, queries: list[str], k: int, mode: str, rerank: bool = False
    ) -> list[list[Any]]: ...
    def encode_queries(self, queries: list[str]) -> np.ndarray: ...
    def search_dense_vectors(self, vectors: np.ndarray, k: int) -> list[list[Any]]: ...
    def rerank(self, query: str, documents: list[str]) -> list[float]: ...
    def document(self, doc_id: str) -> dict[str, str]: ...
    def add_documents(self, documents: list[dict[str, str]]) -> Any: ...
    def delete_document(self, doc_id: str) -> Any: ...
    def save(self, directory: str | Path) -> Any: ...


def _overloaded(detail: str) -> ProblemError:
    return ProblemError(
        503, "overloaded", f"overloaded: {detail}; retry later", {"Retry-After": "1"}
    )


@dataclass(frozen=True)
class ScoredDocument:
    id: str
    score: float
    title: str
    text: str


@dataclass(frozen=True)
class QueryItem:
    query: str
    k: int


class SearchBackend:
    def __init__(
        self,
        engine: Engine,
        runner: ModelRunner,
        batching: BatchingConfig,
        save_dir: Path,
        on_batch: Callable[[str, int], None] | None = None,
    ):
        self.engine, self.runner, self.save_dir = engine, runner, save_dir
        self.model_lane = asyncio.Lock()
        batch_options = {
            "max_batch_size": batching.max_batch_size,
            "max_wait_s": batching.max_wait_ms / 1000,
            "max_queue": batching.max_queue,
        }
        self.max_pending_reranks = batching.max_pending_reranks
        self._pending_reranks = 0
        processes = {
            "dense": self._dense_batch,
            "hybrid": functools.partial(self._search_batch, "hybrid"),
            "bm25": functools.partial(self._search_batch, "bm25"),
        }
        self.batchers: dict[str, MicroBatcher[QueryItem, list[ScoredDocument]]] = {
            mode: MicroBatcher(
                process,
                self._run_in_lane,
                on_batch=functools.partial(on_batch, mode) if on_batch else None,
                **batch_options,
            )
            for mode, process in processes.items()
        }

    @property
    def model_versions(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.engine.model_versions.items()}

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()

    # ------------------------------------------------------------ model calls (worker threads)

    def _documents(self, hits: Sequence[Any]) -> list[ScoredDocument]:
        found = []
        for hit in hits:
            document = self.engine.document(hit.doc_id)
            found.append(
                ScoredDocument(
                    hit.doc_id,
                    float(hit.score),
                    document.get("title", ""),
                    document.get("text", ""),
                )
            )
        return found

    def _dense_batch(self, items: list[QueryItem]) -> list[list[ScoredDocument]]:
        vectors = self.engine.encode_queries([item.query for item in items])  # (n_items, dim)
        deepest = max(item.k for item in items)
        hits = self.engine.search_dense_vectors(vectors, deepest)
        # The top k of an exact top-`deepest` list is the top k.
        return [self._documents(found[: item.k]) for item, found in zip(items, hits)]

    def _search_batch(self, mode: str, items: list[QueryItem]) -> list[list[ScoredDocument]]:
        # Fusion depth may depend on k, so only queries with the same k share a call.
        results: list[list[ScoredDocument] | None] = [None] * len(items)
        by_k: dict[int, list[int]] = {}
        for position, item in enumerate(items):
            by_k.setdefault(item.k, []).append(position)
        for k, positions in by_k.items():
            hits = self.engine.search([items[p].query for p in positions], k, mode)
            for position, found in zip(positions, hits):
                results[position] = self._documents(found)
        return results  # type: ignore[return-value]

    def _search_direct(
        self, queries: list[str], k: int, mode: str, rerank: bool
    ) -> list[list[ScoredDocument]]:
        return [
            self._documents(found) for found in self.engine.search(queries, k, mode, rerank=rerank)
        ]

    def _update_and_save(self, change: Callable[[], Any]) -> Any:
        result = change()
        self.engine.save(self.save_dir)  # atomic in the ranking package: no half-written index
        return result

    # ------------------------------------------------------------ async API (event loop)

    async def _run_in_lane(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self.model_lane:
            return await self.runner.read(fn, *args)

    async def _rerank_lane(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The model lane for cross-encoder calls (seconds each on a CPU), with load shedding."""
        if self._pending_reranks >= self.max_pending_reranks:
            raise _overloaded(f"{self._pending_reranks} reranking requests are already waiting")
        self._pending_reranks += 1
        try:
            return await self._run_in_lane(fn, *args)
        finally:
            self._pending_reranks -= 1

    def _require_reranker(self) -> None:
        if not self.engine.has_reranker:
            raise ProblemError(
                409, "no-reranker", "the loaded ranking model has no reranker; use rerank=false"
            )

    async def search_many(
        self, queries: list[str], k: int, mode: str, rerank: bool
    ) -> tuple[list[list[ScoredDocument]], float]:
        """Results per query and the milliseconds spent waiting for and in model calls."""
        start = time.perf_counter()
        if rerank:
            self._require_reranker()
            results = await self._rerank_lane(self._search_direct, queries, k, mode, True)
        else:
            batcher = self.batchers[mode]
            try:
                results = list(
                    await asyncio.gather(*(batcher.submit(QueryItem(q, k)) for q in queries))
                )
            except BatcherFull as full:
                raise _overloaded(str(full)) from full
        return results, (time.perf_counter() - start) * 1000

    async def rerank(self, query: str, documents: list[str]) -> tuple[list[float], float]:
        self._require_reranker()
        start = time.perf_counter()
        scores = await self._rerank_lane(self.engine.rerank, query, documents)
        return [float(s) for s in scores], (time.perf_counter() - start) * 1000

    def _add_new_documents(self, documents: list[dict[str, str]]) -> Any:
        taken = [d["id"] for d in documents if self._exists(d["id"])]
        if taken:
            detail = f"document ids already in the index: {taken[:5]}; DELETE them first to replace"
            raise ProblemError(409, "document-exists", detail)
        try:
            return self.engine.add_documents(documents)
        except ValueError as invalid:  # the ranking package's DataError names what is wrong
            raise ProblemError(422, "invalid-documents", str(invalid)) from invalid

    def _exists(self, doc_id: str) -> bool:
        try:
            self.engine.document(doc_id)
        except KeyError:
            return False
        return True

    async def add_documents(self, documents: list[dict[str, str]]) -> None:
        await self.runner.write(self._update_and_save, lambda: self._add_new_documents(documents))

    async def delete_document(self, doc_id: str) -> None:
        try:
            await self.runner.write(
                self._update_and_save, lambda: self.engine.delete_document(doc_id)
            )
        except KeyError as missing:
            raise ProblemError(
                404, "unknown-document", f"no document with id {doc_id!r}"
            ) from missing
