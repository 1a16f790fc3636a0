"""Registered ranking and sessionrec models are real pyfunc models: `mlflow.pyfunc.load_model`
searches / recommends with a signature, and `mlflow models serve --env-manager local` answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from service_support import DOCUMENTS

SERVE_START_SECONDS = 180


@pytest.fixture()
def engine_uri(nlprec_env: Path, register_directory) -> str:
    from nlprec.ranking.dense import DenseRetriever
    from nlprec.ranking.engine import SearchEngine

    SearchEngine.build(DOCUMENTS, DenseRetriever()).save(nlprec_env / "engine")
    return register_directory(nlprec_env / "engine", "ranking-flavor")


def test_engine_pyfunc_searches_with_a_signature(engine_uri):
    assert engine_uri == "models:/ranking-flavor@champion"
    model = mlflow.pyfunc.load_model(engine_uri)
    assert model.metadata.signature.inputs.input_names() == ["query"]
    assert model.metadata.saved_input_example_info is not None
    hits = model.predict(pd.DataFrame({"query": ["statins cholesterol"]}), params={"k": 3, "mode": "hybrid"})
    assert list(hits.columns) == ["query", "rank", "id", "score", "title"]
    assert hits.iloc[0]["id"] == "d3" and len(hits) == 3
    reqs = Path(mlflow.artifacts.download_artifacts(f"{engine_uri}/requirements.txt")).read_text()
    assert "nlprec-ranking==" in reqs and "/" not in reqs  # installable from an index, no paths


def test_recommender_pyfunc_recommends(nlprec_env: Path, register_directory):
    from nlprec.sessionrec.online import OnlineRecommender

    events = {"u1": [(1.0, "milk"), (2.0, "bread")], "u2": [(3.0, "eggs")]}
    OnlineRecommender(["milk", "bread", "eggs"], [3.0, 2.0, 1.0], events).save(nlprec_env / "online")
    uri = register_directory(nlprec_env / "online", "sessionrec-flavor")
    model = mlflow.pyfunc.load_model(uri)
    found = model.predict(pd.DataFrame({"user_id": ["u1", "nobody"]}), params={"k": 2})
    assert list(found.columns) == ["user_id", "rank", "item", "score", "repeat"]
    assert found[found.user_id == "u1"]["repeat"].all()  # u1's history comes first
    assert len(found[found.user_id == "nobody"]) == 2  # popularity fallback


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_mlflow_models_serve_answers_a_search(engine_uri, nlprec_env: Path):
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{nlprec_env / 'mlflow.db'}",
        # the scoring server runs `uvicorn` from PATH: the one beside this interpreter
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", engine_uri, "--env-manager",
        "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log_path = nlprec_env / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + SERVE_START_SECONDS
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"mlflow models serve did not start: {log_path.read_text()[-2000:]}")
                    time.sleep(0.5)
            body = {"dataframe_records": [{"query": "statins cholesterol"}], "params": {"k": 2, "mode": "hybrid"}}
            predictions = _post(f"http://127.0.0.1:{port}/invocations", body)["predictions"]
            assert [hit["id"] for hit in predictions][:1] == ["d3"] and len(predictions) == 2
        finally:
            process.terminate()
            process.wait(timeout=30)
