"""Two Ray nodes on this machine: the test session's head plus a second ``ray start --address=…`` node.

Every node of the session's cluster has one unit of ``NODE_SLOT``; workers that ask for one are placed
one per node.  Checkpoints go to S3 (the moto server), the storage every node of a real cluster shares.
"""
from __future__ import annotations

import threading
import time

import pytest
from engine_helpers import DEMO_CONFIG, quick_overrides
from ray_nodes import NODE_SLOT, wait_for_nodes

from raydet.config import load_config
from raydet.engine.launcher import launch

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


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_multi_node_training_one_worker_per_node_matches_one_node(ray_session, second_node, single_node_run,
                                                                  small_shapes, storage, s3_server, tmp_path):
    config = load_config(DEMO_CONFIG, overrides(small_shapes, storage, one_per_node=True))
    final = launch(config, tmp_path / "wd").final_metrics
    assert set(final["worker_nodes"]) == node_ids(ray_session) and len(node_ids(ray_session)) == 2
    assert_same_training(final, single_node_run)
    key = final["best_checkpoint"].removeprefix(f"s3://{BUCKET}/")
    assert s3_server.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 1000  # in the shared storage


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_node_loss_resumes_from_the_last_checkpoint_when_the_node_returns(
        ray_session, second_node, single_node_run, small_shapes, storage, s3_server, tmp_path):
    cluster = second_node
    config = load_config(DEMO_CONFIG, [*overrides(small_shapes, storage, one_per_node=True), "mlflow.run_name=lossy"])
    events: dict[str, float] = {}

    def lose_and_restore_the_second_node() -> None:
        """Once the run's first checkpoint is in storage, kill every process of the second node; bring it back."""
        deadline = time.time() + 240
        while time.time() < deadline:
            listed = s3_server.list_objects_v2(Bucket=BUCKET, Prefix="runs/lossy-").get("Contents", [])
            if any("/checkpoint_" in item["Key"] for item in listed):
                break
            time.sleep(0.3)
        else:
            return
        cluster.workers[-1].kill()
        events["killed"] = time.time()
        time.sleep(3)
        cluster.add_node(num_cpus=2, resources={NODE_SLOT: 1})
        events["restarted"] = time.time()

    watcher = threading.Thread(target=lose_and_restore_the_second_node, daemon=True)
    watcher.start()
    outcome = launch(config, tmp_path / "wd")
    watcher.join(timeout=30)
    finished = time.time()
    assert "killed" in events, "the run finished before its first checkpoint reached storage"
    final = outcome.final_metrics
    log = (tmp_path / "wd" / "train.log").read_text()
    assert "resumed at epoch" in log, log[-3000:]  # restarted from the checkpoint, not from scratch
    assert_same_training(final, single_node_run)  # no completed work lost, nothing done twice
    assert set(final["worker_nodes"]) == node_ids(ray_session)  # the returned node took the lost worker's place
    print(f"node lost -> run finished: {finished - events['killed']:.0f} s")
