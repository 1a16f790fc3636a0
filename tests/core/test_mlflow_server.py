"""The runner against a real `mlflow server` on 127.0.0.1, through MLFLOW_TRACKING_URI."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PIPELINE = (Path(__file__).resolve().parents[2] / "pipelines" / "core-demo.yaml").read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError("mlflow server did not start")


@pytest.fixture()
def mlflow_server(tmp_path):
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_pipeline_runs_against_mlflow_server(mlflow_server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "NLPREC_HOME": str(work)}
    (work / "p.yaml").write_text(PIPELINE)
    result = subprocess.run(
        [sys.executable, "-m", "nlprec.core.cli", "run", "p.yaml", "--set", "params.n=60",
         "--summary", "s.json"], cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (work / "mlflow.db").exists()  # nothing went to the local default store
    summary = json.loads((work / "s.json").read_text())
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    parent = client.get_run(summary["run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary['run_id']}'"
    )
    assert {c.data.tags["nlprec.step"] for c in children} == {"generate", "train", "evaluate"}
    version = client.get_model_version_by_alias("core-demo", "champion")
    assert version.run_id == summary["steps"]["train"]["run_id"]
    assert "summary.json" in {a.path for a in client.list_artifacts(summary["run_id"])}
