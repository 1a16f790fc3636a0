"""The /v1 endpoints. Request bodies come from `request_models(limits)`, so routes are built per app.

(No `from __future__ import annotations` here: FastAPI must see the request classes themselves,
which are local to `api_router`, not their names.)
"""

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from nlprec.service.auth import require_read, require_write
from nlprec.service.models import ServedModels
from nlprec.service.problems import problem_responses
from nlprec.service.schemas import (
    BatchSearchResponse,
    DeletedResponse,
    DocumentsResponse,
    EventsResponse,
    Readiness,
    RecommendedItem,
    RecommendResponse,
    ReloadResponse,
    RequestModels,
    RerankResponse,
    SearchResponse,
    SearchResult,
    Timings,
)
from nlprec.service.search_backend import ScoredDocument

SNIPPET_CHARS = 240
# 400: a body that is not UTF-8 JSON at all; 413: over limits.max_body_bytes; 503: still loading.
READ_ERRORS = problem_responses(400, 401, 404, 409, 413, 422, 503)
WRITE_ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 503)


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The start of `text`, cut at a word boundary when it is longer than `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    boundary = cut.rfind(" ")
    return (cut[:boundary] if boundary > limit // 2 else cut) + "…"


def _results(found: list[ScoredDocument]) -> list[SearchResult]:
    return [
        SearchResult(id=d.id, score=d.score, title=d.title, snippet=snippet(d.text)) for d in found
    ]


def _timings(start: float, model_ms: float) -> Timings:
    return Timings(total_ms=(time.perf_counter() - start) * 1000, model_ms=model_ms)


def _served(request: Request) -> ServedModels:
    return request.app.state.models


async def _search(request: Request, queries: list[str], k: int, mode: str, rerank: bool) -> dict:
    """The fields of a search response, with one result list per query."""
    start = time.perf_counter()
    backend = _served(request).require_search()
    found, model_ms = await backend.search_many(queries, k, mode, rerank)
    return {
        "results": [_results(per_query) for per_query in found],
        "mode": mode,
        "rerank": rerank,
        "model_versions": backend.model_versions,
        "timings": _timings(start, model_ms),
    }


def api_router(models: RequestModels, reads_need_token: bool) -> APIRouter:
    """The /v1 routes; reads declare (and check) the bearer token only when one is configured."""
    router = APIRouter(prefix="/v1")
    read_checks = [Depends(require_read)] if reads_need_token else []
    reads = {"dependencies": read_checks, "responses": READ_ERRORS}
    writes = {"dependencies": [Depends(require_write)], "responses": WRITE_ERRORS}

    @router.post("/search", tags=["search"], **reads)
    async def search(body: models.search, request: Request) -> SearchResponse:
        """Top-k documents for one query: bm25, dense or hybrid retrieval, optionally reranked."""
        fields = await _search(request, [body.query], body.k, body.mode, body.rerank)
        return SearchResponse(**{**fields, "results": fields["results"][0]})

    @router.post("/search/batch", tags=["search"], **reads)
    async def search_batch(body: models.batch_search, request: Request) -> BatchSearchResponse:
        """Several queries at once; one result list per query, in order."""
        return BatchSearchResponse(
            **await _search(request, body.queries, body.k, body.mode, body.rerank)
        )

    @router.post("/rerank", tags=["search"], **reads)
    async def rerank(body: models.rerank, request: Request) -> RerankResponse:
        """Cross-encoder relevance of each given document to the query."""
        start = time.perf_counter()
        backend = _served(request).require_search()
        scores, model_ms = await backend.rerank(body.query, body.documents)
        ranking = sorted(range(len(scores)), key=lambda i: -scores[i])
        return RerankResponse(
            scores=scores,
            ranking=ranking,
            model_versions=backend.model_versions,
            timings=_timings(start, model_ms),
        )

    @router.post("/recommend", tags=["recommend"], **reads)
    async def recommend(body: models.recommend, request: Request) -> RecommendResponse:
        """Next items for a known user, or for a pasted history of baskets."""
        start = time.perf_counter()
        backend = _served(request).require_recommend()
        found, model_ms = await backend.recommend(
            body.user_id, body.history, body.k, body.exclude_seen
        )
        return RecommendResponse(
            items=[RecommendedItem(item=i, score=s, repeat=r) for i, s, r in found.items],
            fallback=found.fallback,
            notes=found.notes,
            model_version=backend.model_version,
            timings=_timings(start, model_ms),
        )

    @router.post("/events", tags=["recommend"], **writes)
    async def add_events(body: models.events, request: Request) -> EventsResponse:
        """Append listening or basket events; a repeated event_id is ignored."""
        backend = _served(request).require_recommend()
        events = [event.model_dump() for event in body.events]
        added = await backend.add_events(events)
        _served(request).metrics.events.labels(outcome="new").inc(added)
        _served(request).metrics.events.labels(outcome="duplicate").inc(len(events) - added)
        return EventsResponse(received=len(events), added=added, duplicates=len(events) - added)

    @router.post("/documents", tags=["documents"], status_code=201, **writes)
    async def add_documents(body: models.documents, request: Request) -> DocumentsResponse:
        """Add new documents (an id already indexed is a 409); saved before the answer."""
        backend = _served(request).require_search()
        documents = [document.model_dump() for document in body.documents]
        await backend.add_documents(documents)
        return DocumentsResponse(added=len(documents), ids=[d["id"] for d in documents])

    @router.post("/admin/reload", tags=["operations"], **writes)
    async def reload(request: Request) -> ReloadResponse:
        """Resolve every model source again and swap in the models whose alias moved."""
        served = _served(request)
        changed = await served.reload()
        return ReloadResponse(swapped=changed, models=served.status)

    @router.delete("/documents/{doc_id}", tags=["documents"], **writes)
    async def delete_document(doc_id: str, request: Request) -> DeletedResponse:
        """Remove a document from the index; saved before the answer."""
        await _served(request).require_search().delete_document(doc_id)
        return DeletedResponse(deleted=doc_id)

    return router


def readiness_response(served: ServedModels) -> JSONResponse:
    body = Readiness(ready=served.ready, models=served.status)
    return JSONResponse(body.model_dump(), status_code=200 if served.ready else 503)
