"""With nothing configured the service serves models:/ranking-demo@champion and
models:/sessionrec-demo@champion from the MLflow registry (what `make demo` registers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nlprec.service.config import ServiceConfig
from nlprec.service.models import ModelLoaders
from service_support import DOCUMENTS, EVENTS, auth, fake_loaders, fakes, running

pytestmark = pytest.mark.anyio


def register(directory: Path, name: str) -> str:
    from nlprec.core.tracking import Tracker

    tracker = Tracker()
    tracker.start_run(tracker.experiment_id("service-tests"), f"register-{name}", False, {})
    try:
        return tracker.log_model(directory, name=name, flavor="dir", alias="champion")
    finally:
        tracker.end_run("FINISHED")


async def test_default_config_serves_the_registered_demo_models(nlprec_env: Path):
    from nlprec.core.models import resolve

    fakes.FakeEngine(DOCUMENTS).save(nlprec_env / "ranking")
    fakes.FakeRecommender(EVENTS).save(nlprec_env / "sessionrec")
    assert register(nlprec_env / "ranking", "ranking-demo") == "models:/ranking-demo@champion"
    assert (
        register(nlprec_env / "sessionrec", "sessionrec-demo") == "models:/sessionrec-demo@champion"
    )

    fake = fake_loaders()
    loaders = ModelLoaders(resolve, fake.load_engine, fake.load_recommender, fake.make_event)
    config = (
        ServiceConfig()
    )  # the defaults: the demo models' registry URIs, state under NLPREC_HOME
    async with running(config, loaders) as client:
        ready = (await client.get("/ready", headers=auth())).json()
        assert ready["models"]["ranking"]["name"] == "ranking-demo@champion"
        assert ready["models"]["ranking"]["version"] == "1"
        results = (
            await client.post("/v1/search", json={"query": "statins", "mode": "bm25"})
        ).json()["results"]
        assert results[0]["id"] == "d3"
        assert (await client.post("/v1/recommend", json={"user_id": "u1"})).json()[
            "fallback"
        ] is False
    assert (nlprec_env / ".nlprec" / "service-state").is_dir()


async def test_unregistered_demo_models_say_how_to_get_them(nlprec_env: Path):
    import asyncio

    import httpx
    from nlprec.core.models import resolve
    from nlprec.service.app import create_app

    fake = fake_loaders()
    app = create_app(
        ServiceConfig(),
        ModelLoaders(resolve, fake.load_engine, fake.load_recommender, fake.make_event),
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://s"
        ) as client:
            for _ in range(3000):
                ready = (await client.get("/ready", headers=auth())).json()
                if all(m["state"] == "failed" for m in ready["models"].values()):
                    break
                await asyncio.sleep(0.01)
            assert ready["ready"] is False
            search = await client.post("/v1/search", json={"query": "x"})
            assert "run `make demo`" in search.json()["detail"]
            recommend = await client.post("/v1/recommend", json={"user_id": "u1"})
            assert "configure sessionrec_model" in recommend.json()["detail"]
