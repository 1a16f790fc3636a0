"""Every endpoint and its errors, in process (httpx on the ASGI transport, fake models)."""

from __future__ import annotations

import json

import pytest
from service_support import TOKEN, auth, running

pytestmark = pytest.mark.anyio
PROBLEM = "application/problem+json"


def assert_problem(response, status: int, words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["type"].startswith("/problems/") and body["title"]
    assert words in body["detail"], body["detail"]
    return body


# ---------------------------------------------------------------- operations


async def test_health_ready_and_metrics(client):
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = (await client.get("/ready", headers=auth())).json()
    assert ready["ready"] is True
    assert ready["models"]["ranking"]["versions"]["encoder"] == "fake-hash-64"
    await client.post("/v1/search", json={"query": "vitamin", "mode": "dense"})
    metrics = (await client.get("/metrics")).text
    assert (
        'nlprec_http_requests_total{method="POST",route="/v1/search",status="200"} 1.0' in metrics
    )
    assert (
        'nlprec_model_info{component="encoder",model="ranking",version="fake-hash-64"} 1.0'
        in metrics
    )
    assert 'nlprec_batch_size_count{batcher="dense"} 1.0' in metrics
    assert "nlprec_http_request_duration_seconds_bucket" in metrics


async def test_ready_is_503_until_models_load(make_config):
    import asyncio

    import httpx
    from nlprec.service.app import create_app
    from nlprec.service.models import ModelLoaders
    from service_support import fake_loaders

    gate = asyncio.Event()
    base = fake_loaders()

    def slow_resolve(source):
        while not gate.is_set():  # runs in a worker thread until the test opens the gate
            import time

            time.sleep(0.005)
        return base.resolve(source)

    loaders = ModelLoaders(slow_resolve, base.load_engine, base.load_recommender, base.make_event)
    app = create_app(make_config(), loaders)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://s"
        ) as client:
            response = await client.get("/ready", headers=auth())
            assert response.status_code == 503 and response.json()["ready"] is False
            assert (await client.get("/health")).status_code == 200
            assert_problem(
                await client.post("/v1/search", json={"query": "x"}), 503, "still loading"
            )
            gate.set()
            for _ in range(500):
                if (await client.get("/ready", headers=auth())).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            assert (await client.post("/v1/search", json={"query": "vitamin"})).status_code == 200


async def test_ready_reports_a_model_that_failed_to_load(make_config, tmp_path):
    async_config = make_config(ranking_model=str(tmp_path / "missing"))
    import httpx
    from nlprec.service.app import create_app
    from service_support import fake_loaders

    app = create_app(async_config, fake_loaders())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://s"
        ) as client:
            import asyncio

            for _ in range(200):
                ready = (await client.get("/ready", headers=auth())).json()
                failed = ready["models"]["ranking"]["state"] == "failed"
                if failed and ready["models"]["sessionrec"]["ready"]:
                    break
                await asyncio.sleep(0.01)
            assert ready["ready"] is False and ready["models"]["ranking"]["state"] == "failed"
            assert str(tmp_path) not in json.dumps(ready)  # names and versions, no server paths
            assert_problem(
                await client.post("/v1/search", json={"query": "x"}), 503, "FileNotFoundError"
            )
            # the other model still serves
            assert (await client.post("/v1/recommend", json={"user_id": "u1"})).status_code == 200


async def test_page_is_served(client):
    response = await client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert 'id="search-form"' in response.text and 'id="recommend-form"' in response.text
    assert 'id="document-form"' in response.text  # adds a document with the token
    assert 'm.state === "failed"' in response.text and "m.version" in response.text


# ---------------------------------------------------------------- search


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
async def test_search_modes(client, mode):
    response = await client.post(
        "/v1/search", json={"query": "vitamin D bone", "k": 3, "mode": mode}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == mode and body["rerank"] is False
    assert body["model_versions"] == {"encoder": "fake-hash-64", "bm25": "fake-overlap"}
    assert 1 <= len(body["results"]) <= 3
    top = body["results"][0]
    assert top["id"] in ("d1", "d6") and top["title"] in ("Vitamin D", "Bone density")
    assert "vitamin" in top["snippet"].lower()
    assert body["timings"]["total_ms"] >= body["timings"]["model_ms"] >= 0


async def test_search_with_rerank_orders_by_reranker(client):
    body = (
        await client.post(
            "/v1/search", json={"query": "memory sleep", "mode": "bm25", "rerank": True}
        )
    ).json()
    scores = [r["score"] for r in body["results"]]
    assert body["rerank"] is True and scores == sorted(scores, reverse=True)


async def test_batch_search_keeps_query_order(client):
    queries = ["statins cholesterol", "protein folding", "sleep memory"]
    response = await client.post(
        "/v1/search/batch", json={"queries": queries, "k": 2, "mode": "dense"}
    )
    assert response.status_code == 200, response.text
    tops = [results[0]["id"] for results in response.json()["results"]]
    assert tops == ["d3", "d2", "d4"]


async def test_rerank_endpoint(client):
    documents = ["nothing relevant here", "statins lower cholesterol", "cholesterol"]
    body = (
        await client.post(
            "/v1/rerank", json={"query": "statins cholesterol", "documents": documents}
        )
    ).json()
    assert len(body["scores"]) == 3 and body["ranking"][0] == 1 and body["ranking"][-1] == 0


async def test_rerank_without_a_reranker_is_409(make_config, model_dirs):
    from service_support import DOCUMENTS, fakes

    fakes.FakeEngine(DOCUMENTS, has_reranker=False).save(model_dirs["ranking"])
    async with running(make_config()) as client:
        assert_problem(
            await client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}),
            409,
            "no reranker",
        )
        response = await client.post("/v1/search", json={"query": "q", "rerank": True})
        assert_problem(response, 409, "no reranker")


# ---------------------------------------------------------------- validation and limits


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"query": "x", "k": 0}, "k: Input should be greater than or equal to 1"),
        ({"query": "x", "k": 1001}, "k: Input should be less than or equal to 1000"),
        ({"query": "x", "mode": "sparse"}, "mode: Input should be 'bm25', 'dense' or 'hybrid'"),
        ({"query": ""}, "query: String should have at least 1 character"),
        ({"k": 3}, "query: Field required"),
        ({"query": "x", "colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
async def test_invalid_search_is_a_422_problem(client, body, words):
    problem = assert_problem(await client.post("/v1/search", json=body), 422, words)
    assert problem["errors"][0]["loc"][0] == "body"


async def test_configured_limits(make_config):
    limits = {"max_query_chars": 20, "max_k": 5, "max_batch": 2, "max_body_bytes": 2048}
    async with running(make_config(limits=limits)) as client:
        assert_problem(
            await client.post("/v1/search", json={"query": "x" * 21}), 422, "at most 20 characters"
        )
        assert_problem(
            await client.post("/v1/search", json={"query": "x", "k": 6}),
            422,
            "less than or equal to 5",
        )
        batch = {"queries": ["a", "b", "c"]}
        assert_problem(await client.post("/v1/search/batch", json=batch), 422, "at most 2 items")
        big = {"documents": [{"id": "big", "text": "x" * 3000}]}
        assert_problem(
            await client.post("/v1/documents", json=big, headers=auth()), 413, "2048 bytes"
        )


async def test_body_limit_applies_to_chunked_bodies(make_config):
    async with running(make_config(limits={"max_body_bytes": 1024})) as client:

        async def chunks():
            for _ in range(10):
                yield b" " * 200

        response = await client.post(
            "/v1/search", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_problem(response, 413, "1024 bytes")


async def test_malformed_json_is_a_problem(client):
    response = await client.post(
        "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "JSON")


async def test_unknown_route_and_method_are_problems(client):
    assert_problem(await client.get("/v1/nothing"), 404, "Not Found")
    assert_problem(await client.get("/v1/search"), 405, "Method Not Allowed")


# ---------------------------------------------------------------- recommend and events


async def test_recommend_known_user(client):
    body = (await client.post("/v1/recommend", json={"user_id": "u1", "k": 3})).json()
    assert body["fallback"] is False and body["model_version"] == "fake-popularity-1"
    items = {row["item"]: row for row in body["items"]}
    assert items["milk"]["repeat"] is True and items["eggs"]["repeat"] is False


async def test_recommend_unknown_user_falls_back(client):
    body = (await client.post("/v1/recommend", json={"user_id": "stranger"})).json()
    assert body["fallback"] is True and body["items"][0]["item"] == "milk"
    assert body["notes"] == ["unknown user 'stranger'"]


async def test_recommend_from_history_and_exclude_seen(client):
    body = (
        await client.post("/v1/recommend", json={"history": ["eggs"], "exclude_seen": True})
    ).json()
    assert body["fallback"] is False and "eggs" not in [row["item"] for row in body["items"]]


async def test_recommend_needs_a_user_or_a_history(client):
    response = await client.post("/v1/recommend", json={"k": 3})
    assert_problem(response, 422, "give user_id, history or both")


async def test_recommend_with_user_and_history(client):
    body = (await client.post("/v1/recommend", json={"user_id": "u1", "history": ["eggs"]})).json()
    assert {row["item"] for row in body["items"] if row["repeat"]} == {"milk", "bread", "eggs"}


async def test_events_are_idempotent_and_update_the_user(client):
    events = [
        {"user_id": "u9", "item": "tea", "timestamp": 10.0, "event_id": "x1"},
        {"user_id": "u9", "item": "tea", "timestamp": 11.0, "event_id": "x2"},
    ]
    first = (await client.post("/v1/events", json={"events": events}, headers=auth())).json()
    assert first == {"received": 2, "added": 2, "duplicates": 0}
    again = (await client.post("/v1/events", json={"events": events}, headers=auth())).json()
    assert again == {"received": 2, "added": 0, "duplicates": 2}
    body = (await client.post("/v1/recommend", json={"user_id": "u9"})).json()
    assert body["items"][0]["item"] == "tea"
    assert body["fallback"] is False and body["items"][0] == {
        "item": "tea",
        "score": pytest.approx(2.2),
        "repeat": True,
    }


# ---------------------------------------------------------------- documents


async def test_added_document_is_visible_to_the_next_search(client):
    new = {
        "documents": [
            {"id": "n1", "title": "Zebrafish", "text": "Zebrafish regenerate heart tissue."}
        ]
    }
    response = await client.post("/v1/documents", json=new, headers=auth())
    assert response.status_code == 201 and response.json() == {"added": 1, "ids": ["n1"]}
    for mode in ("bm25", "dense", "hybrid"):
        body = (
            await client.post("/v1/search", json={"query": "zebrafish heart", "mode": mode})
        ).json()
        assert body["results"][0]["id"] == "n1", mode


async def test_deleted_document_disappears(client):
    response = await client.delete("/v1/documents/d3", headers=auth())
    assert response.status_code == 200 and response.json() == {"deleted": "d3"}
    body = (
        await client.post("/v1/search", json={"query": "statins cholesterol", "mode": "bm25"})
    ).json()
    assert "d3" not in [r["id"] for r in body["results"]]
    assert_problem(
        await client.delete("/v1/documents/d3", headers=auth()), 404, "no document with id 'd3'"
    )


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/v1/events",
            {"events": [{"user_id": "u", "item": "i", "timestamp": 1, "event_id": "e"}]},
        ),
        ("POST", "/v1/documents", {"documents": [{"id": "x", "text": "t"}]}),
        ("DELETE", "/v1/documents/d1", None),
    ],
)
async def test_writes_need_the_token(client, method, path, body):
    response = await client.request(method, path, json=body)
    assert_problem(response, 401, "Authorization: Bearer")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(
        await client.request(method, path, json=body, headers=auth("wrong")), 401, "not valid"
    )
    assert (await client.request(method, path, json=body, headers=auth(TOKEN))).status_code in (
        200,
        201,
    )


async def test_writes_refused_without_a_configured_token(make_config):
    async with running(make_config(token=None)) as client:
        response = await client.delete("/v1/documents/d1", headers=auth())
        assert_problem(response, 403, "no write token is configured")


async def test_read_only_service_refuses_writes(make_config):
    async with running(make_config(read_only=True)) as client:
        assert_problem(await client.delete("/v1/documents/d1", headers=auth()), 403, "read_only")


async def test_read_token_protects_reads(make_config):
    async with running(make_config(read_token="reader")) as client:
        assert_problem(
            await client.post("/v1/search", json={"query": "x"}), 401, "Authorization: Bearer"
        )
        assert (
            await client.post("/v1/search", json={"query": "x"}, headers=auth("reader"))
        ).status_code == 200
        assert (
            await client.post("/v1/search", json={"query": "x"}, headers=auth(TOKEN))
        ).status_code == 200
        assert (await client.get("/health")).status_code == 200  # operations stay open


async def test_an_invalid_event_batch_is_refused_whole_and_not_logged(client):
    events = [
        {"user_id": "u7", "item": "tea", "timestamp": 5.0, "event_id": "ok1"},
        {"user_id": "u7", "item": "tea", "timestamp": 1e12, "event_id": "future1"},
    ]
    response = await client.post("/v1/events", json={"events": events}, headers=auth())
    assert_problem(response, 422, "'future1': timestamp 1000000000000.0 is in the future")
    backend = client.app.state.models.recommend
    assert "ok1" not in backend.recommender.events and len(backend.log) == 0
    not_finite = b'{"events": [{"user_id": "u", "item": "i", "timestamp": NaN, "event_id": "n"}]}'
    response = await client.post(
        "/v1/events", content=not_finite, headers={**auth(), "content-type": "application/json"}
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/search", b'{"query": "bone \\ud800"}'),
        ("/v1/rerank", b'{"query": "bone", "documents": ["\\udfff"]}'),
        ("/v1/recommend", b'{"history": ["milk\\ud800"]}'),
    ],
)
async def test_lone_surrogates_are_a_422_not_a_tokenizer_crash(client, path, body):
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert_problem(response, 422, "unable to parse raw data as a unicode string")


async def test_adding_an_existing_id_is_a_409(client):
    body = {"documents": [{"id": "d1", "text": "replacement"}]}
    assert_problem(
        await client.post("/v1/documents", json=body, headers=auth()), 409, "DELETE them first"
    )
    assert (await client.delete("/v1/documents/d1", headers=auth())).status_code == 200
    assert (await client.post("/v1/documents", json=body, headers=auth())).status_code == 201
