"""``ray job submit`` against a head started with ``ray start --head``, the way a cluster user runs raydet."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.demo_helpers import DEMO_CONFIG, quick_overrides
from tests.helpers import REPO
from tests.ray_nodes import RAY, LocalCluster


@pytest.fixture
def ray_head():
    """A one-node Ray cluster of its own, with a job server; yields the job server's address."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    cluster = LocalCluster(num_cpus=4, env=env, dashboard=True)
    try:
        yield f"http://127.0.0.1:{cluster.dashboard_port}"
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_job_submit_trains_and_writes_final_metrics(ray_head, small_shapes, tmp_path):
    work_dir = tmp_path / "job_work_dir"
    env = {**os.environ}  # with the head's RAY_AUTH_MODE and RAY_AUTH_TOKEN: the job CLI must send the token
    env.pop("RAY_ADDRESS", None)
    command = [RAY, "job", "submit", "--address", ray_head, "--working-dir", str(REPO), "--",
               "python", "-m", "raydet.train", str(DEMO_CONFIG.relative_to(REPO)), "--work-dir", str(work_dir),
               "--set", *quick_overrides(small_shapes), "scaling.num_workers=2", "scaling.resources_per_worker.CPU=1"]
    deadline = time.time() + 90
    while True:  # the job server answers before the head's agent has registered: Ray says "try again later"
        submitted = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
        output = submitted.stdout + submitted.stderr
        if "No available agent" not in output or time.time() > deadline:
            break
        time.sleep(3)
    assert submitted.returncode == 0, output[-4000:]
    assert "succeeded" in output
    final = json.loads((work_dir / "final_metrics.json").read_text())
    assert final["epochs"] == 1 and final["iters"] == 6  # 48 images, 4 per batch, 2 workers
    assert final["replicas_identical"] is True
    assert Path(final["best_checkpoint"]).is_file()
    assert "Epoch [1/1][6/6]" in output  # rank 0's progress lines reach `ray job logs`
