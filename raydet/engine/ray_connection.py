"""How a raydet command gets its Ray: the cluster it runs in, else a local Ray that only its own processes see.

Ray resolves "the cluster" in many processes besides the driver: Ray Train's
``PlacementGroupCleaner`` asks the state API whether its run's controller is
alive, and without an address Ray picks the *newest* instance on the host.
With two local Rays on one host (two ``python -m raydet.train`` in two
terminals, a ``raydet.test`` beside a training) the older one's cleaner fails
with "Found multiple active Ray instances" (about 30 lines) or, worse, asks the
wrong cluster and frees a placement group that is still in use.  A local Ray
started here therefore gets ``RAY_ADDRESS`` set to its own GCS in the
environment its processes inherit: its raylet, its workers, the driver.
"""
from __future__ import annotations

import math
import os
import socket

import ray

#: A local Ray's settings.  Ray ends a pooled worker process idle for over a second whenever there are
#: more idle ones than free CPUs; decode tasks go idle that long between epochs (and while the training
#: process is behind), so their processes were ended and restarted, each importing torch again, about
#: once an epoch in a long test session.  Idle for up to a minute, they are reused instead.
LOCAL_RAY_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000}
#: A local Ray's environment, for this process and every process of that Ray (each only where the environment
#: does not set it already).  Ray Train starts a preemption watcher with every worker group, an actor that polls
#: for nodes being drained; a local Ray is this machine only, so a notice for it would end the driver with the
#: workers.  Ray Train's controller reads the setting from its driver's environment at ``fit``: a run's, or a
#: sweep trial's, whose process inherits it.
LOCAL_RAY_ENVIRONMENT = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def connect_ray(cpus: float) -> None:
    """Join the cluster this process runs in (``RAY_ADDRESS``, set inside a Ray job), else start a local Ray.

    A local Ray gets at least two logical CPUs more than the ``cpus`` the training
    workers (or a sweep's trials) take, so Ray Data's decode tasks are never starved
    (on a 2-core laptop with 2 workers, Ray would otherwise hang waiting for a free CPU).
    """
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    start_local_ray(num_cpus=max(os.cpu_count() or 1, math.ceil(cpus - 1e-9) + 2))


def start_local_ray(num_cpus: int) -> str:
    """Start a Ray on this machine whose every process resolves it, not another instance on the host;
    returns its GCS address.

    The GCS port is chosen first (``RAY_GCS_SERVER_PORT``, which Ray's head node reads), so ``RAY_ADDRESS``
    can name it before the raylet and GCS start and copy this process's environment; both are restored in
    this process once Ray is up.  ``LOCAL_RAY_ENVIRONMENT`` stays: the Ray lives as long as this process.
    """
    for key, value in LOCAL_RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    port = _free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    saved = {key: os.environ.get(key) for key in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}
    os.environ.update(RAY_ADDRESS=address, RAY_GCS_SERVER_PORT=str(port))
    try:
        ray.init(address="local", num_cpus=num_cpus, _system_config=LOCAL_RAY_SYSTEM_CONFIG)
    finally:
        # The raylet and the GCS have copied the environment; this process is connected.  Left set, the
        # address would outlive this Ray (a later `ray.init()` or command started from here would look for
        # it) and make this laptop look like a cluster (`raydet.cli.check_gpus`).
        _restore(saved)
    return address


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _free_port() -> int:
    """A TCP port free now (the OS's choice), for the GCS to bind a moment later."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]
