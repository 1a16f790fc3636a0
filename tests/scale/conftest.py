"""Shared by the scale tests: one local Ray instance per session (slow to start).

The `mlflow server` fixture lives in tests/conftest.py (the core tests use it too)."""

from __future__ import annotations

import pytest

RAY_START_ATTEMPTS = 2


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
