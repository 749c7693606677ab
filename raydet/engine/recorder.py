"""``RunRecorder``: a small actor on the driver's node that keeps a run's records.

Rank 0 may run on any node of a cluster, but the work directory and the
default MLflow store (``sqlite:///WORK_DIR/mlflow.db``) are on the driver's
machine.  Rank 0 therefore sends its log lines, metrics and pictures here
(fire-and-forget calls); this actor appends ``train.log``, writes artifacts
into the work directory and logs everything into the run's MLflow run.

The MLflow run itself opens in a task on the same node (``open_mlflow_run``)
while the worker group starts: MLflow's import and a new store take seconds,
which a run that joins a running cluster would otherwise wait for before its
fit.  The workers wait for the run to be open before their first collective
call (``raydet.engine.train_loop``), so a run that cannot be recorded stops
there, and rank 0 sends the run's id with each metric and picture: the
recorder starts at once and needs no id (nor a reference to one) to start,
or to start again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..errors import UserError
from .tracking import MlflowRun


class MlflowRunError(UserError):
    """The run's MLflow run could not be opened (a store MLflow cannot use or reach); the message says where
    and why."""


@dataclass(frozen=True)
class RunOpening:
    """What a run's MLflow run opens with: where (``tracking_uri``, ``artifact_location`` for a new experiment),
    its experiment, name, tags and params, the config's text (``config.yaml``), and metrics logged at step 0."""

    tracking_uri: str
    artifact_location: str | None
    experiment_name: str
    run_name: str
    tags: dict[str, str]
    params: dict[str, str]
    config_yaml: str
    metrics: dict[str, float]


#: Not tried again: a second try could open a second run.
@ray.remote(num_cpus=0, max_retries=0)
def _open_run(opening: RunOpening) -> str:
    try:
        tracker = MlflowRun.create(opening.tracking_uri, opening.experiment_name, opening.run_name, tags=opening.tags,
                                   artifact_location=opening.artifact_location)
        tracker.log_params(opening.params)
        tracker.log_text(opening.config_yaml, "config.yaml")
        tracker.log_metrics(opening.metrics, step=0)
    except Exception as error:  # noqa: BLE001 — any store error, as one message (MLflow's may not unpickle)
        why = (str(error).strip().splitlines() or [""])[0].strip()
        raise MlflowRunError(f"MLflow could not open the run in {opening.tracking_uri}: {type(error).__name__}: "
                             f"{why} (set mlflow.tracking_uri, or MLFLOW_TRACKING_URI, to a store it can use)"
                             ) from None
    return tracker.run_id


def open_mlflow_run(opening: RunOpening) -> ray.ObjectRef:
    """Open the run's MLflow run in a task on this (the driver's) node, where the default store is; returns a
    reference to its run id at once.  ``ray.get`` raises ``MlflowRunError`` (within Ray's task error) when the
    run could not be opened."""
    here = ray.get_runtime_context().get_node_id()
    return _open_run.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(opening)


#: Restarted when its process dies (killed, out of memory), and the calls in flight sent again: it keeps no
#: state but the first start-up marks, and rank 0's ``flush`` would otherwise fail the run.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RunRecorder:
    def __init__(self, work_dir: str, tracking_uri: str):
        self.work_dir = Path(work_dir)
        self.tracking_uri = tracking_uri
        self.log = open(self.work_dir / "train.log", "a")
        self.first_startup: dict[str, float] = {}
        self._mlflow: MlflowRun | None = None

    def mlflow(self, run_id: str) -> MlflowRun:
        if self._mlflow is None or self._mlflow.run_id != run_id:
            self._mlflow = MlflowRun(self.tracking_uri, run_id)
        return self._mlflow

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

    def metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self.mlflow(run_id).log_metrics(metrics, step)

    def artifact(self, run_id: str, name: str, data: bytes) -> None:
        """Write ``work_dir/name`` and log it to MLflow."""
        path = self.work_dir / name
        path.write_bytes(data)
        self.mlflow(run_id).log_artifact(path)

    def flush(self) -> None:
        """Returns once every earlier call from the same caller has run (actor calls keep their order)."""


def start_recorder(work_dir: Path, tracking_uri: str) -> ray.actor.ActorHandle:
    """A ``RunRecorder`` pinned to this (the driver's) node."""
    here = ray.get_runtime_context().get_node_id()
    return RunRecorder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(
        str(work_dir), tracking_uri)


class RecorderSink:
    """What ``ProgressLog`` writes to, forwarding to a ``RunRecorder`` without waiting; metrics and pictures go
    to the MLflow run ``run_id``."""

    def __init__(self, recorder: ray.actor.ActorHandle, run_id: str):
        self.recorder = recorder
        self.run_id = run_id

    def line(self, text: str) -> None:
        self.recorder.line.remote(text)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        self.recorder.metrics.remote(self.run_id, metrics, step)

    def artifact(self, name: str, data: bytes) -> None:
        self.recorder.artifact.remote(self.run_id, name, data)

    def startup(self, marks: dict[str, float]) -> None:
        self.recorder.startup.remote(marks)

    def flush(self) -> None:
        ray.get(self.recorder.flush.remote())
