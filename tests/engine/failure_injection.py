"""``StepHook``s that kill a training worker or hold the run still, for the fault-tolerance tests.

The hooks travel to the Ray Train workers by reference: the workers import this
module as ``tests.engine.failure_injection`` (the session's Ray nodes have the
checkout on their ``PYTHONPATH``, see ``tests/conftest.py``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import ray
import ray.train

from raydet.engine.train_loop import WorkerInfo
from raydet.engine.trainer import StepResult

MARKER = ".injected_failure"


@dataclass(frozen=True)
class KillWorkerOnce:
    """The worker of the highest rank exits at ``iteration`` (1-based, over all epochs), once per
    work dir (``work_dir/.injected_failure`` marks it done, so the restarted run goes on), after the
    progress records of every iteration up to this one are written, so tests know what was logged."""

    iteration: int

    def __call__(self, step: StepResult, worker: WorkerInfo) -> None:
        marker = worker.work_dir / MARKER
        if step.iteration != self.iteration or worker.rank != worker.world_size - 1 or marker.exists():
            return
        marker.touch()
        worker.flush_records()
        print(f"[raydet test] injected failure: rank {worker.rank} exits at iteration {step.iteration}", flush=True)
        os._exit(1)


@dataclass(frozen=True)
class PauseUntil:
    """Rank 0 writes ``reached`` at ``iteration`` (1-based, over all epochs), then waits until the file
    ``go`` exists: the test does its part (kills a node, drains it) while the run stands still there.
    A run restarted after ``go`` exists passes straight on."""

    iteration: int
    reached: str
    go: str
    timeout_s: float = 240

    def __call__(self, step: StepResult, worker: WorkerInfo) -> None:
        if step.iteration != self.iteration or worker.rank != 0 or os.path.exists(self.go):
            return
        worker.flush_records()
        with open(self.reached, "w"):
            pass
        deadline = time.time() + self.timeout_s
        while not os.path.exists(self.go) and time.time() < deadline:
            time.sleep(0.2)


@dataclass(frozen=True)
class HoldGroupOfSize:
    """Rank 0 of a group of ``world_size`` workers writes ``reached`` at ``iteration`` and holds the group there
    (up to ``timeout_s``) while the test changes the cluster: Ray Train replaces the held group (an elastic
    resize, a lost node).  Groups of another size pass on."""

    iteration: int
    world_size: int
    reached: str
    timeout_s: float = 240

    def __call__(self, step: StepResult, worker: WorkerInfo) -> None:
        if step.iteration != self.iteration or worker.rank != 0 or worker.world_size != self.world_size:
            return
        worker.flush_records()
        with open(self.reached, "w"):
            pass
        time.sleep(self.timeout_s)


@ray.remote(num_cpus=0)
class _Doomed:
    def ping(self) -> None:
        return None


class ControllerLosesAnActorOnce(ray.train.UserCallback):
    """In Ray Train's controller, after the first reported checkpoint (once: the file ``marker`` records it),
    calls an actor that was just killed, so the controller gives up with ``ControllerError(ActorDiedError)``:
    what it does when a worker dies in the group-start steps Ray Train 2.60 does not guard (found by the chaos
    run with node kills, whose timing a test cannot place)."""

    def __init__(self, marker: str):
        self.marker = marker

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if checkpoint is None or os.path.exists(self.marker):
            return
        with open(self.marker, "w"):
            pass
        actor = _Doomed.remote()
        ray.get(actor.ping.remote())
        ray.kill(actor, no_restart=True)
        deadline = time.time() + 30
        while time.time() < deadline:  # ray.kill is asynchronous: a call right after it may still be answered
            ray.get(actor.ping.remote())  # raises ActorDiedError once the kill has landed
            time.sleep(0.05)
        raise RuntimeError("a killed actor still answered 30 s later")
