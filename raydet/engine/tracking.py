"""MLflow tracking: the driver opens one run per training run; rank 0 logs into it.

The run is created before the workers start and its id travels to them, so a
worker group restarted after a failure keeps logging into the same run.  The
tracking URI comes from ``mlflow.tracking_uri`` in the config, else
``MLFLOW_TRACKING_URI``, else an absolute ``sqlite:///WORK_DIR/mlflow.db``.
On a multi-node cluster, point it at a tracking server every node can reach.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Iterable

#: The experiment tag that says an experiment is model training, not GenAI work (traces, judges, prompts).
#: MLflow's UI set it when a user picks the kind; the UIs before 3.17 open such an experiment on its runs.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: MLflow 3.17's UI no longer reads that tag: it opens every experiment in the view of a switch at its top left
#: ("GenAI" | "Model training"), which the browser remembers and which starts on GenAI, unless the address
#: names the view.  The UI addresses raydet prints name it.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
#: Where ``mlflow ui`` serves by default.
LOCAL_UI = "http://127.0.0.1:5000"
MAX_PARAMS_PER_CALL = 100
MAX_PARAM_LENGTH = 6000


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """``{"model": {"neck": {"type": "FPN"}}}`` -> ``{"model.neck.type": "FPN"}`` (lists by index)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        return {prefix: str(tree)}
    flat: dict[str, str] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    if not flat and prefix:  # an empty mapping or list is still a setting
        flat[prefix] = str(tree)
    return flat


def ui_lines(tracking_uri: str, run_id: str) -> list[str]:
    """Where a user sees a run: the command that serves the store's UI (``sqlite:``, a path, a database), then
    the run's page, opened on model training (``MODEL_TRAINING_VIEW``).  A tracking server (``http(s)://``) is
    its own UI; Databricks has its own, and gets the run id."""
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("databricks"):
        return [f"run {run_id} in {tracking_uri}"]
    experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    page = f"#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"
    if tracking_uri.startswith(("http://", "https://")):
        return [f"{tracking_uri.rstrip('/')}/{page}"]
    return [f"mlflow ui --backend-store-uri {tracking_uri}", f"then {LOCAL_UI}/{page}"]


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MlflowRun:
    """One MLflow run, addressed by id (no global "active run" state)."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri = tracking_uri
        self.run_id = run_id

    @functools.cached_property
    def client(self):
        """The run's ``MlflowClient``, made (and MLflow imported: seconds of CPU) on the first call that logs:
        a ``RunRecorder`` starts without it, beside a worker group that is starting."""
        from mlflow.tracking import MlflowClient  # not at import: a launcher imports it in a thread

        return MlflowClient(self.tracking_uri)

    @classmethod
    def create(cls, tracking_uri: str, experiment_name: str, run_name: str, tags: dict[str, str] | None = None,
               artifact_location: str | None = None) -> "MlflowRun":
        """A new run in ``experiment_name`` (created, with ``artifact_location``, when missing; tagged as model
        training, ``EXPERIMENT_KIND``)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            experiment_id = client.create_experiment(experiment_name, artifact_location=artifact_location,
                                                     tags=dict([EXPERIMENT_KIND]))
        else:
            experiment_id = experiment.experiment_id
            if EXPERIMENT_KIND[0] not in experiment.tags:  # one made before raydet tagged its experiments
                client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
        run = client.create_run(experiment_id, run_name=run_name, tags=tags or {})
        return cls(tracking_uri, run.info.run_id)

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        entries = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for chunk in _chunks(entries, MAX_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for chunk in _chunks(entries, 1000):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
