"""Admission control: each model lane admits a bounded amount of work; past it, 503 at once."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from nlprec.service.concurrency import ModelRunner
from nlprec.service.config import ServiceConfig
from nlprec.service.lanes import Lane, LaneFull
from service_support import DOCUMENTS, fakes, running

pytestmark = pytest.mark.anyio


def test_a_full_lane_refuses_at_once_and_frees_its_place_after_errors():
    lane = Lane("rerank", max_pending=2)
    with lane.admit(), lane.admit():
        with pytest.raises(LaneFull) as refused:
            with lane.admit():
                pass
    assert refused.value.status == 503 and refused.value.slug == "overloaded"
    assert "admission.rerank_queue" in refused.value.detail
    with pytest.raises(RuntimeError):  # a failing request gives its place back
        with lane.admit(2):
            raise RuntimeError("model failed")
    assert lane.pending == 0
    with lane.admit(2):
        assert lane.pending == 2
    lane.shutdown()


def test_retry_after_grows_with_the_backlog():
    lane = Lane("search", max_pending=100)
    assert lane.retry_after_s() == 1  # nothing measured yet: the least a client should wait
    lane.seconds_per_item = 0.5
    with lane.admit(7):
        assert lane.retry_after_s() == 4  # ceil(7 x 0.5 s)
    with lane.admit(100):
        lane.seconds_per_item = 10.0
        assert lane.retry_after_s() == 60  # capped at a minute
    lane.shutdown()


async def test_a_lane_runs_one_call_at_a_time_and_measures_them():
    lane = Lane("search", max_pending=10)
    running_now, overlaps = 0, []

    def call(seconds: float) -> float:
        nonlocal running_now
        running_now += 1
        overlaps.append(running_now)
        time.sleep(seconds)
        running_now -= 1
        return seconds

    with ThreadPoolExecutor(2) as executor:
        runner = ModelRunner(executor)
        results = await asyncio.gather(*(lane.run(runner, call, 0.02) for _ in range(4)))
    assert results == [0.02] * 4 and max(overlaps) == 1
    assert lane.seconds_per_item >= 0.02
    lane.shutdown()


async def test_a_rerank_backlog_is_shed_and_plain_searches_pass_it(make_config, model_dirs):
    fakes.FakeEngine(DOCUMENTS, rerank_delay_s=0.5).save(model_dirs["ranking"])
    config = make_config(admission={"rerank_queue": 2})
    async with running(config) as client:
        finished: list[str] = []

        async def call(name, request):
            response = await request
            finished.append(f"{name} {response.status_code}")
            return response

        body = {"query": "vitamin bone", "mode": "dense", "rerank": True}
        reranks = [
            asyncio.ensure_future(call("rerank", client.post("/v1/search", json=body)))
            for _ in range(5)
        ]
        await asyncio.sleep(
            0.1
        )  # the admitted reranks are now in (or waiting for) the cross-encoder
        plain = await call("dense", client.post("/v1/search", json={"query": "x", "mode": "dense"}))
        responses = await asyncio.gather(*reranks)
    assert plain.status_code == 200
    assert sorted(r.status_code for r in responses) == [200, 200, 503, 503, 503]
    # The three refused at once, then the plain search, and only then the admitted reranks.
    assert finished == ["rerank 503"] * 3 + ["dense 200"] + ["rerank 200"] * 2
    shed = next(r for r in responses if r.status_code == 503)
    assert shed.headers["content-type"].startswith("application/problem+json")
    assert shed.json()["type"] == "/problems/overloaded"
    assert int(shed.headers["retry-after"]) >= 1
    assert client.app.state.models.search.rerank_lane.pending == 0


async def test_a_full_search_lane_sheds_queries_and_recovers(make_config, model_dirs):
    fakes.FakeEngine(DOCUMENTS, delay_s=0.3).save(model_dirs["ranking"])
    config = make_config(
        batching={"max_batch_size": 1}, admission={"search_queue": 2}, limits={"max_batch": 2}
    )
    async with running(config) as client:
        requests = [
            client.post("/v1/search", json={"query": "q", "mode": "bm25"}) for _ in range(4)
        ]
        statuses = sorted(r.status_code for r in await asyncio.gather(*requests))
        assert statuses == [200, 200, 503, 503]
        # Once the backlog is worked off, the lane admits again.
        assert (
            await client.post("/v1/search", json={"query": "q", "mode": "bm25"})
        ).status_code == 200


async def test_reranked_search_keeps_the_first_stage_below_the_rerank_depth(client):
    body = {
        "query": "vitamin protein statins sleep exercise bone",
        "k": 6,
        "mode": "bm25",
        "rerank": True,
    }
    reranked = (await client.post("/v1/search", json=body)).json()["results"]
    plain = (await client.post("/v1/search", json={**body, "rerank": False})).json()["results"]
    depth = fakes.FakeEngine.settings.rerank_depth
    assert {r["id"] for r in reranked[:depth]} == {r["id"] for r in plain[:depth]}
    assert [r["id"] for r in reranked[depth:]] == [r["id"] for r in plain[depth:]]
    assert client.app.state.models.search.engine.rerank_calls == [depth]


def test_search_queue_must_admit_the_largest_batch():
    with pytest.raises(ValueError, match="admission.search_queue"):
        ServiceConfig(admission={"search_queue": 8}, limits={"max_batch": 64})


async def test_a_lane_thread_runs_with_the_configured_torch_threads():
    torch = pytest.importorskip("torch")
    lane = Lane("search", max_pending=1, threads=1)
    with ThreadPoolExecutor(1) as executor:
        assert await lane.run(ModelRunner(executor), torch.get_num_threads) == 1
    lane.shutdown()


async def test_wide_calls_get_more_torch_threads_and_small_ones_keep_the_default():
    torch = pytest.importorskip("torch")
    lane = Lane("search", max_pending=16, threads=1, wide=(2, 8))
    with ThreadPoolExecutor(1) as executor:
        runner = ModelRunner(executor)
        wide = await lane.run(runner, torch.get_num_threads, items=8)
        small = await lane.run(runner, torch.get_num_threads, items=3)
    assert (wide, small) == (2, 1)
    lane.shutdown()
