"""Shared fixtures: one Ray session for the whole test run, the shapes datasets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

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


@pytest.fixture(scope="session")
def make_shapes(tmp_path_factory) -> Callable[..., Path]:
    """``make_shapes(seed, num_train, num_val)``: a built-in shapes dataset, generated once per session."""
    from raydet.data.shapes import generate_shapes

    made: dict[tuple[int, int, int], Path] = {}

    def make(seed: int = 0, num_train: int = 240, num_val: int = 60) -> Path:
        key = (seed, num_train, num_val)
        if key not in made:
            made[key] = tmp_path_factory.mktemp(f"shapes_{seed}_{num_train}_{num_val}")
            generate_shapes(made[key], seed=seed, num_train=num_train, num_val=num_val)
        return made[key]

    return make


@pytest.fixture(scope="session")
def small_shapes(make_shapes) -> Path:
    """48 train / 16 val shapes images: enough for a few real iterations and an evaluation."""
    return make_shapes(seed=1, num_train=48, num_val=16)


@pytest.fixture(scope="session")
def demo_shapes(make_shapes) -> Path:
    """The demo's dataset: 240 train / 60 val shapes images (seed 0)."""
    return make_shapes()
