"""A local Ray instance shared by every scale test (Ray start-up takes seconds on a small machine)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """`ray.init(num_cpus=2)` once per session, shut down at the end."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[data]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
