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
