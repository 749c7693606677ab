"""``ray job submit`` against a head started with ``ray start --head``, the way a cluster user runs raydet."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from engine_helpers import DEMO_CONFIG, quick_overrides
from helpers import REPO

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A one-node Ray cluster on loopback; yields the dashboard (job server) address; stops only what it started."""
    gcs_port, dashboard_port = free_port(), free_port()
    # Ray's fixed default ports (the agent's 52365 …) are taken by the test session's own Ray: pick free ones.
    own_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port")]
    temp_dir = tempfile.mkdtemp(prefix="rayhead", dir="/tmp")  # short: Ray's socket paths must stay short
    # As from an activated virtualenv: a job's `python` is this environment's.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--num-cpus=4",
         f"--temp-dir={temp_dir}", "--disable-usage-stats", *own_ports],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env,
    )
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            if head.poll() is not None:
                raise RuntimeError(f"ray start failed:\n{head.stdout.read()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", dashboard_port)) == 0:
                    break
            time.sleep(1)
        else:
            raise TimeoutError("the Ray head's job server did not come up in 90 s")
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:  # they are all in the head's process group
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=15)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_job_submit_trains_and_writes_final_metrics(ray_head, small_shapes, tmp_path):
    work_dir = tmp_path / "job_work_dir"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # the head made ~/.ray/auth_token; the job CLI must send it
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
