"""Shared by the scale tests: one local Ray instance and one `mlflow server` per session (both slow to start)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

RAY_START_ATTEMPTS = 2
SERVER_START_SECONDS = 180  # a loaded 2-core machine can take a minute to import MLflow and migrate


@pytest.fixture(scope="session")
def ray_local():
    """`ray.init(num_cpus=2)` once per session, shut down at the end."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[data]')")
    for attempt in range(
        RAY_START_ATTEMPTS
    ):  # Ray gives its raylet 30 s to come up; a busy machine can miss it
        try:
            ray.init(
                num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
            )
            break
        except Exception:
            ray.shutdown()
            if attempt + 1 == RAY_START_ATTEMPTS:
                raise
    yield ray
    ray.shutdown()


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
