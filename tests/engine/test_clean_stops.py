"""Stopping ``python -m raydet.train`` and ``python -m raydet.tune`` from outside: Ctrl+C (SIGINT to the
terminal's process group) and SIGTERM stop the workers, end the MLflow runs KILLED, keep the last checkpoint
intact and print the command that continues the run (``ray job stop``: ``tests/cli/test_job_submit.py``)."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chaos import alive_ids
from tests.cli.test_local_rays import laptop_env
from tests.demo_helpers import DEMO_CONFIG, quick_overrides
from tests.helpers import REPO, with_repo_on_pythonpath, write
from tests.tune.test_sweep_run import SWEEP_PARTS, sweep_yaml, wait_for_free_cpus


def start(command: list[str], log: Path, env: dict[str, str], cwd: Path = REPO) -> subprocess.Popen:
    """``command`` in a process group of its own (as a terminal starts it), its output into ``log``."""
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for(process: subprocess.Popen, log: Path, text: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while text not in log.read_text():
        assert process.poll() is None, f"ended before printing {text!r}:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {text!r} after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def mlflow_statuses(work_dir: Path) -> list[tuple[str, str]]:
    """(run name, status) of every MLflow run in ``work_dir``'s store, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work_dir / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["start_time ASC"])
    return [(run.info.run_name, run.info.status) for run in runs]


def training_command(data_root: Path, work_dir: Path) -> list[str]:
    """The demo on 48 images, 1 worker: 12 iterations an epoch, a checkpoint each of its 4 epochs."""
    return [sys.executable, "-m", "raydet.train", str(DEMO_CONFIG), "--work-dir", str(work_dir), "--set",
            *quick_overrides(data_root, epochs=4), "scaling.num_workers=1",
            "checkpoint_config.interval=1"]


def continue_command(output: str) -> list[str]:
    """The command a stopped training printed to continue it (with this interpreter for ``python``)."""
    line = next(line for line in output.splitlines() if line.strip().startswith("continue it with: "))
    command = shlex.split(line.split("continue it with: ", 1)[1])
    assert command[:3] == ["python", "-m", "raydet.train"] and command[-2:] == ["--resume", "auto"], command
    return [sys.executable, *command[1:]]


TRAINING_ACTORS = ("TrainController", "RayTrainWorker", "_StreamRunner", "RunRecorder")


def alive_training_actors(ray, before: set[str] = frozenset()) -> list[str]:
    """The run's kinds of actors alive in the session's cluster, but those in ``before`` (actor IDs alive before
    the run: the test process keeps a stream runner of its own once it has evaluated in process).  Read from
    the GCS actor table: the session's cluster has no dashboard for the state API."""
    from ray._private.state import actors

    return [actor["ActorClassName"] for actor_id, actor in actors().items() if actor["State"] == "ALIVE"
            and actor["ActorClassName"] in TRAINING_ACTORS and actor_id not in before]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_stops_a_local_training_and_the_printed_command_finishes_it(small_shapes, tmp_path):
    """On a laptop: the command's own local Ray; Ctrl+C reaches its whole process group, as in a terminal."""
    work, log = tmp_path / "work", tmp_path / "train.log"
    training = start(training_command(small_shapes, work), log, laptop_env())
    wait_for(training, log, "Epoch [2/4]")
    os.killpg(training.pid, signal.SIGINT)
    assert training.wait(timeout=90) == 130, log.read_text()[-3000:]
    output = log.read_text()
    assert "training stopped (SIGINT): the workers were stopped and the MLflow run ended KILLED; latest " \
           "checkpoint: " in output, output[-3000:]
    assert "Traceback" not in output.split("training stopped (SIGINT)")[1]
    [(run_name, status)] = mlflow_statuses(work)
    assert status == "KILLED"
    checkpoint = re.search(r"latest checkpoint: (\S+)", output).group(1)

    from raydet.engine.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)  # intact, and the run reached it
    assert state["epoch"] >= 1

    resumed = subprocess.run(continue_command(output), cwd=REPO, env=laptop_env(), capture_output=True, text=True,
                             timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"--resume auto: continuing {Path(checkpoint).parent.name}" in resumed.stdout
    assert f"Epoch [{state['epoch'] + 1}/4][2/12]" in resumed.stdout + resumed.stderr  # from where it stopped
    assert "Epoch [1/4][2/12]" not in resumed.stdout + resumed.stderr
    assert mlflow_statuses(work) == [(run_name, "KILLED"), (run_name, "FINISHED")]  # the same run, continued


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_stops_a_training_on_a_cluster_and_frees_its_workers(ray_session, small_shapes, tmp_path):
    work, log = tmp_path / "work", tmp_path / "train.log"
    before = alive_ids(ray_session)
    training = start(training_command(small_shapes, work), log, with_repo_on_pythonpath(dict(os.environ)))
    wait_for(training, log, "Epoch [2/4]")
    training.send_signal(signal.SIGTERM)
    assert training.wait(timeout=60) == 143, log.read_text()[-3000:]
    output = log.read_text()
    assert "training stopped (SIGTERM): the workers were stopped and the MLflow run ended KILLED" in output
    command = continue_command(output)
    assert command[command.index("--work-dir") + 1] == str(work)
    assert [status for _, status in mlflow_statuses(work)] == ["KILLED"]
    deadline = time.time() + 30  # the controller, workers and helper actors of the run end with it
    while alive_training_actors(ray_session, before) and time.time() < deadline:
        time.sleep(1)
    assert alive_training_actors(ray_session, before) == []
    wait_for_free_cpus(ray_session, ray_session.cluster_resources()["CPU"], timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_sigterm_stops_a_sweep_as_ctrl_c_does(ray_session, small_shapes, tmp_path):
    """Tune saves the sweep's state and the command says how to continue it; the parent and the trial's MLflow
    runs end KILLED (Ctrl+C itself, and the resume: ``tests/tune/test_sweep_run.py``)."""
    write(tmp_path / "sweep_test_parts.py", SWEEP_PARTS)
    sweep = write(tmp_path / "sweep.yaml", sweep_yaml(small_shapes))
    work, log = tmp_path / "work", tmp_path / "sweep.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = alive_ids(ray_session)
    tuning = start([sys.executable, "-m", "raydet.tune", str(sweep), "--work-dir", str(work)], log, env, cwd=tmp_path)
    wait_for(tuning, log, "Epoch [1/2]", timeout=300)
    tuning.send_signal(signal.SIGTERM)
    assert tuning.wait(timeout=120) == 1, log.read_text()[-3000:]
    output = log.read_text()
    assert f"the sweep was interrupted: continue it with python -m raydet.tune {sweep} --work-dir {work} " \
           "--resume" in output
    statuses = mlflow_statuses(work)
    assert ("sweep", "KILLED") in statuses and {status for _, status in statuses} == {"KILLED"}, statuses
    wait_for_free_cpus(ray_session, ray_session.cluster_resources()["CPU"])
    assert alive_training_actors(ray_session, before) == []
