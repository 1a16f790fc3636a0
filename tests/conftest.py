"""Fixtures shared by every package's tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_START_SECONDS = 180  # a loaded 2-core machine can take a minute to import MLflow and migrate


def _shared_data_root() -> Path:
    """The real-data folder: $NLPREC_DATA when it is set, else ../shared/data beside the repository."""
    configured = os.environ.get("NLPREC_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test with a reason when that folder is absent."""
    root = _shared_data_root()
    if not (root / "README.md").exists():
        pytest.skip(f"real data not available: {root} does not exist (set NLPREC_DATA)")
    return root


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, migrated once per session (migrations take seconds each time)."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow-template")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
    return folder / "mlflow.db"


@pytest.fixture()
def nlprec_env(tmp_path, monkeypatch, _migrated_mlflow_db) -> Path:
    """An isolated NLPREC_HOME: the MLflow store, artifacts and step cache go under tmp_path."""
    import shutil

    shutil.copy(_migrated_mlflow_db, tmp_path / "mlflow.db")
    monkeypatch.setenv("NLPREC_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def register_directory(nlprec_env):
    """register(directory, name) -> URI: log a saved model folder in a run of its own and register it
    (`Tracker.log_model`, the flavor detected from the folder), in the isolated store."""
    from nlprec.core.registry import register_folder

    return register_folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1: SQLite backend, artifacts on disk (the set-up docs/scaling.md shows)."""
    store = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination", str(store / "artifacts"), "--workers", "1",
    ]  # fmt: skip
    log = open(store / "server.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(store / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
