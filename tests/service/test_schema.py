"""schemathesis against the service's own OpenAPI schema: no 5xx, every response matches the schema.

Generated requests (valid and invalid) go to the app in process, with the write token, so write
endpoints are exercised too. The models are the small fakes (tests/service/fakes.py).

(The schema is loaded at import: `schemathesis.pytest.from_fixture` does not work with pytest 9.)
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from nlprec.service.app import create_app
from nlprec.service.config import ServiceConfig
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from service_support import DOCUMENTS, EVENTS, TOKEN, auth, fake_loaders, fakes

REQUEST_TIMEOUT_S = 120
ROOT = Path(tempfile.mkdtemp(prefix="nlprec-service-schema-"))
fakes.FakeEngine(DOCUMENTS).save(ROOT / "ranking")
fakes.FakeRecommender(EVENTS).save(ROOT / "sessionrec")
APP = create_app(
    ServiceConfig(
        ranking_model=str(ROOT / "ranking"),
        sessionrec_model=str(ROOT / "sessionrec"),
        state_dir=ROOT / "state",
        token=TOKEN,
        limits={"max_k": 50, "max_batch": 8, "max_query_chars": 200, "max_document_chars": 2000},
    ),
    fake_loaders(),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def cleanup():
    yield
    asgi.shutdown_lifespans()
    shutil.rmtree(ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def models_loaded():
    """Every test starts with the models loaded.

    schemathesis' pytest plugin ends the app's lifespan after each test, so each operation's test
    starts a fresh one, whose models load in the background: until then `/ready` (and every model
    route) answers 503 loading, which the server-error check counts as a failure.
    """
    with asgi.get_client(APP) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready", headers=auth()).status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready", headers=auth()).text
            time.sleep(0.02)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case):
    # Events more than a day in the future are refused (422) by the recommender, a rule relative
    # to the clock that the schema cannot state; every other valid request must be accepted.
    excluded = [positive_data_acceptance] if case.operation.path == "/v1/events" else []
    # schemathesis gives each in-process request 10 s by default: a hidden timing assertion that
    # a starved CI machine could trip. Conformance is what this test checks, so the bound is wide.
    case.call_and_validate(headers=auth(), excluded_checks=excluded, timeout=REQUEST_TIMEOUT_S)
