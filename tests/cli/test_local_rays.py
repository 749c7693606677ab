"""Two raydet commands on one host, each with the local Ray it started: every process of each Ray asks its own
cluster (``raydet.engine.ray_connection``), so neither prints Ray's "Found multiple active Ray instances"
(Ray Train's ``PlacementGroupCleaner`` asked the newest instance) and both finish."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from tests.demo_helpers import DEMO_CONFIG, quick_overrides
from tests.helpers import REPO, own_lines, run_cli, with_repo_on_pythonpath

pytestmark = pytest.mark.ray  # each test starts local Rays of its own

#: What a Ray process printed when it resolved the wrong instance (Ray Train's cleaner, or any state API call).
WRONG_CLUSTER = ("multiple active Ray instances", "PlacementGroupCleaner")


def laptop_env() -> dict[str, str]:
    """This session's environment without its cluster's address: each command starts a Ray of its own."""
    return with_repo_on_pythonpath({key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"})


WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("asked", [None, "1"])
def test_a_local_rays_processes_resolve_that_ray_and_run_no_preemption_watcher(asked):
    """Ray Train's controller reads ``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER`` from its driver's environment: the
    command's, or a sweep trial's (a task here); a value the user set is kept."""
    probe = ("import os, ray\n"
             "from raydet.engine.ray_connection import connect_ray\n"
             "connect_ray(1)\n"
             "seen = ray.get(ray.remote(lambda: os.environ.get('RAY_ADDRESS')).remote())\n"
             "print(seen == ray.get_runtime_context().gcs_address, seen)\n"
             f"print(os.environ.get('{WATCHER}'), ray.get(ray.remote(lambda: os.environ.get('{WATCHER}')).remote()))\n")
    env = {key: value for key, value in laptop_env().items() if key != WATCHER} | ({WATCHER: asked} if asked else {})
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=100)
    assert out.returncode == 0, out.stderr[-3000:]
    addresses, watcher = out.stdout.splitlines()[-2:]
    assert addresses.split()[0] == "True", out.stdout  # a task's RAY_ADDRESS is its own cluster's GCS
    assert watcher.split() == [asked or "0"] * 2, out.stdout  # the command's and its Ray's processes'


@pytest.mark.timeout(60)
def test_a_clusters_processes_keep_ray_trains_preemption_watcher(ray_session):
    """A cluster's nodes can be drained (spot capacity): Ray's default, the watcher, stays."""
    assert ray_session.get(ray_session.remote(lambda: os.environ.get(WATCHER)).remote()) is None
    assert os.environ.get(WATCHER) is None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_local_training_and_an_evaluation_at_once_each_finish_without_the_other_rays_noise(small_shapes, tmp_path):
    """The evaluation's Ray starts once the training's has: the training's processes (Ray Train's placement-group
    cleaner among them) start while a newer instance runs, the one a confused process would pick."""
    from raydet.builder import build_model
    from raydet.config import load_config

    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    torch.save({"model": build_model(config).state_dict(), "config": config.to_yaml()}, tmp_path / "model.pt")
    log = tmp_path / "training.log"
    training = subprocess.Popen([sys.executable, "-m", "raydet.train", str(DEMO_CONFIG), "--set",
                                 *quick_overrides(small_shapes), "--work-dir", str(tmp_path / "training")],
                                cwd=REPO, env=laptop_env(), stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while "Started a local Ray instance" not in log.read_text() and time.time() < deadline:
        assert training.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
    evaluation = run_cli("raydet.test", str(DEMO_CONFIG), str(tmp_path / "model.pt"), "--set",
                         *quick_overrides(small_shapes), env={"RAY_ADDRESS": ""}, timeout=300)
    codes = {"training": training.wait(timeout=400), "evaluation": evaluation.returncode}
    outputs = {"training": log.read_text(), "evaluation": evaluation.stdout + evaluation.stderr}
    for name, output in outputs.items():
        assert codes[name] == 0, f"{name}:\n{output[-3000:]}"
        assert not [line for line in output.splitlines() if any(text in line for text in WRONG_CLUSTER)], name
    assert "Started a local Ray instance" in outputs["training"]
    assert (tmp_path / "training" / "final_metrics.json").is_file(), own_lines(outputs["training"])[-5:]
    store = f"sqlite:///{tmp_path / 'training' / 'mlflow.db'}"  # the summary says how to see the run
    assert f"MLflow:      mlflow ui --backend-store-uri {store}\n" in outputs["training"], outputs["training"][-2000:]
    assert "?workflowType=machine_learning" in outputs["training"]
    assert '"bbox_mAP"' in evaluation.stdout
