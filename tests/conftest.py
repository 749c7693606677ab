"""Shared fixtures: one Ray session for the whole test run."""
from __future__ import annotations

import os
import pytest

# Before Ray starts: one thread per worker process, and fast ray.train.report.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that needs it.

    4 logical CPUs on a 2-core machine: Ray Train / Tune take some and Ray Data
    tasks still find room (with exactly 2 they starve and the job hangs).
    """
    import ray

    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()
