"""Fixtures for the service tests (helpers live in support.py, importable as `service_support`)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from nlprec.service.config import ServiceConfig

if "service_support" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "service_support", Path(__file__).with_name("support.py")
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["service_support"] = _module
    _spec.loader.exec_module(_module)

from service_support import DOCUMENTS, EVENTS, TOKEN, fakes, running  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def model_dirs(tmp_path: Path) -> dict[str, Path]:
    """Saved fake models: {"ranking": folder, "sessionrec": folder, "state": folder}."""
    ranking, sessionrec = tmp_path / "ranking-model", tmp_path / "sessionrec-model"
    fakes.FakeEngine(DOCUMENTS).save(ranking)
    fakes.FakeRecommender(EVENTS).save(sessionrec)
    return {"ranking": ranking, "sessionrec": sessionrec, "state": tmp_path / "state"}


@pytest.fixture
def make_config(model_dirs):
    def make(**overrides) -> ServiceConfig:
        fields = {
            "ranking_model": str(model_dirs["ranking"]),
            "sessionrec_model": str(model_dirs["sessionrec"]),
            "state_dir": model_dirs["state"],
            "token": TOKEN,
        }
        return ServiceConfig.model_validate({**fields, **overrides})

    return make


@pytest.fixture
async def client(make_config) -> AsyncIterator[httpx.AsyncClient]:
    async with running(make_config()) as client:
        yield client
