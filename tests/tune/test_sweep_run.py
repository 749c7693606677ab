"""A real sweep on the test session's Ray instance: Tune trials that are whole Ray Train runs, ASHA stopping
the weak one, Ctrl+C, ``--resume``, the results, the best config and MLflow's parent and child runs."""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.chaos import alive_ids, wait_for_no_leftovers
from tests.helpers import REPO, run_cli, write

DEMO_SWEEP = REPO / "configs/tune/demo_shapes.yaml"

# Registered only in processes that import it: the trials must import it themselves (custom_imports).
SWEEP_PARTS = '''
from raydet.models.necks.fpn import FPN
from raydet.registry import MODELS


@MODELS.register()
class SweepTestFPN(FPN):
    """FPN under a name only this module registers."""
'''


def sweep_yaml(data_root) -> str:
    """The demo sweep shortened: 2 epochs on 48 images, 1 worker, one trial at a time, the learning rate on a grid
    whose second value (1e-7) cannot lower the loss, so ASHA stops that trial after its first epoch."""
    return f"""_base_: {DEMO_SWEEP}
custom_imports: [sweep_test_parts]
model:
  neck: {{type: SweepTestFPN}}
search:
  _delete_: true
  optimizer.lr: {{grid: [0.004, 1.0e-7, 0.003]}}
tune:
  metric: loss
  mode: min
  num_samples: 1
  scheduler: {{type: ASHA, grace_period: 1, reduction_factor: 2}}
  max_concurrent_trials: 1
  trial: {{num_workers: 1}}
runner: {{max_epochs: 2}}
evaluation: {{interval: 1}}
checkpoint_config: {{interval: 2}}
lr_config: {{step: [2], warmup_iters: 5}}
data: {{data_root: {data_root}, samples_per_gpu: 4}}
log_config: {{interval: 4}}
mlflow: {{num_images: 0}}
"""


def wait_for_free_cpus(ray, cpus: float, timeout: float = 120) -> None:
    """Wait until the session's cluster has ``cpus`` free (an interrupted sweep's actors and placement groups are
    released by Ray after its driver exits); fail naming what still holds them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ray.available_resources().get("CPU", 0) >= cpus - 1e-9:
            return
        time.sleep(1)
    raise AssertionError(f"{ray.available_resources().get('CPU', 0)} of {ray.cluster_resources().get('CPU', 0)} "
                         f"CPUs free {timeout} s after the interrupted sweep ended, {cpus} needed; "
                         f"{what_holds_the_cluster()}")


def what_holds_the_cluster() -> str:
    """The cluster's alive actors and its placement groups not removed, each with its job (this test process's
    is ``01000000``) and, for a group, its creator actor's class and whether that creator is dead."""
    from ray._private.state import actors, state
    from ray.core.generated import gcs_pb2

    table = actors()
    alive = sorted(f"{actor['ActorClassName']} (job {actor['JobID']})" for actor in table.values()
                   if actor["State"] == "ALIVE")
    raw_groups = state._connect_and_get_accessor().get_placement_group_table()
    groups = []
    for group in map(gcs_pb2.PlacementGroupTableData.FromString, raw_groups):
        if group.state == gcs_pb2.PlacementGroupTableData.REMOVED:
            continue
        creator = table.get(group.creator_actor_id.hex(), {}).get("ActorClassName")
        creator = "the job" if creator is None else f"{creator} ({'dead' if group.creator_actor_dead else 'alive'})"
        groups.append(f"{[dict(bundle.unit_resources) for bundle in group.bundles]} "
                      f"{gcs_pb2.PlacementGroupTableData.PlacementGroupState.Name(group.state)}, job "
                      f"{group.creator_job_id.hex()}, created by {creator}")
    return f"alive actors: {alive}; placement groups: {groups}"


def run_or_explain(command: list[str], timeout: float, **popen) -> subprocess.CompletedProcess:
    """``subprocess.run(command)``; past ``timeout`` the command's process group is killed and the failure shows
    the end of its output and the cluster's placement groups and actors (what a trial may be waiting for)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **popen)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        import ray
        from ray._private.state import actors as actor_table

        groups = [(group["state"], group["bundles"]) for group in ray.util.placement_group_table().values()
                  if group["state"] != "REMOVED"]
        actors = sorted(actor["ActorClassName"] for actor in actor_table().values() if actor["State"] == "ALIVE")
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"{command} still ran after {timeout} s; placement groups {groups}; alive actors "
                             f"{actors}\nstdout: {out[-3000:]}\nstderr: {err[-6000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def read_rows(work) -> dict[str, dict[str, str]]:
    with open(work / "results.csv") as file:
        return {row["trial_id"]: row for row in csv.DictReader(file)}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sweep_stops_a_weak_trial_survives_ctrl_c_and_resumes(ray_session, small_shapes, tmp_path):
    write(tmp_path / "sweep_test_parts.py", SWEEP_PARTS)  # beside the sweep: Ray puts the driver's folder on the path
    sweep = write(tmp_path / "sweep.yaml", sweep_yaml(small_shapes).replace(
        "mlflow: {num_images: 0}", "mlflow: {num_images: 0, registered_model_name: shapes-sweep, alias: best}"))
    work = tmp_path / "work"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,  # one Ray instance per host
           "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "raydet.tune", str(sweep), "--work-dir", str(work)]

    # Ctrl+C as soon as the second trial has started: the first one has finished by then.
    before = alive_ids(ray_session)  # what earlier tests left is not the sweep's to free
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline and first.poll() is None:
        if len(list(work.glob("trials/*/config.yaml"))) >= 2:
            break
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=180)
    assert first.returncode == 1, out[-4000:]
    assert (f"the sweep was interrupted: continue it with python -m raydet.tune {sweep} --work-dir {work} "
            "--resume") in out
    rows = read_rows(work)
    done, stopped = sorted(rows)
    assert (rows[done]["optimizer.lr"], rows[done]["status"], rows[done]["epochs"]) == ("0.004", "finished", "2")
    assert (rows[stopped]["optimizer.lr"], rows[stopped]["status"]) == ("1e-07", "interrupted")

    # the interrupted sweep's trial, controller, workers and placement groups are gone, and a trial fits
    wait_for_no_leftovers(ray_session, before, timeout_s=120, explain=what_holds_the_cluster)
    wait_for_free_cpus(ray_session, float(re.search(r"each holding ([0-9.]+) CPU", out).group(1)))
    resumed = run_or_explain(command + ["--resume"], cwd=tmp_path, env=env, timeout=500)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    rows = read_rows(work)
    assert len(rows) == 3
    done_again, stopped_again, after = sorted(rows)
    assert (done_again, stopped_again) == (done, stopped)
    assert (rows[done]["status"], rows[done]["epochs"]) == ("finished", "2")  # not run again:
    assert (work / "trials" / done / "train.log").read_text().count("Epoch [2/2] evaluation") == 1
    assert (rows[stopped]["status"], rows[stopped]["epochs"]) == ("stopped early", "1")  # ASHA, after epoch 1
    # the trial after the stopped one got a worker group (its placement group was freed) and trained
    assert rows[after]["optimizer.lr"] == "0.003" and rows[after]["status"] != "error"
    assert int(rows[after]["epochs"]) >= 1 and float(rows[after]["loss"]) < float(rows[stopped]["loss"])

    best = min((row for row in rows.values() if row["status"] == "finished"), key=lambda row: float(row["loss"]))
    assert f"*  {best['trial_id']}" in resumed.stdout  # the printed table marks the best trial
    assert f"best trial {best['trial_id']}: loss " in resumed.stdout
    assert best["checkpoint"].endswith("checkpoint.pt") and os.path.isfile(best["checkpoint"])
    best_config = work / "best_config.yaml"
    assert f"lr: {best['optimizer.lr']}" in best_config.read_text()
    checked = run_cli("raydet.check", str(best_config), cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert checked.returncode == 0 and checked.stdout.rstrip().endswith("config OK"), checked.stderr

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = [run for run in runs if run.info.run_name == "sweep"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent[0].info.run_id)} >= {"results.csv", "best_config.yaml",
                                                                             "sweep.yaml"}
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    status_of = {}
    for child in children:
        status_of.setdefault(child.data.tags["raydet.trial_id"], []).append(child.info.status)
        assert child.data.params["search.optimizer.lr"] in ("0.004", "1e-07", "0.003")
    assert status_of[done] == ["FINISHED"]
    assert sorted(status_of[stopped]) == ["KILLED", "KILLED"]  # interrupted, then stopped by ASHA
    assert "RUNNING" not in status_of[after]
    finished_child = next(c for c in children if c.data.tags["raydet.trial_id"] == done)
    assert [m.step for m in client.get_metric_history(finished_child.info.run_id, "val/bbox_mAP")] == [12, 24]
    # the best trial's model, logged on the sweep's run once the sweep was done, and registered
    (version,) = client.search_model_versions("name='shapes-sweep'")
    assert (str(version.version), version.run_id, version.tags["raydet.trial_id"]) == ("1", parent[0].info.run_id,
                                                                                 best["trial_id"])
    assert str(client.get_model_version_by_alias("shapes-sweep", "best").version) == "1"
    assert "the best trial's model: models:/m-" in resumed.stdout
    assert "registered as models:/shapes-sweep/1" in resumed.stdout
