"""Micro-batching: batches form under concurrency, agree with the unbatched reference, fail cleanly."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from nlprec.service.batching import BatcherClosed, MicroBatcher
from service_support import DOCUMENTS, fakes, running

pytestmark = pytest.mark.anyio


def in_thread(executor):
    async def run(fn, items):
        return await asyncio.get_running_loop().run_in_executor(executor, fn, items)

    return run


async def test_concurrent_items_share_batches_and_keep_their_results():
    calls: list[list[int]] = []

    def square(items: list[int]) -> list[int]:
        calls.append(list(items))
        time.sleep(0.02)  # a model call: while it runs, the next batch gathers
        return [i * i for i in items]

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(square, in_thread(executor), max_batch_size=8, max_wait_s=0.005)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        await batcher.stop()
    assert results == [i * i for i in range(20)]
    assert sorted(i for call in calls for i in call) == list(range(20))  # each item exactly once
    assert max(len(call) for call in calls) == 8 and len(calls) < 20


async def test_batch_size_one_is_the_unbatched_reference():
    calls: list[int] = []

    def identity(items):
        calls.append(len(items))
        return items

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(identity, in_thread(executor), max_batch_size=1, max_wait_s=0.01)
        assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == list(range(5))
        await batcher.stop()
    assert calls == [1] * 5


async def test_a_lone_item_waits_at_most_max_wait():
    def identity(items):
        return items

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(identity, in_thread(executor), max_batch_size=64, max_wait_s=0.05)
        start = time.perf_counter()
        assert await batcher.submit("alone") == "alone"
        waited = time.perf_counter() - start
        await batcher.stop()
    assert waited < 5.0  # bounded (generous: a busy CI machine), not stuck until 64 items arrive


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_runs():
    def fail_on_negative(items):
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        return items

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(
            fail_on_negative, in_thread(executor), max_batch_size=4, max_wait_s=0.01
        )
        outcomes = await asyncio.gather(
            batcher.submit(1), batcher.submit(-1), return_exceptions=True
        )
        assert all(isinstance(o, ValueError) for o in outcomes)
        assert await batcher.submit(2) == 2
        await batcher.stop()


async def test_stop_finishes_accepted_items_then_refuses_new_ones():
    def slow(items):
        time.sleep(0.01)
        return items

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(slow, in_thread(executor), max_batch_size=2, max_wait_s=0)
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(6)]
        await asyncio.sleep(0)  # let them queue
        await batcher.stop()
        assert [await p for p in pending] == list(range(6))
        with pytest.raises(BatcherClosed):
            await batcher.submit(7)


async def test_wrong_result_count_is_an_error():
    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(
            lambda items: items[:-1], in_thread(executor), max_batch_size=1, max_wait_s=0
        )
        with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
            await batcher.submit(1)
        await batcher.stop()


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(list, None, max_batch_size=0, max_wait_s=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(list, None, max_batch_size=1, max_wait_s=-1)


QUERIES = [
    "vitamin D bone",
    "protein folding",
    "statins",
    "sleep memory",
    "exercise heart",
    "calcium",
] * 3


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
async def test_service_batched_search_agrees_with_unbatched(make_config, model_dirs, mode):
    fakes.FakeEngine(DOCUMENTS, delay_s=0.02).save(model_dirs["ranking"])

    async def answers(batching):
        async with running(make_config(batching=batching)) as client:
            requests = [
                client.post("/v1/search", json={"query": q, "k": 3, "mode": mode}) for q in QUERIES
            ]
            responses = await asyncio.gather(*requests)
            engine = client.app.state.models.search.engine
            calls = engine.encode_calls if mode == "dense" else engine.search_calls
            return [r.json()["results"] for r in responses], calls

    batched, batched_calls = await answers({"max_batch_size": 32, "max_wait_ms": 5})
    reference, reference_calls = await answers({"max_batch_size": 1})
    assert batched == reference
    assert reference_calls == [1] * len(QUERIES)
    assert max(batched_calls) > 1 and sum(batched_calls) == len(QUERIES)


async def test_model_work_never_blocks_the_event_loop(make_config, model_dirs):
    fakes.FakeEngine(DOCUMENTS, delay_s=0.5).save(model_dirs["ranking"])
    async with running(make_config()) as client:
        finished: list[str] = []

        async def call(name, request):
            await request
            finished.append(name)

        search = asyncio.ensure_future(
            call("search", client.post("/v1/search", json={"query": "x", "mode": "dense"}))
        )
        await asyncio.sleep(0.05)  # the search is now inside the (sleeping) encoder
        await call("health", client.get("/health"))
        await call("recommend", client.post("/v1/recommend", json={"user_id": "u1"}))
        await search
    assert finished == ["health", "recommend", "search"]
