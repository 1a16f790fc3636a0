"""The service follows the registry: a moved alias is swapped in (by polling or by an
authenticated reload) while requests keep being answered; /ready names versions, needs a token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nlprec.service.models import ModelLoaders
from service_support import DOCUMENTS, EVENTS, auth, fake_loaders, fakes, running

pytestmark = pytest.mark.anyio


def switchable_loaders(targets: dict[str, Path]) -> ModelLoaders:
    """Loaders whose resolve follows `targets` (as a registry alias would)."""
    base = fake_loaders()
    return ModelLoaders(
        lambda source: targets.get(source, Path(source)),
        base.load_engine,
        base.load_recommender,
        base.make_event,
    )


@pytest.fixture
def two_engines(tmp_path) -> tuple[Path, Path]:
    fakes.FakeEngine(DOCUMENTS).save(tmp_path / "v1")
    fakes.FakeEngine(DOCUMENTS[:3], delay_s=0.01).save(tmp_path / "v2")
    fakes.FakeRecommender(EVENTS).save(tmp_path / "online")
    return tmp_path / "v1", tmp_path / "v2"


async def _search_until(client, stop: asyncio.Event) -> list[int]:
    codes = []
    while not stop.is_set():
        response = await client.post("/v1/search", json={"query": "bone density", "mode": "dense"})
        codes.append(response.status_code)
    return codes


async def test_reload_swaps_the_moved_model_without_failing_a_request(two_engines, make_config, tmp_path):
    v1, v2 = two_engines
    targets = {"models:/ranking-x@champion": v1}
    config = make_config(ranking_model="models:/ranking-x@champion", sessionrec_model=str(tmp_path / "online"))
    async with running(config, switchable_loaders(targets)) as client:
        stop = asyncio.Event()
        readers = [asyncio.create_task(_search_until(client, stop)) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert (await client.post("/v1/admin/reload")).status_code == 401
        unchanged = await client.post("/v1/admin/reload", headers=auth())
        assert unchanged.json()["swapped"] == {"ranking": False, "sessionrec": False}
        targets["models:/ranking-x@champion"] = v2  # the alias moves
        swapped = await client.post("/v1/admin/reload", headers=auth())
        assert swapped.json()["swapped"]["ranking"] is True
        await asyncio.sleep(0.05)
        stop.set()
        codes = [code for task in readers for code in await task]
        assert codes and set(codes) == {200}
        served = client.app.state.models
        assert served.search.engine.docs.keys() == {d["id"] for d in DOCUMENTS[:3]}
        assert served.swaps[0]["model"] == "ranking"
        assert not served._retiring or all(t.done() for t in served._retiring)


async def test_polling_follows_the_alias(two_engines, make_config, tmp_path):
    v1, v2 = two_engines
    targets = {"models:/ranking-x@champion": v1}
    config = make_config(
        ranking_model="models:/ranking-x@champion",
        sessionrec_model=str(tmp_path / "online"),
        watch_registry_s=0.05,
    )
    async with running(config, switchable_loaders(targets)) as client:
        targets["models:/ranking-x@champion"] = v2
        for _ in range(200):
            if client.app.state.models.swaps:
                break
            await asyncio.sleep(0.02)
        assert client.app.state.models.swaps[0]["model"] == "ranking"


async def test_ready_needs_a_token_and_shows_names_and_versions(make_config):
    async with running(make_config()) as client:
        assert (await client.get("/ready")).status_code == 401
        ready = (await client.get("/ready", headers=auth())).json()
        ranking = ready["models"]["ranking"]
        assert ranking["name"] == "ranking-model" and ranking["state"] == "ready"
        assert set(ranking) == {"name", "version", "state", "ready", "versions"}
