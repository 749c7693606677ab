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


def connect_ray(cpus: float) -> bool:
    """Join the cluster this process runs in (``RAY_ADDRESS``, set inside a Ray job), else start a local Ray.
    Returns whether it started one (a Ray of this machine only, which ends with this process).

    A local Ray gets at least two logical CPUs more than the ``cpus`` the training
    workers (or a sweep's trials) take, so Ray Data's decode tasks are never starved
    (on a 2-core laptop with 2 workers, Ray would otherwise hang waiting for a free CPU).
    """
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return False
    start_local_ray(num_cpus=max(os.cpu_count() or 1, math.ceil(cpus - 1e-9) + 2))
    return True


def start_local_ray(num_cpus: int) -> str:
    """Start a Ray on this machine whose every process resolves it, not another instance on the host;
    returns its GCS address.

    The GCS port is chosen first (``RAY_GCS_SERVER_PORT``, which Ray's head node reads), so ``RAY_ADDRESS``
    can name it before the raylet and GCS start and copy this process's environment; both are restored in
    this process once Ray is up.
    """
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
