"""End to end over real HTTP: `nlprec-serve` (uvicorn) on 127.0.0.1 with tiny real models,
graceful shutdown of in-flight requests, state after a restart, and the page in headless Chromium.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from nlprec.service.app import create_app
from service_support import DOCUMENTS, TOKEN, auth, build_real_models, fake_loaders, fakes

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """$NLPREC_CHROMIUM if set, else Debian's chromium (or a Chrome) on PATH."""
    configured = os.environ.get("NLPREC_CHROMIUM")
    for name in (configured,) if configured else CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = find_chromium()
SERVE = Path(sys.executable).with_name("nlprec-serve")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(
    base_url: str, process: subprocess.Popen | None = None, timeout_s: float = 300
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/ready", headers=auth(), timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base_url} not ready after {timeout_s} s")


class Served:
    """`nlprec-serve` in a subprocess, configured through the environment."""

    def __init__(self, models: dict[str, Path], state: Path):
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "NLPREC_SERVE_RANKING_MODEL": str(models["ranking"]),
            "NLPREC_SERVE_SESSIONREC_MODEL": str(models["sessionrec"]),
            "NLPREC_SERVE_STATE_DIR": str(state),
            "NLPREC_SERVE_TOKEN": TOKEN,
            "NLPREC_SERVE_PORT": str(self.port),
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> Served:
        # The log goes to a file: an unread pipe could fill up and stall the server.
        self.log_path = self.state.with_name(f"{self.state.name}-server-{self.port}.log")
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [str(SERVE)], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_until_ready(self.url, self.process)
        except BaseException:
            self.process.kill()  # never leave a half-started server behind
            self.process.wait()
            raise
        return self

    def stop(self) -> str:
        """SIGTERM, as a process manager would; returns the server's log."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        log = self.log_path.read_text()
        # uvicorn re-raises the signal once it has shut down, so -SIGTERM is a clean exit too.
        assert self.process.returncode in (0, -signal.SIGTERM), log
        return log


@pytest.fixture(scope="module")
def real_models(tmp_path_factory) -> dict[str, Path]:
    if not SERVE.exists():
        pytest.skip(f"{SERVE} is not installed (pip install -e services/api)")
    pytest.importorskip("nlprec.ranking.engine", reason="needs the ranking package")
    pytest.importorskip("nlprec.sessionrec.online", reason="needs the sessionrec package")
    return build_real_models(tmp_path_factory.mktemp("real-models"))


@pytest.fixture(scope="module")
def server(real_models, tmp_path_factory):
    served = Served(real_models, tmp_path_factory.mktemp("state")).start()
    yield served
    if served.process.poll() is None:
        served.stop()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless Chromium: install Debian's chromium (apt-get install chromium) "
    "or set NLPREC_CHROMIUM to a Chromium/Chrome binary",
)
def test_page_in_headless_chromium(server, tmp_path):
    page = f"{server.url}/?q=vitamin+D+bone&mode=dense&user=u1#token={TOKEN}"  # /ready needs the token
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=20000",
        "--dump-dom",
        page,
    ]
    browser = subprocess.run(command, capture_output=True, text=True, timeout=120)
    dom = browser.stdout
    assert browser.returncode == 0 and dom, f"{CHROMIUM} failed: {browser.stderr[-2000:]}"
    assert 'class="result"' in dom and "Vitamin D" in dom  # search results rendered
    assert 'class="recommendation"' in dom and "milk" in dom  # recommendations rendered
    assert "personalised" in dom and 'id="status" class="ready"' in dom


def test_every_endpoint_over_http_and_state_after_restart(server, real_models):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for mode in ("bm25", "dense", "hybrid"):
            query = {"query": "vitamin D and bone fractures", "k": 3, "mode": mode}
            body = client.post("/v1/search", json=query).json()
            assert body["results"][0]["id"] in ("d1", "d6"), (mode, body)
            assert body["model_versions"]["encoder"].startswith("minilm@")
        reranked = client.post(
            "/v1/search", json={"query": "statins", "k": 3, "rerank": True}
        ).json()
        assert reranked["rerank"] is True and "reranker" in reranked["model_versions"]
        # The service splits a reranked search over two lanes; the result is the engine's own.
        from nlprec.ranking.engine import SearchEngine

        expected = SearchEngine.load(real_models["ranking"]).search(
            ["statins"], 3, "hybrid", rerank=True
        )[0]
        assert [r["id"] for r in reranked["results"]] == [h.doc_id for h in expected]
        assert [r["score"] for r in reranked["results"]] == pytest.approx(
            [h.score for h in expected], rel=1e-4, abs=1e-5
        )
        queries = {"queries": ["statins cholesterol", "sleep deprivation"], "mode": "dense"}
        batch = client.post("/v1/search/batch", json=queries).json()
        assert [r[0]["id"] for r in batch["results"]] == ["d3", "d4"]
        rerank = client.post("/v1/rerank", json={"query": "sleep", "documents": ["a", "b"]}).json()
        assert len(rerank["scores"]) == 2

        new = {
            "documents": [
                {"id": "z1", "title": "Zebrafish", "text": "Zebrafish regenerate heart muscle."}
            ]
        }
        assert client.post("/v1/documents", json=new, headers=auth()).status_code == 201
        found = client.post("/v1/search", json={"query": "zebrafish heart", "mode": "bm25"}).json()
        assert found["results"][0]["id"] == "z1"
        assert client.delete("/v1/documents/d2", headers=auth()).status_code == 200

        events = [
            {"user_id": "u5", "item": "tea", "timestamp": 100.0 + n, "event_id": f"h{n}"}
            for n in range(3)
        ]
        assert (
            client.post("/v1/events", json={"events": events}, headers=auth()).json()["added"] == 3
        )
        recommended = client.post("/v1/recommend", json={"user_id": "u5", "k": 3}).json()
        assert recommended["fallback"] is False
        assert (
            recommended["items"][0]["item"] == "tea" and recommended["items"][0]["repeat"] is True
        )
        assert client.post("/v1/recommend", json={"user_id": "nobody"}).json()["fallback"] is True

        metrics = client.get("/metrics").text
        assert (
            'nlprec_http_requests_total{method="POST",route="/v1/search",status="200"}' in metrics
        )
        assert 'nlprec_model_info{component="recommender"' in metrics
        problem = client.post("/v1/search", json={"query": "x", "k": 0})
        assert problem.status_code == 422
        assert problem.headers["content-type"] == "application/problem+json"

    assert "Application shutdown complete" in server.stop()  # lifespan ran: snapshot written
    restarted = Served(real_models, server.state).start()
    try:
        with httpx.Client(base_url=restarted.url, timeout=60) as client:
            query = {"query": "zebrafish protein folding", "k": 10, "mode": "bm25"}
            ids = [r["id"] for r in client.post("/v1/search", json=query).json()["results"]]
            assert "z1" in ids and "d2" not in ids
            after = client.post("/v1/recommend", json={"user_id": "u5", "k": 3}).json()
            assert [r["item"] for r in after["items"]] == [r["item"] for r in recommended["items"]]
            again = client.post("/v1/events", json={"events": events}, headers=auth()).json()
            assert again == {"received": 3, "added": 0, "duplicates": 3}
    finally:
        restarted.stop()


def test_graceful_shutdown_finishes_in_flight_requests(make_config, model_dirs):
    """uvicorn told to exit while a (slow) search runs: the search still gets its 200."""
    fakes.FakeEngine(DOCUMENTS, delay_s=1.0).save(model_dirs["ranking"])
    port = free_port()
    app = create_app(make_config(), fake_loaders())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, timeout_s=30)
    result: dict[str, httpx.Response] = {}

    def slow_search() -> None:
        result["search"] = httpx.post(
            f"{url}/v1/search", json={"query": "vitamin", "mode": "dense"}, timeout=30
        )

    client = threading.Thread(target=slow_search)
    client.start()
    # Wait for the search to be inside the (slow) encoder. (Not the in-flight gauge: the /ready
    # answer that wait_until_ready got may still be counted, and the search not yet sent.)
    engine = app.state.models.search.engine
    deadline = time.monotonic() + 10
    while not engine.encode_calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.encode_calls, "the search never reached the model"
    server.should_exit = True  # what SIGTERM sets
    client.join(timeout=30)
    thread.join(timeout=30)
    assert result["search"].status_code == 200 and result["search"].json()["results"]
    assert not thread.is_alive()
    with pytest.raises(httpx.TransportError):  # and the server is gone
        httpx.get(f"{url}/health", timeout=2)
