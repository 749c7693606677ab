"""A seeded chaos loop for a training on a loopback ``ray start`` cluster (``tests.ray_nodes.LocalCluster``):
every few seconds it SIGKILLs one process that raydet or Ray runs for the job, and logs when and what.

Targets: a training worker (``RayTrainWorker``), a data stream runner (``_StreamRunner``), a Ray Data decode
task's process (its title names ``run_decode_task``), the MLflow recorder (``RunRecorder``), or every
process of the cluster's last worker node (started again ``node_down_s`` later, as a spot replacement).
Used by ``tests/engine/test_chaos.py`` (a few kills) and ``benchmarks/chaos.py`` (6 or more).
"""
from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ACTOR_TARGETS = {"training_worker": "RayTrainWorker", "stream_runner": "_StreamRunner", "recorder": "RunRecorder"}
TARGETS = (*ACTOR_TARGETS, "decode_process", "node")
DECODE_TASK = "run_decode_task"


@dataclass
class Kill:
    """One kill: seconds since the loop started, the target kind, and the PIDs killed."""
    at_s: float
    target: str
    pids: list[int]


def alive_actor_pids(class_name: str) -> list[int]:
    """PIDs of the connected cluster's alive actors of ``class_name`` (the GCS actor table)."""
    from ray._private.state import actors

    return [actor["Pid"] for actor in actors().values()
            if actor["State"] == "ALIVE" and actor["ActorClassName"] == class_name and actor["Pid"]]


def decode_process_pids() -> list[int]:
    """PIDs of processes running a decode task now (Ray names a worker process after its task)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and DECODE_TASK in title:
                found.append(int(entry))
    return found


class ChaosLoop(threading.Thread):
    """Kills one seeded target every ``interval_s`` (uniform between its bounds) until ``stop()``.

    Args:
        cluster: the ``LocalCluster`` whose last worker node the ``node`` target kills and starts again.
        node_resources: that node's ``num_cpus`` and custom resources, to start it again with.
        targets: the kinds to choose among; a kind with no process alive at that moment is passed over.
        max_kills: then the loop stops killing (a training restarted faster than it reaches its next
            checkpoint would never end).
        in_order: kill ``targets`` one after another, in their order, instead of a seeded choice (a target
            with no process alive is looked for again every 50 ms until the loop stops: a decode task on
            small images runs for a fraction of a second at an epoch's start).
        begin_when: the loop's clock starts once this answers True (polled twice a second).
    """

    def __init__(self, cluster, node_resources: dict, seed: int, interval_s: tuple[float, float] = (10, 30),
                 node_down_s: float = 5, targets: tuple[str, ...] = TARGETS, first_after_s: float | None = None,
                 max_kills: int = 6, in_order: bool = False,
                 begin_when: Callable[[], bool] | None = None):
        super().__init__(daemon=True, name="chaos")
        self.cluster, self.node_resources = cluster, node_resources
        self.random = random.Random(seed)
        self.interval_s, self.node_down_s, self.targets = interval_s, node_down_s, targets
        self.first_after_s, self.max_kills = first_after_s, max_kills
        self.in_order, self.begin_when = in_order, begin_when
        self.kills: list[Kill] = []
        self.errors: list[str] = []
        self._stopped = threading.Event()
        self._started_at = time.time()

    def stop(self) -> list[Kill]:
        self._stopped.set()
        self.join(timeout=120)
        return self.kills

    def run(self) -> None:
        while self.begin_when is not None and not self.begin_when():
            if self._stopped.wait(0.5):
                return
        self._started_at = time.time()
        wait = self.first_after_s if self.first_after_s is not None else self.random.uniform(*self.interval_s)
        while len(self.kills) < self.max_kills and not self._stopped.wait(wait):
            try:
                self._kill_one()
            except Exception as error:  # noqa: BLE001 — reported by the caller, the loop goes on
                self.errors.append(repr(error))
            wait = self.random.uniform(*self.interval_s)

    def _kill_one(self) -> None:
        if self.in_order:
            target = self.targets[len(self.kills) % len(self.targets)]
            while not self._kill_target(target) and not self._stopped.wait(0.05):
                pass
            return
        for target in self.random.sample(self.targets, len(self.targets)):
            if self._kill_target(target):
                return

    def _kill_target(self, target: str) -> bool:
        """Kill one process of ``target``'s kind; False when none is alive."""
        if target == "node":
            if not self.cluster.workers:
                return False
            self._kill_node()
            return True
        pids = alive_actor_pids(ACTOR_TARGETS[target]) if target in ACTOR_TARGETS else decode_process_pids()
        if not pids:
            return False
        pid = self.random.choice(sorted(pids))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self._log(Kill(round(time.time() - self._started_at, 1), target, [pid]))
        return True

    def _log(self, kill: Kill) -> None:
        self.kills.append(kill)
        print(f"chaos: killed {kill.target} {kill.pids} at {kill.at_s} s "
              f"({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)

    def _kill_node(self) -> None:
        node = self.cluster.workers.pop()
        pids = node.pids()
        node.kill()
        self._log(Kill(round(time.time() - self._started_at, 1), "node", pids))
        time.sleep(self.node_down_s)  # started again even when the loop is being stopped: the cluster stays whole
        self.cluster.add_node(**self.node_resources)


def redone_iterations(tracking_uri: str, run_id: str, metric: str = "train/loss") -> int:
    """Iterations trained more than once: entries of ``metric``'s history (logged every iteration) beyond one
    per step — a restart from a checkpoint logs the steps after it again."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri).get_metric_history(run_id, metric)
    return len(history) - len({entry.step for entry in history})


def alive_ids(ray) -> set[str]:
    """The IDs of the cluster's alive actors and of its placement groups not removed (read before a run, to
    tell its leftovers from what earlier work left: an in-process evaluation keeps its stream runner)."""
    from ray._private.state import actors

    return ({actor_id for actor_id, actor in actors().items() if actor["State"] == "ALIVE"}
            | {group_id for group_id, group in ray.util.placement_group_table().items() if group["state"] != "REMOVED"})


def leftovers(ray, before: set[str] = frozenset()) -> dict[str, list]:
    """What a finished job must not leave in the cluster: placement groups not removed, and alive actors other
    than Ray's own detached ones; those in ``before`` (from ``alive_ids`` before the job) are not counted."""
    from ray._private.state import actors

    groups = [group["state"] for group_id, group in ray.util.placement_group_table().items()
              if group["state"] != "REMOVED" and group_id not in before]
    alive = [actor["ActorClassName"] for actor_id, actor in actors().items()
             if actor["State"] == "ALIVE" and not actor["IsDetached"] and actor_id not in before]
    return {"placement_groups": groups, "actors": alive}


def wait_for_no_leftovers(ray, before: set[str], timeout_s: float, explain: Callable[[], str] = str) -> None:
    """Wait up to ``timeout_s`` until a finished job's ``leftovers`` are gone (its actors and placement groups
    end with it, a moment later); assert that they are, adding ``explain()`` to the failure."""
    deadline = time.time() + timeout_s
    while any(leftovers(ray, before).values()) and time.time() < deadline:
        time.sleep(1)
    assert leftovers(ray, before) == {"placement_groups": [], "actors": []}, explain()
