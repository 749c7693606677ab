"""Shared fixtures: one Ray cluster for the whole test run, an S3 endpoint, the shapes datasets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from tests.helpers import with_repo_on_pythonpath
from tests.ray_nodes import NODE_SLOT, LocalCluster, free_port

# Before Ray starts: one thread per worker process, and fast ray.train.report.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "1")  # a drained node is noticed within a second
# The test cluster's raylets keep idle decode processes as the launcher's local Ray does (its comment says why).
os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", "60000")
# The test clusters use Ray's token authentication, with a token of their own (not ~/.ray/auth_token).
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = os.urandom(32).hex()
# S3 for every process of the session, Ray's workers included: the `s3_server` fixture serves this endpoint.
# Fake credentials, so no test can reach a real bucket.
os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_ACCESS_KEY_ID="testing",
                  AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_SESSION_TOKEN", None)

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the session's Ray cluster (``ray_cluster``, ``ray_session`` and the fixtures built
    on them) is marked ``ray``: ``make test-fast`` (``-m "not slow and not ray"``) leaves them out."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """The session's Ray cluster: a head node started with ``ray start`` on loopback (more nodes join it in
    the multi-node tests).  Its address is exported as ``RAY_ADDRESS``, so the CLIs the tests start join it:
    one Ray instance on the host.  The S3 server starts first: its port is in every node's environment.

    4 logical CPUs on a 2-core machine: Ray Train / Tune take some and Ray Data
    tasks still find room (with exactly 2 they starve and the job hangs).

    The checkout is on every node's ``PYTHONPATH``: Ray workers, in working directories of Ray's own, import
    the test objects they are sent by name (``tests.engine.failure_injection``'s step hooks).
    """
    cluster = LocalCluster(num_cpus=4, env=with_repo_on_pythonpath(dict(os.environ)), resources={NODE_SLOT: 1})
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        yield cluster
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        cluster.stop()


@pytest.fixture(scope="session")
def ray_session(ray_cluster):
    """This process connected to the session's Ray cluster."""
    import ray

    ray.init(address=ray_cluster.address, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto) on the session's ``AWS_ENDPOINT_URL``; yields a boto3 S3 client for it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield boto3.client("s3")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def make_shapes(tmp_path_factory) -> Callable[..., Path]:
    """``make_shapes(seed, num_train, num_val)``: a built-in shapes dataset, generated once per session."""
    from raydet.data.shapes import generate_shapes

    made: dict[tuple[int, int, int], Path] = {}

    def make(seed: int = 0, num_train: int = 240, num_val: int = 60) -> Path:
        key = (seed, num_train, num_val)
        if key not in made:
            made[key] = tmp_path_factory.mktemp(f"shapes_{seed}_{num_train}_{num_val}")
            generate_shapes(made[key], seed=seed, num_train=num_train, num_val=num_val)
        return made[key]

    return make


@pytest.fixture(scope="session")
def small_shapes(make_shapes) -> Path:
    """48 train / 16 val shapes images: enough for a few real iterations and an evaluation."""
    return make_shapes(seed=1, num_train=48, num_val=16)


@pytest.fixture(scope="session")
def demo_shapes(make_shapes) -> Path:
    """The demo's dataset: 240 train / 60 val shapes images (seed 0)."""
    return make_shapes()
