"""``ray job submit`` and ``ray job stop`` against a head started with ``ray start --head``, the way a cluster
user runs raydet."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.demo_helpers import DEMO_CONFIG, quick_overrides
from tests.engine.test_clean_stops import mlflow_statuses
from tests.helpers import REPO
from tests.ray_nodes import RAY, LocalCluster


@pytest.fixture(scope="module")
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


def job_cli(head: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``ray job ARGS --address HEAD`` (the command line, not the SDK: in a process connected to another Ray,
    ``JobSubmissionClient`` asked that Ray's dashboard instead of ``HEAD``)."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return subprocess.run([RAY, "job", *args[:1], "--address", head, *args[1:]], env=env, capture_output=True,
                          text=True, timeout=timeout)


def stop_when_printed(head: str, entrypoint: str, text: str, cwd: Path) -> str:
    """Submit ``entrypoint``; once its logs show ``text``, ``ray job stop`` it; return its logs once it stopped.

    ``RAY_JOB_STOP_WAIT_TIME_S`` (in the job's environment, which its supervisor reads): ``ray job stop`` sends
    SIGTERM, then SIGKILL after that many seconds (Ray's default, 3, leaves too little time to abort the
    workers and end the MLflow runs; the README says so).
    """
    job = f"stop-{os.urandom(4).hex()}"
    runtime_env = json.dumps({"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "60", "PYTHONPATH": str(REPO)}})
    deadline = time.time() + 90
    while True:  # the job server answers before the head's agent has registered: Ray says "try again later"
        submitted = job_cli(head, "submit", "--no-wait", "--submission-id", job, "--working-dir", str(cwd),
                            "--runtime-env-json", runtime_env, "--", *entrypoint.split())
        if submitted.returncode == 0 or "No available agent" not in submitted.stderr + submitted.stdout \
                or time.time() > deadline:
            break
        time.sleep(3)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    deadline = time.time() + 300
    while text not in (logs := job_cli(head, "logs", job).stdout):
        status = job_cli(head, "status", job).stdout.lower()  # "…: RUNNING", "Job '…' was stopped"
        assert "pending" in status or "running" in status, status + logs[-3000:]
        assert time.time() < deadline, logs[-3000:]
        time.sleep(2)
    stopped = job_cli(head, "stop", job)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    deadline = time.time() + 90
    while "stopped" not in (status := job_cli(head, "status", job).stdout.lower()) and time.time() < deadline:
        time.sleep(2)
    assert "was stopped" in status, status
    return job_cli(head, "logs", job).stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_job_stop_stops_a_training_cleanly(ray_head, small_shapes, tmp_path):
    """The job is stopped long before it could end: a job that ends by itself first is SUCCEEDED, not STOPPED
    (the job CLI takes seconds per call on a loaded machine, and a 4-epoch demo had finished).  ``ray job stop``
    sends SIGTERM: a sweep stopped so is ``test_sigterm_stops_a_sweep_as_ctrl_c_does``."""
    work = tmp_path / "train_work_dir"
    overrides = " ".join([*quick_overrides(small_shapes, epochs=50), "scaling.num_workers=1",
                          "checkpoint_config.interval=1"])
    logs = stop_when_printed(ray_head, f"python -m raydet.train {DEMO_CONFIG} --work-dir {work} --set {overrides}",
                             "Epoch [2/50]", REPO)
    assert "training stopped (SIGTERM): the workers were stopped and the MLflow run ended KILLED; latest " \
           "checkpoint: " in logs, logs[-3000:]
    assert f"--work-dir {work} " in logs and "--resume auto" in logs
    assert [status for _, status in mlflow_statuses(work)] == ["KILLED"]
