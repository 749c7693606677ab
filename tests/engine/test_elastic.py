"""Elastic training on real ``ray start`` nodes: a ``[1, 2]`` worker group grows when a node joins, shrinks when
one is lost or preempted, and trains on the same images in the same optimizer steps as fixed groups.

One run goes through it all, while a helper thread changes the cluster (``run_scenario``):

1. it starts at 1 worker (the head has one ``NODE_SLOT``); a second node joins -> 2 workers (node added);
2. every process of that node is killed -> 1 worker, at once (node lost);
3. a node joins again -> 2 workers; it is drained as a spot reclaim is -> the workers checkpoint at the
   notice, and the run goes on at 1 worker from there (preemption).

Every iteration is checkpointed (``interval_iters: 1``) so each restart's position is known.  The data set
needs no top-up (16 landscape and 16 portrait images, 4 per batch, 8 batches: 4 steps of 2), so the images
the workers count are exactly ``epochs × 32``.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from raydet import storage
from raydet.config import load_config
from raydet.engine.checkpoint import load_checkpoint
from raydet.engine.launcher import launch
from tests.demo_helpers import DEMO_CONFIG, quick_overrides
from tests.engine.failure_injection import HoldGroupOfSize, PauseUntil
from tests.engine.test_multi_node import preempt, run_with_helper, wait_for_file
from tests.ray_nodes import NODE_SLOT, wait_for_nodes

EPOCHS = 3
IMAGES = 32
IMAGES_PER_ITERATION = 8  # an iteration: one batch of 4 per worker of the reference group (2)
BUCKET = "raydet-elastic-test"


@pytest.fixture(scope="module")
def run_storage(s3_server) -> str:
    s3_server.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/runs"


@pytest.fixture(scope="module")
def even_shapes(make_shapes) -> Path:
    """32 train images, 16 landscape and 16 portrait (seed 6): batches of 4 need no repeated image."""
    return make_shapes(seed=6, num_train=IMAGES, num_val=8)


def config_overrides(data_root: Path, storage: str, num_workers: str, name: str,
                     one_per_node: bool = True) -> list[str]:
    per_worker = f"{{CPU: 1, {NODE_SLOT}: 1}}" if one_per_node else "{CPU: 1}"
    return [*quick_overrides(data_root, epochs=EPOCHS), "log_config.interval=1", f"scaling.num_workers={num_workers}",
            f"scaling.resources_per_worker={per_worker}", f"scaling.storage_path={storage}",
            "scaling.max_failures=4", "scaling.resize_check_interval_s=1", "checkpoint_config.interval_iters=1",
            f"mlflow.run_name={name}"]


def wait_for_line(path: Path, text: str, count: int = 1, timeout: float = 240) -> float:
    """When ``path`` (a run's ``train.log``) holds ``text`` ``count`` times."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().count(text) >= count:
            return time.time()
        time.sleep(0.2)
    raise TimeoutError(f"{text!r} ×{count} not in {path} after {timeout} s:\n"
                       + (path.read_text()[-3000:] if path.exists() else ""))


@pytest.fixture(scope="module")
def fixed_runs(ray_session, even_shapes, run_storage, tmp_path_factory) -> dict[int, dict]:
    """The references: the same config and seed with a fixed group of 1 and of 2 workers (both on the head)."""
    wait_for_nodes(ray_session, 1)
    runs = {}
    for workers in (1, 2):
        config = load_config(DEMO_CONFIG, config_overrides(even_shapes, run_storage, str(workers), f"fixed{workers}",
                                                           one_per_node=False))
        runs[workers] = launch(config, tmp_path_factory.mktemp(f"fixed{workers}") / "wd").final_metrics
    return runs


@pytest.fixture(scope="module")
def elastic_run(ray_cluster, ray_session, even_shapes, run_storage, tmp_path_factory) -> dict:
    """The scenario of the module docstring; returns the final metrics, the log and the helper's timestamps."""
    wait_for_nodes(ray_session, 1)
    started = len(ray_cluster.workers)
    marks = tmp_path_factory.mktemp("marks")
    work_dir = tmp_path_factory.mktemp("elastic") / "wd"
    log = work_dir / "train.log"
    config = load_config(DEMO_CONFIG, config_overrides(even_shapes, run_storage, "[1,2]", "elastic"))

    def change_the_cluster(events: dict) -> None:
        wait_for_file(marks / "one_at_2")  # 1 worker, iteration 2 (its checkpoint at 1 taken)
        events["added"] = time.time()
        ray_cluster.add_node(num_cpus=2, resources={NODE_SLOT: 1})
        events["grown"] = wait_for_line(log, "resized 1 -> 2 workers")
        wait_for_file(marks / "two_at_4")  # 2 workers, iteration 4
        ray_cluster.workers[-1].kill()
        events["killed"] = time.time()
        events["shrunk"] = wait_for_line(log, "resized 2 -> 1 workers")
        wait_for_file(marks / "one_at_6")
        events["added_again"] = time.time()
        ray_cluster.add_node(num_cpus=2, resources={NODE_SLOT: 1})
        events["grown_again"] = wait_for_line(log, "resized 1 -> 2 workers", count=2)
        wait_for_file(marks / "two_at_7")
        deadline_s = 10
        events["notice"] = preempt(ray_session, ray_cluster, deadline_s)
        time.sleep(3)  # Ray Train's preemption watcher polls every second here (conftest)
        (marks / "drained").touch()
        wait_for_line(log, "is being preempted")
        time.sleep(max(0.0, events["notice"] + deadline_s + 1 - time.time()))
        ray_cluster.workers[-1].kill()  # the cloud takes the node back at the deadline
        events["reclaimed"] = time.time()

    hooks = [HoldGroupOfSize(2, 1, str(marks / "one_at_2")), HoldGroupOfSize(4, 2, str(marks / "two_at_4")),
             HoldGroupOfSize(6, 1, str(marks / "one_at_6")),
             PauseUntil(7, str(marks / "two_at_7"), str(marks / "drained")),  # the notice comes here
             HoldGroupOfSize(8, 2, str(marks / "two_at_8"))]  # until the node is gone
    try:
        outcome, events = run_with_helper(lambda: launch(config, work_dir, step_hooks=hooks), change_the_cluster)
    finally:
        for node in ray_cluster.workers[started:]:
            node.stop()
        del ray_cluster.workers[started:]
    wait_for_nodes(ray_session, 1)
    print("elastic timeline (s): "
          f"node added -> training at 2 workers {events['grown'] - events['added']:.1f}; "
          f"node killed -> training at 1 worker {events['shrunk'] - events['killed']:.1f}; "
          f"node added again -> 2 workers {events['grown_again'] - events['added_again']:.1f}")
    return {"final": outcome.final_metrics, "log": log.read_text(), "events": events, "work_dir": work_dir}


def last_weights(final: dict) -> dict[str, torch.Tensor]:
    """The trained weights (no BatchNorm statistics) of a run's latest checkpoint: its last epoch's."""
    run_folder = final["best_checkpoint"].rsplit("/", 2)[0]
    saved = [load_checkpoint(storage.join(run_folder, name)) for name in storage.list_dir(run_folder)
             if name.startswith("checkpoint_") and not name.endswith(".json")]  # not Ray's manager snapshot
    model = max(saved, key=lambda checkpoint: checkpoint["iteration"])["model"]
    return {name: value.float() for name, value in model.items()
            if "running_" not in name and "num_batches" not in name}


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum(((a[name] - b[name]) ** 2).sum() for name in a)))


def resizes(run: dict) -> list[tuple[int, str]]:
    return [(resize["workers"], resize["reason"]) for resize in run["final"]["resizes"]]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_elastic_group_grows_when_a_node_joins_and_trains_like_fixed_groups(elastic_run, fixed_runs):
    final, log = elastic_run["final"], elastic_run["log"]
    first = final["resizes"][0]
    assert (first["workers"], first["reason"]) == (2, "node added")
    assert f"resized 1 -> 2 workers at iteration {first['iteration']} (images seen {first['images_seen']}): " \
           "node added" in log
    assert first["images_seen"] == first["iteration"] * IMAGES_PER_ITERATION  # counted by the workers, at the resize
    # what the workers consumed, over 4 restarts: every image once per epoch, none lost or repeated
    assert final["images_seen"] == EPOCHS * IMAGES
    assert final["iters"] == fixed_runs[2]["iters"] == EPOCHS * IMAGES // IMAGES_PER_ITERATION
    assert fixed_runs[1]["images_seen"] == fixed_runs[2]["images_seen"] == EPOCHS * IMAGES
    assert final["replicas_identical"] is True
    for name in ("bbox_mAP", "bbox_mAP_50"):  # the same steps as 2 workers; 1 worker steps on half the batch
        assert final[name] == pytest.approx(fixed_runs[2][name], abs=0.02), (name, final, fixed_runs)
        assert final[name] == pytest.approx(fixed_runs[1][name], abs=0.05), (name, final, fixed_runs)
    # The same optimisation as the fixed 2-worker group, through 4 restarts at 1 and 2 workers: the weights
    # differ by float summation order only, far less than those of a fixed 1-worker group (half the batch).
    elastic, two, one = last_weights(final), last_weights(fixed_runs[2]), last_weights(fixed_runs[1])
    print(f"weights: |elastic - fixed 2| {distance(elastic, two):.2e}, |fixed 1 - fixed 2| {distance(one, two):.2e}")
    assert distance(elastic, two) < 0.01 * distance(one, two)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_elastic_group_shrinks_at_once_when_a_node_is_lost(elastic_run):
    final, events = elastic_run["final"], elastic_run["events"]
    assert resizes(elastic_run)[:2] == [(2, "node added"), (1, "node lost")]
    lost = final["resizes"][1]
    assert lost["images_seen"] == lost["iteration"] * IMAGES_PER_ITERATION
    assert lost["iteration"] >= final["resizes"][0]["iteration"]
    # No wait for a replacement: the node comes back only after this resize (the scenario waits for it), so
    # "node lost" at 1 worker above proves the run went on without it.  How soon: Ray Train may first ask for
    # the lost node's share and give up after ELASTIC_GROUP_START_TIMEOUT_S (25 s), then starts the group that
    # fits: 36-39 s measured here, 66 s on the slower CI machine; 73 s here while that first try waited out
    # Ray's default 60 s.
    assert events["shrunk"] - events["killed"] < 100


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_elastic_preemption_checkpoints_at_the_notice_and_goes_on_smaller(elastic_run):
    final, log = elastic_run["final"], elastic_run["log"]
    assert resizes(elastic_run) == [(2, "node added"), (1, "node lost"), (2, "node added"), (1, "preemption")]
    assert "is being preempted: checkpoint at epoch 2, iteration 7" in log
    preempted = final["resizes"][3]
    assert (preempted["iteration"], preempted["images_seen"]) == (7, 7 * IMAGES_PER_ITERATION)  # from the notice
    assert final["images_seen"] == EPOCHS * IMAGES
