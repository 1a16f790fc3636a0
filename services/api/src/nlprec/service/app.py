"""The FastAPI application: `create_app(config)`.

Lifespan: on start, the models begin loading in the background (`/ready` is 503 until they are
in); on shutdown (after uvicorn has let in-flight requests finish), queued micro-batches are
drained, the recommender is snapshotted and the model threads stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from importlib.resources import files

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from nlprec.service.auth import require_any_token
from nlprec.service.body_limit import BodyLimitMiddleware
from nlprec.service.config import ServiceConfig, load_config
from nlprec.service.metrics import MetricsMiddleware, ServiceMetrics
from nlprec.service.models import ModelLoaders, ServedModels
from nlprec.service.problems import install_problem_handlers
from nlprec.service.routes import api_router, readiness_response
from nlprec.service.schemas import Health, Readiness, request_models

logger = logging.getLogger("nlprec.service")


def _page() -> str:
    return files("nlprec.service").joinpath("static/index.html").read_text()


def create_app(config: ServiceConfig | None = None, loaders: ModelLoaders | None = None) -> FastAPI:
    """An app serving `config`'s models; `loaders` replaces the real model packages (tests)."""
    config = config or ServiceConfig()
    metrics = ServiceMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served = ServedModels(config, metrics, loaders)
        app.state.models = served
        loading = asyncio.create_task(served.load(), name="load-models")
        watching = None
        if config.watch_registry_s and served.watches_registry:
            watching = asyncio.create_task(served.watch(config.watch_registry_s), name="watch")
        try:
            yield
        finally:
            if watching is not None:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            await loading  # a shutdown during loading waits for the load to end
            await served.close()

    app = FastAPI(
        title="nlprec service",
        version="0.1.0",
        summary="Retrieval (BM25, dense, hybrid, rerank) and next-item recommendation",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.metrics = metrics
    install_problem_handlers(app)
    app.include_router(api_router(request_models(config.limits), config.read_token is not None))
    # Outermost last: metrics see every request, including those the body limit refuses.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/health", tags=["operations"])
    async def health() -> Health:
        """Liveness: the process answers."""
        return Health()

    @app.get(
        "/ready",
        tags=["operations"],
        response_model=Readiness,
        dependencies=[Depends(require_any_token)],
        responses={
            503: {"model": Readiness, "description": "some model is not loaded (yet)"},
            401: {"description": "a token is configured and none valid was sent"},
        },
    )
    async def ready(request: Request) -> JSONResponse:
        """Readiness: 200 once every configured model is loaded, 503 before (or if one failed).
        Names and versions only; with a token configured it needs one (read or write)."""
        return readiness_response(request.app.state.models)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus_metrics() -> Response:
        """Prometheus exposition: request counts and latencies, batch sizes, model versions."""
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page())

    return app


RESOLVED_CONFIG_ENV = "NLPREC_SERVICE_CONFIG_JSON"


def app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory` (what `nlprec-serve` runs in each worker process).

    `nlprec-serve` puts its resolved configuration in $NLPREC_SERVICE_CONFIG_JSON so every worker
    serves exactly what the command line said; without it, the file and environment are read.
    """
    resolved = os.environ.get(RESOLVED_CONFIG_ENV)
    return create_app(ServiceConfig.model_validate_json(resolved) if resolved else load_config())
