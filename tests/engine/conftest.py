"""Fixtures for the training-engine tests: small shapes datasets (helpers are in ``engine_helpers``)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_shapes(make_shapes) -> Path:
    """48 train / 16 val shapes images: enough for a few real iterations and an evaluation."""
    return make_shapes(seed=1, num_train=48, num_val=16)


@pytest.fixture(scope="session")
def demo_shapes(make_shapes) -> Path:
    """The demo's dataset: 240 train / 60 val shapes images (seed 0)."""
    return make_shapes()
