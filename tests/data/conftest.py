"""Fixtures for the data tests: a tiny shapes dataset (helpers are in ``data_helpers``)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shapes_dir(make_shapes) -> Path:
    """16 train / 6 val synthetic images (seed 0)."""
    return make_shapes(seed=0, num_train=16, num_val=6)
