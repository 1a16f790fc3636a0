"""Writes under concurrency, and the same index and user states after a restart (or a crash)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading

import httpx
import pytest
from nlprec.service.app import create_app
from nlprec.service.state import EventLog, Snapshots
from service_support import auth, fake_loaders, fakes, running

pytestmark = pytest.mark.anyio


def event(n: int, user: str | None = None) -> dict:
    return {
        "user_id": user or f"user{n % 5}",
        "item": f"item{n % 7}",
        "timestamp": float(n),
        "event_id": f"ev{n}",
    }


async def recommender_state(client) -> dict:
    return dict(client.app.state.models.recommend.recommender.events)


async def index_state(client) -> dict:
    return dict(client.app.state.models.search.engine.docs)


async def test_concurrent_event_writes_and_searches_lose_and_duplicate_nothing(make_config):
    async with running(make_config(snapshot_every_events=25)) as client:
        # 120 distinct events sent in overlapping batches (each event twice), interleaved with reads.
        batches = [[event(n) for n in range(start, start + 10)] for start in range(0, 115, 5)]
        writes = [client.post("/v1/events", json={"events": b}, headers=auth()) for b in batches]
        reads = [
            client.post("/v1/search", json={"query": "vitamin", "mode": m})
            for m in ("bm25", "dense") * 10
        ]
        documents = [
            client.post(
                "/v1/documents",
                json={"documents": [{"id": f"n{i}", "text": f"new text {i}"}]},
                headers=auth(),
            )
            for i in range(10)
        ]
        responses = await asyncio.gather(*writes, *reads, *documents)
        assert all(r.status_code in (200, 201) for r in responses), [
            r.text for r in responses if r.status_code >= 300
        ]
        added = sum(r.json()["added"] for r in responses[: len(writes)])
        events = await recommender_state(client)
        assert added == 120 and len([e for e in events if e.startswith("ev")]) == 120
        before = (events, await index_state(client))
        recommendation = (await client.post("/v1/recommend", json={"user_id": "user3"})).json()[
            "items"
        ]
    async with running(make_config()) as client:  # a restart on the same state folder
        assert (await recommender_state(client), await index_state(client)) == before
        assert (await client.post("/v1/recommend", json={"user_id": "user3"})).json()[
            "items"
        ] == recommendation
        again = await client.post("/v1/events", json={"events": [event(7)]}, headers=auth())
        assert again.json()["duplicates"] == 1  # idempotency survives the restart


async def test_state_survives_a_crash_without_shutdown(make_config, model_dirs):
    config = make_config(snapshot_every_events=3)
    app = create_app(config, fake_loaders())
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s")
    client.app = app
    while (await client.get("/ready", headers=auth())).status_code != 200:
        await asyncio.sleep(0.01)
    for n in range(5):  # 5 events: one snapshot after 3, then 2 only in the log
        assert (
            await client.post("/v1/events", json={"events": [event(n, "crashy")]}, headers=auth())
        ).status_code == 200
    expected = await recommender_state(client)
    folder = client.app.state.models.recommend.log.path.parent
    assert Snapshots(folder).current() is not None and len(EventLog(folder / "events.jsonl")) == 2
    # No lifespan exit: the process "died". A new app replays the log on top of the snapshot.
    async with running(make_config()) as restarted:
        assert await recommender_state(restarted) == expected
    app.state.models.executor.shutdown(wait=False)


async def test_a_torn_log_line_is_skipped(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log.append([event(1), event(2)])
    with log.path.open("a") as handle:
        handle.write('{"user_id": "u", "item"')  # a crash in the middle of an append
    assert [e["event_id"] for e in log.read()] == ["ev1", "ev2"]


async def test_snapshots_keep_only_the_current_one(tmp_path):
    snapshots = Snapshots(tmp_path)
    assert snapshots.current() is None
    for n in range(3):
        snapshots.write(
            lambda folder, n=n: (folder.mkdir(), (folder / "n.json").write_text(json.dumps(n)))
        )
    current = snapshots.current()
    assert json.loads((current / "n.json").read_text()) == 2
    assert [p.name for p in snapshots.folder.iterdir() if p.is_dir()] == [current.name]


async def test_a_new_model_source_starts_from_fresh_state(make_config, model_dirs, tmp_path):
    async with running(make_config()) as client:
        await client.delete("/v1/documents/d1", headers=auth())
    other = tmp_path / "other-ranking"
    shutil.copytree(model_dirs["ranking"], other)
    async with running(make_config(ranking_model=str(other))) as client:
        assert "d1" in await index_state(client)  # the deletion belonged to the old source's state
    async with running(make_config()) as client:
        assert "d1" not in await index_state(client)


async def test_document_writes_are_logged_then_compacted_in_the_background(make_config):
    doc = {"title": "New", "text": "a freshly added abstract about sleep"}
    async with running(make_config(compact_every_documents=2)) as client:
        backend = client.app.state.models.search
        added = await client.post(
            "/v1/documents", json={"documents": [{"id": "n1", **doc}]}, headers=auth()
        )
        assert added.status_code == 201
        assert len(backend.log) == 1 and not backend.save_dir.exists()  # no engine save per write
        await client.post("/v1/documents", json={"documents": [{"id": "n2", **doc}]}, headers=auth())
        await backend._compacting
        assert len(backend.log) == 0 and backend.save_dir.exists()


async def test_logged_document_writes_survive_a_crash(make_config):
    app = create_app(make_config(), fake_loaders())
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s")
    while (await client.get("/ready", headers=auth())).status_code != 200:
        await asyncio.sleep(0.01)
    body = {"documents": [{"id": "n1", "title": "New", "text": "logged only"}]}
    assert (await client.post("/v1/documents", json=body, headers=auth())).status_code == 201
    await client.delete("/v1/documents/d1", headers=auth())
    # No lifespan exit: the process "died" with both writes only in the log.
    async with running(make_config()) as restarted:
        engine = restarted.app.state.models.search.engine
        assert engine.document("n1")["text"] == "logged only"
        assert (await restarted.delete("/v1/documents/d1", headers=auth())).status_code == 404
    app.state.models.executor.shutdown(wait=False)


async def test_writes_during_a_checkpoint_are_answered_kept_and_survive_a_crash(
    make_config, monkeypatch
):
    saving, release = threading.Event(), threading.Event()
    atomic_json = fakes._atomic_json

    def slow_write(path, data):  # the checkpoint's file writing, held until released
        saving.set()
        assert release.wait(10)
        atomic_json(path, data)

    monkeypatch.setattr(fakes, "_atomic_json", slow_write)
    app = create_app(make_config(compact_every_documents=2), fake_loaders())
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s")
    while (await client.get("/ready", headers=auth())).status_code != 200:
        await asyncio.sleep(0.01)
    backend = app.state.models.search

    def add(doc_id: str):
        body = {"documents": [{"id": doc_id, "title": "", "text": f"text of {doc_id}"}]}
        return client.post("/v1/documents", json=body, headers=auth())

    for doc_id in ("n1", "n2"):  # the second reaches compact_every_documents
        assert (await add(doc_id)).status_code == 201
    while not saving.is_set():
        await asyncio.sleep(0.01)
    # The copy is being written: writes are answered meanwhile, not held up by the save.
    for doc_id in ("n3", "n4"):
        assert (await asyncio.wait_for(add(doc_id), 5)).status_code == 201
    assert (await client.delete("/v1/documents/d1", headers=auth())).status_code == 200
    release.set()
    await backend._compacting
    saved = fakes.FakeEngine.load(backend.save_dir).docs
    assert {"n1", "n2", "d1"} <= saved.keys() and "n3" not in saved  # the copy, as taken
    logged = list(backend.log.read())
    assert [r.get("id") or r["documents"][0]["id"] for r in logged] == ["n3", "n4", "d1"]
    # No lifespan exit: the process "died". The restart replays the trimmed log on the copy.
    monkeypatch.setattr(fakes, "_atomic_json", atomic_json)
    async with running(make_config()) as restarted:
        docs = restarted.app.state.models.search.engine.docs
        assert {"n1", "n2", "n3", "n4"} <= docs.keys() and "d1" not in docs
    app.state.models.executor.shutdown(wait=False)
