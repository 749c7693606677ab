"""``RunRecorder``: a small actor on the driver's node that keeps a run's records.

Rank 0 may run on any node of a cluster, but the work directory and the
default MLflow store (``sqlite:///WORK_DIR/mlflow.db``) are on the driver's
machine.  Rank 0 therefore sends its log lines, metrics and pictures here
(fire-and-forget calls); this actor appends ``train.log``, writes artifacts
into the work directory and logs everything into the run's MLflow run.
"""
from __future__ import annotations

from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .tracking import MlflowRun


#: Restarted when its process dies (killed, out of memory), and the calls in flight sent again: it keeps no
#: state but the first start-up marks, and rank 0's ``flush`` would otherwise fail the run.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RunRecorder:
    def __init__(self, work_dir: str, tracking_uri: str, run_id: str):
        self.work_dir = Path(work_dir)
        self.mlflow = MlflowRun(tracking_uri, run_id)
        self.log = open(self.work_dir / "train.log", "a")
        self.first_startup: dict[str, float] = {}

    def startup(self, marks: dict[str, float]) -> None:
        """Rank 0's start-up marks (Unix times); only the first attempt's are kept: a restarted worker
        group's would count the failed attempt's training as start-up."""
        if not self.first_startup:
            self.first_startup = dict(marks)

    def startup_marks(self) -> dict[str, float]:
        return self.first_startup

    def line(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step)

    def artifact(self, name: str, data: bytes) -> None:
        """Write ``work_dir/name`` and log it to MLflow."""
        path = self.work_dir / name
        path.write_bytes(data)
        self.mlflow.log_artifact(path)

    def flush(self) -> None:
        """Returns once every earlier call from the same caller has run (actor calls keep their order)."""


def start_recorder(work_dir: Path, tracking_uri: str, run_id: str) -> ray.actor.ActorHandle:
    """A ``RunRecorder`` pinned to this (the driver's) node."""
    here = ray.get_runtime_context().get_node_id()
    return RunRecorder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(
        str(work_dir), tracking_uri, run_id)


class RecorderSink:
    """What ``ProgressLog`` writes to, forwarding to a ``RunRecorder`` without waiting."""

    def __init__(self, recorder: ray.actor.ActorHandle):
        self.recorder = recorder

    def line(self, text: str) -> None:
        self.recorder.line.remote(text)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        self.recorder.metrics.remote(metrics, step)

    def artifact(self, name: str, data: bytes) -> None:
        self.recorder.artifact.remote(name, data)

    def startup(self, marks: dict[str, float]) -> None:
        self.recorder.startup.remote(marks)

    def flush(self) -> None:
        ray.get(self.recorder.flush.remote())
