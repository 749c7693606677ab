"""One trial of a sweep: a whole raydet training started from a Tune function trainable.

Tune runs ``run_trial`` in a trial process with the searcher's sampled values.
It builds the trial's config, then ``raydet.engine.launcher.launch`` checks it
(importing its ``custom_imports`` here, in this process) and fits a
``TorchTrainer`` whose workers take the trial's ``scaling`` resources.  Every
report that carries the sweep's metric reaches Tune through
``TuneReportCallback``, so the scheduler can stop the trial after any
evaluation.  The Train run is named after the trial id: a restored sweep
continues the same Train run from its latest checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from ..engine.launcher import RunOptions, launch
from .sweep import Sweep

#: Environment the trial's Ray Train controller starts with (unless set already): a worker group
#: that cannot start (e.g. its resources never free up) fails the trial instead of hanging the sweep.
TRIAL_ENVIRONMENT = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180"}
#: Ray Train controller failures (such as that timeout) a trial tolerates before it errors.
CONTROLLER_FAILURE_LIMIT = 1


class ReportMetricToTune(TuneReportCallback):
    """Forward rank 0's reports that carry ``metric`` to Tune.

    A run reports after every evaluation and every checkpoint; only evaluated reports hold
    the COCO metrics, and Tune wants the sweep's metric in every result it gets.
    """

    def __init__(self, metric: str):
        super().__init__()
        self.metric = metric

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if self.metric in metrics[0]:
            super().after_report(run_context, metrics, checkpoint)


def trial_work_dir(work_dir: str | Path, trial_id: str) -> Path:
    """Where a trial's config, log, ``final_metrics.json`` and checkpoints go."""
    return Path(work_dir) / "trials" / trial_id


def run_trial(sampled: dict[str, Any], *, sweep: Sweep, work_dir: str, tracking_uri: str, parent_run_id: str) -> None:
    """Tune's function trainable: train ``sweep``'s config with the ``sampled`` values.

    Args:
        sampled: ``{config path: sampled value}`` (an index for ``choice`` / ``grid``).
        sweep: the parsed sweep file.
        work_dir: the sweep's absolute work directory.
        tracking_uri, parent_run_id: the sweep's MLflow store and run; the trial's run is its child.
    """
    trial_id = ray.tune.get_context().get_trial_id()
    for name, value in TRIAL_ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # the Train controller inherits them
    labels = sweep.space.labels(sampled)
    options = RunOptions(
        name=trial_id,
        mlflow_tags={"mlflow.parentRunId": parent_run_id, "raydet.trial_id": trial_id},
        mlflow_params={f"search.{path}": label for path, label in labels.items()},
        callbacks=(ReportMetricToTune(sweep.settings.metric),),
        controller_failure_limit=CONTROLLER_FAILURE_LIMIT,
        ends_run_on_error=False,  # the driver ends it: it knows whether the trial failed or was stopped
    )
    config = sweep.trial_config(sampled)
    # the sweep's store; the best trial's model is logged (and registered) by the sweep's driver, on its run
    config["mlflow"] = {**(config.get("mlflow") or {}), "tracking_uri": tracking_uri, "log_model": False,
                        "registered_model_name": None, "alias": None}
    launch(config, trial_work_dir(work_dir, trial_id), options=options)
