"""Two Ray nodes on this machine: the test session's head plus a second ``ray start --address=…`` node.

Every node of the session's cluster has one unit of ``NODE_SLOT``; workers that ask for one are placed
one per node.  Checkpoints go to S3 (the moto server), the storage every node of a real cluster shares.
"""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from raydet.config import load_config
from raydet.engine.launcher import launch
from tests.demo_helpers import DEMO_CONFIG, quick_overrides
from tests.engine.failure_injection import PauseUntil
from tests.ray_nodes import NODE_SLOT, RAY, wait_for_nodes

BUCKET = "raydet-multi-node-test"
EPOCHS = 3
ITERATIONS = EPOCHS * 6  # 48 images, 4 per batch, 2 workers


def overrides(data_root, storage: str, one_per_node: bool) -> list[str]:
    per_worker = f"{{CPU: 1, {NODE_SLOT}: 1}}" if one_per_node else "{CPU: 1}"
    return [*quick_overrides(data_root, epochs=EPOCHS), "checkpoint_config.interval=1", "scaling.num_workers=2",
            f"scaling.resources_per_worker={per_worker}", f"scaling.storage_path={storage}", "scaling.max_failures=3"]


def assert_same_training(run: dict, reference: dict) -> None:
    """Same iterations and, within noise, the same metrics (the math is the same: 2 DDP workers, one seed)."""
    assert run["iters"] == reference["iters"] == ITERATIONS and run["epochs"] == EPOCHS
    assert run["replicas_identical"] is True
    for name in ("bbox_mAP", "bbox_mAP_50"):
        assert run[name] == pytest.approx(reference[name], abs=0.02), (name, run, reference)


@pytest.fixture(scope="module")
def storage(s3_server) -> str:
    s3_server.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/runs"


@pytest.fixture(scope="module")
def single_node_run(ray_session, small_shapes, storage, tmp_path_factory) -> dict:
    """The reference: the same training with both workers on the head (run before a second node exists)."""
    wait_for_nodes(ray_session, 1)
    config = load_config(DEMO_CONFIG, overrides(small_shapes, storage, one_per_node=False))
    final = launch(config, tmp_path_factory.mktemp("one_node") / "wd").final_metrics
    assert len(set(final["worker_nodes"])) == 1
    return final


@pytest.fixture(scope="module")
def second_node(ray_cluster, ray_session, single_node_run):
    """A second node joined to the session's cluster; every node the tests start is stopped (by PID) at the end."""
    started = len(ray_cluster.workers)
    ray_cluster.add_node(num_cpus=2, resources={NODE_SLOT: 1})
    wait_for_nodes(ray_session, 2)
    yield ray_cluster
    for node in ray_cluster.workers[started:]:
        node.stop()
    del ray_cluster.workers[started:]
    wait_for_nodes(ray_session, 1)


def node_ids(ray) -> set[str]:
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def wait_for_object(client, prefix: str, suffix: str, contains: str = "", timeout: float = 240) -> str:
    """The key of an object under ``prefix`` ending in ``suffix`` (whose text holds ``contains``), once it exists."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for item in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
            if item["Key"].endswith(suffix) and (
                    contains in client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode()):
                return item["Key"]
        time.sleep(0.3)
    raise TimeoutError(f"no {prefix}…{suffix} in {timeout} s")


def wait_for_file(path: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if time.time() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout} s")
        time.sleep(0.2)


def second_node_id(ray) -> str:
    head = ray.get_runtime_context().get_node_id()  # this process is connected to the head
    return next(node_id for node_id in node_ids(ray) if node_id != head)


def preempt(ray, cluster, deadline_s: float) -> float:
    """Drain the second node as the autoscaler does on a spot reclaim notice (``ray drain-node`` with the cloud's
    deadline); returns when the notice was given."""
    notice = subprocess.run(
        [RAY, "drain-node", f"--address={cluster.address}", f"--node-id={second_node_id(ray)}",
         "--reason=DRAIN_NODE_REASON_PREEMPTION", "--reason-message=spot reclaim (test)",
         f"--deadline-remaining-seconds={deadline_s}"], capture_output=True, text=True, timeout=60)
    assert notice.returncode == 0, notice.stdout + notice.stderr
    return time.time()


def run_with_helper(launch_run, helper) -> tuple[object, dict]:
    """``launch_run()`` here while ``helper(events)`` acts on the cluster in a thread; its errors re-raised."""
    events: dict = {}

    def guarded() -> None:
        try:
            helper(events)
        except BaseException as err:  # noqa: B036 - reported to the test below
            events["error"] = err

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    outcome = launch_run()
    thread.join(timeout=60)
    if "error" in events:
        raise events["error"]
    return outcome, events


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_node_loss_resumes_from_the_last_checkpoint_when_the_node_returns(
        ray_session, second_node, single_node_run, small_shapes, storage, s3_server, tmp_path):
    """Two workers, one per node, train as both on one node did (checkpoints in the shared storage), through
    the loss of the second node: every process of it killed in epoch 2, the node back 3 s later."""
    cluster = second_node
    reached, go = tmp_path / "reached", tmp_path / "killed"
    config = load_config(DEMO_CONFIG, [*overrides(small_shapes, storage, one_per_node=True), "mlflow.run_name=lossy"])

    def lose_and_restore_the_second_node(events: dict) -> None:
        """In epoch 2, once Ray has registered epoch 1's checkpoint, kill every process of the second node;
        start it again 3 s later."""
        wait_for_file(reached)
        wait_for_object(s3_server, "runs/lossy-", "checkpoint_manager_snapshot.json", contains="checkpoint_")
        cluster.workers[-1].kill()
        events["killed"] = time.time()
        go.touch()
        time.sleep(3)
        cluster.add_node(num_cpus=2, resources={NODE_SLOT: 1})

    hold = PauseUntil(iteration=8, reached=str(reached), go=str(go))  # step 2 of epoch 2
    outcome, events = run_with_helper(lambda: launch(config, tmp_path / "wd", step_hooks=[hold]),
                                      lose_and_restore_the_second_node)
    finished = time.time()
    final = outcome.final_metrics
    log = (tmp_path / "wd" / "train.log").read_text()
    assert "resumed at epoch 1, iteration 6" in log, log[-3000:]  # from epoch 1's checkpoint, not from scratch
    assert_same_training(final, single_node_run)  # no completed work lost, nothing done twice
    # one worker per node, the returned node in the lost one's place
    assert set(final["worker_nodes"]) == node_ids(ray_session) and len(node_ids(ray_session)) == 2
    key = final["best_checkpoint"].removeprefix(f"s3://{BUCKET}/")
    assert s3_server.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 1000  # in the shared storage
    print(f"node lost -> run finished: {finished - events['killed']:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_preemption_notice_checkpoints_mid_epoch_and_the_run_resumes_there(
        ray_session, second_node, single_node_run, small_shapes, storage, s3_server, tmp_path):
    """A spot reclaim as Ray sees it: the autoscaler drains the node with the cloud's deadline; the workers
    checkpoint mid-epoch; at the deadline Ray Train stops them and the node goes; a new node comes; the run
    resumes at the checkpointed batch and counts the restart as a preemption, not a failure (``max_failures``
    is 0)."""
    cluster = second_node
    reached, drained, reclaimed = tmp_path / "reached", tmp_path / "drained", tmp_path / "reclaimed"
    config = load_config(DEMO_CONFIG, [*overrides(small_shapes, storage, one_per_node=True), "scaling.max_failures=0",
                                       "checkpoint_config.interval=3", "mlflow.run_name=spot"])
    deadline_s = 12

    def reclaim_the_second_node(events: dict) -> None:
        wait_for_file(reached)
        events["notice"] = preempt(ray_session, cluster, deadline_s)
        time.sleep(3)  # Ray Train's preemption watcher polls every second here (conftest)
        drained.touch()
        wait_for_object(s3_server, "runs/spot-", "checkpoint_manager_snapshot.json", contains="checkpoint_")
        time.sleep(max(0.0, events["notice"] + deadline_s + 2 - time.time()))
        cluster.workers[-1].kill()  # the cloud takes the node back at the deadline
        reclaimed.touch()
        cluster.add_node(num_cpus=2, resources={NODE_SLOT: 1})

    hooks = [PauseUntil(iteration=8, reached=str(reached), go=str(drained)),  # step 2 of epoch 2: the notice
             PauseUntil(iteration=10, reached=str(tmp_path / "waiting"), go=str(reclaimed))]  # till the deadline
    outcome, events = run_with_helper(lambda: launch(config, tmp_path / "wd", step_hooks=hooks),
                                      reclaim_the_second_node)
    final = outcome.final_metrics
    log = (tmp_path / "wd" / "train.log").read_text()
    assert "is being preempted: checkpoint at epoch 2, iteration 8" in log, log[-3000:]
    assert "resumed at epoch 1, iteration 8 (step 2 of epoch 2)" in log, log[-3000:]
    assert_same_training(final, single_node_run)
    assert set(final["worker_nodes"]) == node_ids(ray_session)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chaos_kills_while_training_and_the_run_still_finishes_the_same(
        ray_session, second_node, single_node_run, small_shapes, storage, tmp_path):
    """``pytest -k chaos``: the chaos loop kills 3 processes of the run while it trains (the MLflow recorder, a
    decode task's process, a training worker); it finishes with
    every epoch's images seen once, the reference run's metrics, its MLflow run FINISHED, and nothing of it left
    in the cluster.  ``benchmarks/chaos.py`` runs longer, with 6 kills or more."""
    from tests.chaos import ChaosLoop, alive_ids, redone_iterations, wait_for_no_leftovers

    config = load_config(DEMO_CONFIG, [*overrides(small_shapes, storage, one_per_node=True), "scaling.max_failures=10",
                                       "log_config.interval=1", "mlflow.run_name=chaos"])
    # Once the run trains, 2 s apart, the worker last: a worker killed while its group starts ends the run (Ray
    # Train 2.60 does not retry that: benchmarks/README.md); the node's loss has its own test above.  The run
    # trains for about 10 s after the first kill (2026-12-07: 4 s apart, it ended before the third).
    log = tmp_path / "wd" / "train.log"
    chaos = ChaosLoop(second_node, {"num_cpus": 2, "resources": {NODE_SLOT: 1}}, seed=0, interval_s=(2, 2),
                      first_after_s=0, max_kills=3, targets=("recorder", "decode_process", "training_worker"),
                      in_order=True, begin_when=lambda: log.is_file() and "Epoch [1/3][2/6]" in log.read_text())
    before = alive_ids(ray_session)  # what earlier tests left is theirs
    chaos.start()
    try:
        outcome = launch(config, tmp_path / "wd")
    finally:
        kills = chaos.stop()
    final = outcome.final_metrics
    print(f"chaos: {[(kill.at_s, kill.target) for kill in kills]}; redone iterations "
          f"{redone_iterations(outcome.mlflow_uri, outcome.mlflow_run_id)}")
    assert len(kills) == 3 and not chaos.errors, (kills, chaos.errors)
    assert_same_training(final, single_node_run)
    assert final["images_seen"] == EPOCHS * 48  # every epoch's images once, however often the group restarted

    from mlflow.tracking import MlflowClient

    assert MlflowClient(outcome.mlflow_uri).get_run(outcome.mlflow_run_id).info.status == "FINISHED"
    wait_for_nodes(ray_session, 2)
    wait_for_no_leftovers(ray_session, before, timeout_s=30)  # the run's actors and placement groups go with it
