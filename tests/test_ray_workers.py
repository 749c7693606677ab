"""Configs shipped to Ray worker processes build there with no set-up on the worker."""
from __future__ import annotations

import pytest

from raydet.config import load_config
from tests.helpers import write


@pytest.mark.timeout(120)
def test_custom_imports_resolve_in_a_ray_worker(ray_session, tmp_path, monkeypatch):
    write(tmp_path / "ray_worker_parts.py", """
import os
import torch
from raydet.registry import MODELS


@MODELS.register()
class WorkerNeck(torch.nn.Module):
    def __init__(self, channels: int = 4):
        super().__init__()
        self.proj = torch.nn.Conv2d(channels, channels, 1)
        self.pid = os.getpid()
""")
    monkeypatch.syspath_prepend(str(tmp_path))  # the driver imports it from here
    config = load_config(write(tmp_path / "c.yaml",
                               "custom_imports: [ray_worker_parts]\nmodel: {type: WorkerNeck, channels: 6}\n"))

    @ray_session.remote(runtime_env={"env_vars": {"PYTHONPATH": str(tmp_path)}})
    def build_in_worker(config):
        import os
        import sys

        from raydet.builder import build_model

        already_imported = "ray_worker_parts" in sys.modules
        model = build_model(config)
        return already_imported, model.proj.in_channels, model.pid, os.getpid()

    already_imported, channels, built_pid, worker_pid = ray_session.get(build_in_worker.remote(config))
    assert not already_imported  # the worker imported it because the config said so
    assert channels == 6
    assert built_pid == worker_pid != __import__("os").getpid()
