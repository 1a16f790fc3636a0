"""Fixtures shared by every package's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture()
def nlprec_env(tmp_path, monkeypatch) -> Path:
    """An isolated NLPREC_HOME: the MLflow store, artifacts and step cache go under tmp_path."""
    monkeypatch.setenv("NLPREC_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path
