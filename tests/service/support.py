"""Helpers for the service tests: fake models, an app with its lifespan on an ASGI client.

conftest.py loads this file as the module `service_support`, so tests `from service_support import ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from nlprec.service.app import create_app
from nlprec.service.config import ServiceConfig
from nlprec.service.models import ModelLoaders


def _load_sibling(name: str, filename: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(filename))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fakes = sys.modules.get("service_fakes") or _load_sibling("service_fakes", "fakes.py")

TOKEN = "test-write-token"
DOCUMENTS = [
    {
        "id": "d1",
        "title": "Vitamin D",
        "text": "Vitamin D deficiency is linked to bone fractures in the elderly.",
    },
    {
        "id": "d2",
        "title": "Protein folding",
        "text": "Chaperone proteins assist protein folding in the cell.",
    },
    {
        "id": "d3",
        "title": "Statins",
        "text": "Statins lower cholesterol and reduce cardiovascular events.",
    },
    {
        "id": "d4",
        "title": "Sleep",
        "text": "Sleep deprivation impairs memory consolidation and attention.",
    },
    {
        "id": "d5",
        "title": "Exercise",
        "text": "Aerobic exercise improves cardiovascular fitness and memory.",
    },
    {
        "id": "d6",
        "title": "Bone density",
        "text": "Calcium and vitamin D supplements increase bone density.",
    },
]
EVENTS = [
    {"user_id": "u1", "item": "milk", "timestamp": 1.0, "event_id": "e1"},
    {"user_id": "u1", "item": "bread", "timestamp": 2.0, "event_id": "e2"},
    {"user_id": "u2", "item": "milk", "timestamp": 3.0, "event_id": "e3"},
    {"user_id": "u2", "item": "eggs", "timestamp": 4.0, "event_id": "e4"},
]


def fake_loaders() -> ModelLoaders:
    return ModelLoaders(
        resolve=lambda source: Path(source),
        load_engine=fakes.FakeEngine.load,
        load_recommender=fakes.FakeRecommender.load,
        make_event=fakes.FakeEvent,
    )


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (await client.get("/ready", headers=auth())).status_code != 200:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError((await client.get("/ready", headers=auth())).text)
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    config: ServiceConfig, loaders: ModelLoaders | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started (models loaded) and an httpx client on its ASGI transport."""
    app = create_app(config, loaders or fake_loaders())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            client.app = app  # tests reach the models through client.app.state.models
            await wait_ready(client)
            yield client


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def build_real_models(root: Path) -> dict[str, Path]:
    """A tiny real SearchEngine (MiniLM bi-encoder, MiniLM-initialised cross-encoder) and
    OnlineRecommender, saved under `root`. Callers skip when the packages are missing."""
    import numpy as np
    from nlprec.ranking.dense import DenseConfig, DenseRetriever
    from nlprec.ranking.engine import SearchEngine
    from nlprec.ranking.rerank import CrossEncoderReranker, RerankerConfig
    from nlprec.sessionrec.online import OnlineRecommender

    reranker = CrossEncoderReranker(RerankerConfig(model="minilm", max_length=64))
    engine = SearchEngine.build(
        DOCUMENTS, DenseRetriever(DenseConfig(model="minilm")), reranker=reranker
    )
    engine.save(root / "ranking")
    items = ["milk", "bread", "eggs", "tea", "coffee"]
    user_events: dict[str, list[tuple[float, str]]] = {}
    for event in EVENTS:
        user_events.setdefault(event["user_id"], []).append((event["timestamp"], event["item"]))
    recommender = OnlineRecommender(
        items, np.array([5.0, 4.0, 3.0, 2.0, 1.0]), user_events, {e["event_id"] for e in EVENTS}
    )
    recommender.save(root / "sessionrec")
    return {"ranking": root / "ranking", "sessionrec": root / "sessionrec"}
