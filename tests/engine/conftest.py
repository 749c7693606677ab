"""Fixtures for the training-engine tests: small shapes datasets and the demo config."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import REPO

DEMO_CONFIG = REPO / "configs/demo/fcos_tiny_shapes.yaml"


@pytest.fixture(scope="session")
def small_shapes(make_shapes) -> Path:
    """48 train / 16 val shapes images: enough for a few real iterations and an evaluation."""
    return make_shapes(seed=1, num_train=48, num_val=16)


def quick_overrides(data_root: Path, epochs: int = 1) -> list[str]:
    """The demo config shrunk to a short CPU run on ``data_root``."""
    return [f"data.data_root={data_root}", f"runner.max_epochs={epochs}", "evaluation.interval=1",
            "log_config.interval=2", "lr_config.warmup_iters=5", "data.samples_per_gpu=4"]


@pytest.fixture(scope="session")
def demo_shapes(make_shapes) -> Path:
    """The demo's dataset: 240 train / 60 val shapes images (seed 0)."""
    return make_shapes()
