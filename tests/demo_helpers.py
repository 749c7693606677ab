"""Helpers for the tests that run the demo config (training, the command lines): the config, shrunk; the
metrics line ``python -m raydet.test`` prints."""
from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import REPO

DEMO_CONFIG = REPO / "configs/demo/fcos_tiny_shapes.yaml"


def quick_overrides(data_root: Path, epochs: int = 1) -> list[str]:
    """The demo config shrunk to a short CPU run on ``data_root``."""
    return [f"data.data_root={data_root}", f"runner.max_epochs={epochs}", "evaluation.interval=1",
            "log_config.interval=2", "lr_config.warmup_iters=5", "data.samples_per_gpu=4"]


def printed_metrics(stdout: str) -> dict[str, float]:
    """The metrics line ``python -m raydet.test`` ends with (the last JSON line of its output: Ray may forward
    a worker's log line at any time)."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
