"""The settings a run hands Ray Train's controller through the driver's environment, without Ray."""
from __future__ import annotations

import os

import pytest
from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

from raydet.config import load_config
from raydet.config.parsed import parse_config
from raydet.engine.launcher import _controller_environment, worker_group
from tests.demo_helpers import DEMO_CONFIG

WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


@pytest.fixture
def workers(monkeypatch):
    monkeypatch.delenv(WATCHER, raising=False)
    return worker_group(parse_config(load_config(DEMO_CONFIG)), num_workers=None, use_gpu=None)


@pytest.mark.timeout(60)
def test_a_local_rays_run_starts_no_preemption_watcher_and_a_clusters_run_does(workers):
    assert WATCHER in ENV_VARS_TO_PROPAGATE  # Ray Train's controller reads it from the driver's environment at fit
    with _controller_environment(workers, local_ray=True):
        assert os.environ[WATCHER] == "0"
    assert WATCHER not in os.environ  # as before the fit
    with _controller_environment(workers, local_ray=False):
        assert WATCHER not in os.environ  # Ray's default: the watcher runs


@pytest.mark.timeout(60)
def test_a_preemption_watcher_asked_for_in_the_environment_runs_on_a_local_ray(workers, monkeypatch):
    monkeypatch.setenv(WATCHER, "1")
    with _controller_environment(workers, local_ray=True):
        assert os.environ[WATCHER] == "1"
