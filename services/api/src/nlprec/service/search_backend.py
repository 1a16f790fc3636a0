"""Search, rerank and index updates on a `nlprec.ranking` SearchEngine, served asynchronously.

Which call goes where (lanes: `nlprec.service.lanes`):

- dense queries go through a micro-batcher: one `encode_queries` for the whole batch, then one
  `search_dense_vectors` with the largest k asked, each caller keeping its own top k;
- hybrid and bm25 queries go through a micro-batcher each, grouped by k, as one
  `search(queries, k, mode)` per group;
- those batches run in the *search lane* (BM25 and the bi-encoder, one call at a time);
- a reranked search takes its first stage (at the engine's rerank depth) through the same
  batchers, then scores the candidates with the cross-encoder in the *rerank lane*, and blends the
  scores as the engine does (`nlprec.ranking.rerank.rerank_at_depth`). The cross-encoder's seconds
  per call therefore never hold up plain searches, and its admitted backlog is small.

Document updates are writes: they wait for running reads and run alone. A write costs what it
writes, not the corpus: the change is applied to the engine in memory (FAISS `add`; BM25 keeps
added documents in a delta that the ranking package folds into its index in the background) and
appended, fsynced, to `documents.jsonl` before the answer. Every `compact_every_documents` logged
documents (and at shutdown) a checkpoint saves the engine: `snapshot` copies its state in memory
while writes wait (a memory copy), the copy is written with reads and writes going on, then the
log loses the records the copy holds (those appended meanwhile stay). On start the saved engine
is loaded and the log replayed (`replay_documents`), skipping what the saved engine already holds,
so a crash between the save and the log's trim only replays records that change nothing.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from nlprec.ranking.rerank import rerank_at_depth
from nlprec.service.batching import MicroBatcher
from nlprec.service.concurrency import InFlight, ModelRunner
from nlprec.service.config import AdmissionConfig, BatchingConfig
from nlprec.service.lanes import Lane
from nlprec.service.problems import ProblemError
from nlprec.service.state import EventLog


class RerankSettings(Protocol):
    rerank_depth: int  # candidates the cross-encoder scores per query
    rerank_alpha: float  # weight of the cross-encoder against the first stage


class Engine(Protocol):
    """What the service needs of `nlprec.ranking.engine.SearchEngine`."""

    has_reranker: bool
    model_versions: dict[str, str]
    settings: RerankSettings

    def search(self, queries: list[str], k: int, mode: str) -> list[list[Any]]: ...
    def encode_queries(self, queries: list[str]) -> np.ndarray: ...
    def search_dense_vectors(self, vectors: np.ndarray, k: int) -> list[list[Any]]: ...
    def rerank(self, query: str, documents: list[str]) -> list[float]: ...
    def document(self, doc_id: str) -> dict[str, str]: ...
    def add_documents(self, documents: list[dict[str, str]]) -> Any: ...
    def delete_document(self, doc_id: str) -> Any: ...
    def snapshot(self) -> Callable[[Path], Any]: ...


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
        admission: AdmissionConfig,
        save_dir: Path,
        on_batch: Callable[[str, int], None] | None = None,
        compact_every: int = 1000,
        threads: int | None = None,
        wide: tuple[int, int] | None = None,
    ):
        self.engine, self.runner, self.save_dir = engine, runner, save_dir
        self.log = EventLog(document_log_path(save_dir))
        self.compact_every = compact_every
        self._logged = len(self.log)
        self._compacting: asyncio.Task | None = None
        self.in_flight = InFlight()  # calls in progress (a replaced backend waits for none)
        self.search_lane = Lane("search", admission.search_queue, threads, wide)
        self.rerank_lane = Lane("rerank", admission.rerank_queue, threads)
        processes = {
            "dense": self._dense_batch,
            "hybrid": functools.partial(self._search_batch, "hybrid"),
            "bm25": functools.partial(self._search_batch, "bm25"),
        }
        self.batchers: dict[str, MicroBatcher[QueryItem, list[ScoredDocument]]] = {
            mode: MicroBatcher(
                process,
                self._run_in_search_lane,
                max_batch_size=batching.max_batch_size,
                max_wait_s=batching.max_wait_ms / 1000,
                on_batch=functools.partial(on_batch, mode) if on_batch else None,
            )
            for mode, process in processes.items()
        }

    @property
    def model_versions(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.engine.model_versions.items()}

    async def stop(self) -> None:
        """Finish the queued batches, compact the document log, then end the lanes' threads."""
        for batcher in self.batchers.values():
            await batcher.stop()
        if self._compacting is not None:
            await self._compacting
        if self._logged:
            await self._checkpoint()
        for lane in (self.search_lane, self.rerank_lane):
            lane.shutdown()

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

    def _rerank_batch(
        self, queries: list[str], candidates: list[list[ScoredDocument]], k: int
    ) -> list[list[ScoredDocument]]:
        """Cross-encoder scores for each query's first-stage candidates, blended as the engine's
        own `search(..., rerank=True)` does, cut to k."""
        settings = self.engine.settings
        results = []
        for query, found in zip(queries, candidates):
            top = found[: settings.rerank_depth]
            if not top:
                results.append([])
                continue
            texts = [f"{d.title} {d.text}".strip() for d in top]  # what the engine indexes
            scores = self.engine.rerank(query, texts)
            reranked = {"q": {d.id: float(s) for d, s in zip(top, scores)}}
            first_stage = {"q": {d.id: d.score for d in found}}
            blended = rerank_at_depth(
                reranked, first_stage, settings.rerank_depth, settings.rerank_alpha
            )["q"]
            by_id = {d.id: d for d in found}
            ranked = sorted(blended.items(), key=lambda item: -item[1])[:k]
            results.append([replace(by_id[i], score=float(score)) for i, score in ranked])
        return results

    def _update_and_log(self, change: Callable[[], Any], record: dict[str, Any]) -> Any:
        result = change()  # validates before it changes anything
        self.log.append([record])  # durable before the answer
        self._logged += len(record.get("documents", [None]))
        return result

    def _snapshot(self) -> tuple[Callable[[Path], Any], int, int]:
        """The engine's state copied in memory, the log's size in bytes and documents logged."""
        return self.engine.snapshot(), self.log.size(), self._logged

    def _trim_log(self, offset: int, documents: int) -> None:
        self.log.drop_before(offset)
        self._logged -= documents

    async def _checkpoint(self) -> None:
        """Save the engine without holding writes up for the save itself: copy its state (as a
        read: writes wait, searches go on), write the copy in a worker thread (no lock), then
        drop from the log what the copy holds (as a read: no append runs meanwhile)."""
        write, offset, documents = await self.runner.read(self._snapshot)
        await asyncio.to_thread(write, self.save_dir)
        await self.runner.read(self._trim_log, offset, documents)

    def _maybe_compact(self) -> None:
        if self._logged >= self.compact_every and (
            self._compacting is None or self._compacting.done()
        ):
            self._compacting = asyncio.create_task(self._checkpoint())

    # ------------------------------------------------------------ async API (event loop)

    async def _run_in_search_lane(self, fn: Callable[..., Any], items: list[Any]) -> Any:
        return await self.search_lane.run(self.runner, fn, items, items=len(items))

    def _require_reranker(self) -> None:
        if not self.engine.has_reranker:
            raise ProblemError(
                409, "no-reranker", "the loaded ranking model has no reranker; use rerank=false"
            )

    async def _first_stage(self, queries: list[str], k: int, mode: str) -> list[Any]:
        batcher = self.batchers[mode]
        return list(await asyncio.gather(*(batcher.submit(QueryItem(q, k)) for q in queries)))

    async def search_many(
        self, queries: list[str], k: int, mode: str, rerank: bool
    ) -> tuple[list[list[ScoredDocument]], float]:
        """Results per query and the milliseconds spent waiting for and in model calls."""
        with self.in_flight:
            return await self._search_many(queries, k, mode, rerank)

    async def _search_many(
        self, queries: list[str], k: int, mode: str, rerank: bool
    ) -> tuple[list[list[ScoredDocument]], float]:
        start = time.perf_counter()
        if not rerank:
            with self.search_lane.admit(len(queries)):
                results = await self._first_stage(queries, k, mode)
            return results, (time.perf_counter() - start) * 1000
        self._require_reranker()
        depth = max(k, self.engine.settings.rerank_depth)
        with self.rerank_lane.admit():  # the scarce lane first: refuse before any work is done
            with self.search_lane.admit(len(queries)):
                candidates = await self._first_stage(queries, depth, mode)
            results = await self.rerank_lane.run(
                self.runner, self._rerank_batch, queries, candidates, k
            )
        return results, (time.perf_counter() - start) * 1000

    async def rerank(self, query: str, documents: list[str]) -> tuple[list[float], float]:
        self._require_reranker()
        start = time.perf_counter()
        with self.in_flight, self.rerank_lane.admit():
            scores = await self.rerank_lane.run(self.runner, self.engine.rerank, query, documents)
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
        with self.in_flight:
            await self.runner.write(
                self._update_and_log,
                lambda: self._add_new_documents(documents),
                {"op": "add", "documents": documents},
            )
            self._maybe_compact()

    async def delete_document(self, doc_id: str) -> None:
        with self.in_flight:
            await self._delete_document(doc_id)

    async def _delete_document(self, doc_id: str) -> None:
        try:
            await self.runner.write(
                self._update_and_log,
                lambda: self.engine.delete_document(doc_id),
                {"op": "delete", "id": doc_id},
            )
            self._maybe_compact()
        except KeyError as missing:
            raise ProblemError(
                404, "unknown-document", f"no document with id {doc_id!r}"
            ) from missing


def document_log_path(save_dir: Path) -> Path:
    return Path(save_dir).parent / "documents.jsonl"


def replay_documents(engine: Engine, save_dir: Path) -> int:
    """Apply the logged document writes the saved engine does not hold yet; returns how many."""
    applied = 0
    for record in EventLog(document_log_path(save_dir)).read():
        if record.get("op") == "add":
            new = [d for d in record["documents"] if not _holds(engine, d["id"])]
            if new:
                engine.add_documents(new)
                applied += len(new)
        elif record.get("op") == "delete" and _holds(engine, record["id"]):
            engine.delete_document(record["id"])
            applied += 1
    return applied


def _holds(engine: Engine, doc_id: str) -> bool:
    try:
        engine.document(doc_id)
    except KeyError:
        return False
    return True
