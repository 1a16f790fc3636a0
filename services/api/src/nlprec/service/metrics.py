"""Prometheus metrics: request counts and latencies per route, batch sizes, model versions.

Each app gets its own `CollectorRegistry`, so several apps (tests) can live in one process.
With `workers > 1` every worker process exposes its own counters (scrape each, or run one).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS_S = (
    0.002,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nlprec_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nlprec_http_request_duration_seconds",
            "Time from request start to the end of the response body",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "nlprec_http_requests_in_flight", "Requests being answered now", registry=self.registry
        )
        self.batch_size = Histogram(
            "nlprec_batch_size",
            "Items per micro-batched model call",
            ["batcher"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "nlprec_model_info",
            "1 for each loaded model component and its version",
            ["model", "component", "version"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "nlprec_model_ready", "1 once the model is loaded", ["model"], registry=self.registry
        )
        self.events = Counter(
            "nlprec_events",
            "Events received, by outcome (new or duplicate)",
            ["outcome"],
            registry=self.registry,
        )

    def set_model_versions(self, model: str, versions: dict[str, str]) -> None:
        for component, version in versions.items():
            self.model_info.labels(model=model, component=component, version=str(version)).set(1)
        self.model_ready.labels(model=model).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _route_template(scope: Scope) -> str:
    # The matched route's template ("/v1/documents/{doc_id}") keeps label cardinality bounded.
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer bodies and break cancellation)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            route, method = _route_template(scope), scope["method"]
            self.metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            self.metrics.latency.labels(route=route, method=method).observe(
                time.perf_counter() - start
            )
