"""The driver side of a sweep: Ray, the MLflow parent run, the ``Tuner``, the results in the work directory.

``run_sweep`` is what ``python -m raydet.tune`` calls.  One trial = one
``raydet.tune.trial.run_trial`` = one whole raydet training (a ``TorchTrainer``).
The trial function itself holds a tenth of a CPU on this (the driver's) node,
where the trials' work directories and the default MLflow store are; its
workers take ``tune.trial``'s resources anywhere in the cluster.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from ..config import ConfigError
from ..engine.mlflow_models.publish import PublishedModel
from ..engine.ray_connection import connect_ray
from ..engine.stop_signals import stop_signals_as_ctrl_c
from ..engine.tracking import MlflowRun
from .asha import ResumableASHA
from .results import ERROR, TrialRow, best_row, format_table, trial_row, write_csv
from .space import SearchSpace
from .sweep import Sweep, check_sweep, require_optuna
from .trial import run_trial, trial_work_dir

#: CPUs the trial function holds (it waits on its TorchTrainer; its workers hold their own resources).
TRIAL_FUNCTION_CPUS = 0.1
#: Tune's experiment folder inside the work directory (``--resume`` restores it).
EXPERIMENT = "tune"
#: What ``--resume`` needs that Tune does not keep: the MLflow parent run.
STATE_FILE = "sweep.json"
#: ASHA's rungs, kept for ``--resume``.
SCHEDULER_STATE_FILE = "scheduler_state.pkl"


@dataclass
class SweepOutcome:
    """A finished sweep: its rows, the best one, where things are."""

    rows: list[TrialRow]
    best: TrialRow | None
    work_dir: Path
    interrupted: bool
    mlflow_uri: str
    mlflow_run_id: str
    model: PublishedModel | None = None  # the best trial's, logged on the sweep's run


def trial_demand(sweep: Sweep) -> dict[str, float]:
    """The resources one running trial holds: its workers (an elastic trial's most), its Ray Data decoding (one
    task), its function."""
    scaling = sweep.base.scaling
    per_worker = dict(scaling.resources_per_worker or {"CPU": 1})
    if scaling.use_gpu:
        per_worker.setdefault("GPU", 1)
    demand = {key: value * max(scaling.max_workers, 1) for key, value in per_worker.items()}
    demand["CPU"] = demand.get("CPU", 0) + sweep.base.require_data().decode_num_cpus + TRIAL_FUNCTION_CPUS
    return demand


def trials_that_fit(cluster: dict[str, float], demand: dict[str, float]) -> int:
    """How many trials of ``demand`` the ``cluster``'s resources hold at once (at least 1)."""
    fits = [math.floor(cluster.get(key, 0) / need + 1e-9) for key, need in demand.items() if need > 0]
    return max(1, min(fits, default=1))


def param_space(space: SearchSpace, grid: bool) -> dict[str, Any]:
    """Tune's search space: ``choice`` / ``grid`` over their ``keys()`` (``grid=True``: every ``choice`` enumerated)."""
    params = {}
    for d in space.dimensions:
        if d.discrete:
            params[d.path] = ray.tune.grid_search(d.keys()) if d.kind == "grid" or grid else ray.tune.choice(d.keys())
        elif d.kind == "quniform":
            params[d.path] = ray.tune.quniform(*d.args)
        else:
            params[d.path] = getattr(ray.tune, d.kind)(*d.args)
    return params


def _search_algorithm(sweep: Sweep, concurrency: int):
    """The searcher; Optuna is limited to ``concurrency`` by Tune, the variant generator by itself."""
    settings = sweep.settings
    if settings.searcher == "optuna":
        require_optuna()
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=settings.seed)
    return BasicVariantGenerator(max_concurrent=concurrency, random_state=settings.seed)


def _tuner(sweep: Sweep, trainable, concurrency: int, work_dir: Path) -> ray.tune.Tuner:
    settings = sweep.settings
    scheduler = None
    if sweep.scheduler is not None:
        # stop_last_trials=False: a trial that reaches max_t ends by itself (writing its final metrics)
        scheduler = ResumableASHA(str(work_dir / SCHEDULER_STATE_FILE), time_attr="epoch", max_t=sweep.max_epochs,
                                  grace_period=sweep.scheduler.grace_period,
                                  reduction_factor=sweep.scheduler.reduction_factor, stop_last_trials=False)
    return ray.tune.Tuner(
        trainable,
        param_space=param_space(sweep.space, grid=settings.searcher == "grid"),
        tune_config=ray.tune.TuneConfig(
            metric=settings.metric, mode=settings.mode, num_samples=settings.num_samples,
            scheduler=scheduler, search_alg=_search_algorithm(sweep, concurrency),
            max_concurrent_trials=concurrency if settings.searcher == "optuna" else None,
        ),
        run_config=ray.tune.RunConfig(name=EXPERIMENT, storage_path=str(work_dir)),
    )


def expected_trials(sweep: Sweep) -> int:
    """How many trials the sweep runs: ``num_samples`` times every grid combination (Optuna: ``num_samples``)."""
    settings = sweep.settings
    if settings.searcher == "optuna":
        return settings.num_samples
    enumerated = [len(d.args) for d in sweep.space.dimensions
                  if d.kind == "grid" or (d.kind == "choice" and settings.searcher == "grid")]
    return settings.num_samples * math.prod(enumerated)


def _unfinished_trials(experiment: Path) -> set[str]:
    """The trials Tune's saved state holds as not ended (a sweep interrupted by Ctrl+C leaves them)."""
    analysis = ray.tune.ExperimentAnalysis(str(experiment))
    return {trial.trial_id for trial in analysis.trials if trial.status not in ("TERMINATED", "ERROR")}


def _trial_id(result: ray.tune.Result) -> str:
    if result.metrics.get("trial_id"):
        return result.metrics["trial_id"]
    found = re.search(r"[0-9a-f]{5}_\d{5}", Path(result.path).name)
    return found.group(0) if found else Path(result.path).name


def run_sweep(sweep: Sweep, work_dir: Path, resume: bool = False) -> SweepOutcome:
    """Run (or with ``resume``, continue) ``sweep``; write ``results.csv`` and ``best_config.yaml``.

    Raises:
        ConfigError: a bad sweep (before any trial starts), or a work dir that holds a
            different state than ``resume`` expects.
    """
    work_dir = work_dir.resolve()
    experiment = work_dir / EXPERIMENT
    state_file = work_dir / STATE_FILE
    check_sweep(sweep)
    if resume and not (state_file.is_file() and ray.tune.Tuner.can_restore(str(experiment))):
        raise ConfigError(f"--resume: {work_dir} holds no sweep to continue; run without --resume to start one")
    if not resume and experiment.exists():
        raise ConfigError(f"{work_dir} already holds a sweep: continue it with --resume, or choose another --work-dir")

    demand = trial_demand(sweep)
    wanted = sweep.settings.max_concurrent_trials or 1
    connect_ray(demand.get("CPU", 1) * wanted)
    concurrency = sweep.settings.max_concurrent_trials or trials_that_fit(ray.cluster_resources(), demand)
    parent = _parent_run(sweep, work_dir, resume, concurrency)
    print(f"sweep {sweep.name}: up to {concurrency} trial(s) at once, each holding "
          + ", ".join(f"{value:g} {key}" for key, value in demand.items()))

    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, sweep=sweep, work_dir=str(work_dir), tracking_uri=parent.tracking_uri,
                                 parent_run_id=parent.run_id),
        {"CPU": TRIAL_FUNCTION_CPUS, f"node:{ray.util.get_node_ip_address()}": 0.001},
    )
    tuner = (ray.tune.Tuner.restore(str(experiment), trainable, resume_errored=True) if resume
             else _tuner(sweep, trainable, concurrency, work_dir))
    started = time.time()
    try:
        with stop_signals_as_ctrl_c():  # SIGTERM (`ray job stop`) stops the sweep as Ctrl+C does: state saved
            grid = tuner.fit()
    except BaseException:
        _end_unfinished_children(parent, {})
        parent.end("KILLED")
        raise
    unfinished = _unfinished_trials(experiment)
    rows = []
    for result in grid:
        trial_id = _trial_id(result)
        rows.append(trial_row(sweep, trial_id, {d.path: result.config[d.path] for d in sweep.space.dimensions},
                              result.metrics, result.error, trial_work_dir(work_dir, trial_id),
                              interrupted=trial_id in unfinished))
    interrupted = bool(unfinished) or len(grid) < expected_trials(sweep)
    best = _record_results(sweep, rows, work_dir, parent)
    parent.log_metrics({"wall_time_s": round(time.time() - started, 1)}, step=0)
    model = None if interrupted else _publish_best_model(sweep, best, work_dir, parent)  # once, when it is done
    _end_unfinished_children(parent, {row.trial_id: row.status for row in rows})
    parent.end("KILLED" if interrupted else "FINISHED")
    print("\n" + format_table(rows, sweep, best))
    if model is not None:
        registered = f"; registered as models:/{model.registered_name}/{model.version}" if model.version else ""
        print(f"the best trial's model: {model.model_uri}{registered}")
    return SweepOutcome(rows, best, work_dir, interrupted, parent.tracking_uri, parent.run_id, model)


def _parent_run(sweep: Sweep, work_dir: Path, resume: bool, concurrency: int) -> MlflowRun:
    """The sweep's MLflow run: continued with ``resume`` (its id is in the work dir's state file), else created
    with the search space and settings as params and the sweep file as an artifact."""
    tracking_uri, artifact_location = sweep.base.mlflow.resolved_uri(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    state_file = work_dir / STATE_FILE
    if resume:
        return MlflowRun(tracking_uri, json.loads(state_file.read_text())["parent_run_id"])
    parent = MlflowRun.create(tracking_uri, sweep.base.mlflow.experiment_name, sweep.name,
                              tags={"raydet.sweep": sweep.config.filename, "raydet.work_dir": str(work_dir)},
                              artifact_location=artifact_location)
    parent.log_params({
        **{f"search.{d.path}": f"{d.kind} {list(d.args)}" for d in sweep.space.dimensions},
        **{f"tune.{key}": value for key, value in vars(sweep.settings).items() if key not in ("scheduler", "trial")},
        "tune.scheduler": str(sweep.scheduler), "tune.max_concurrent_trials": str(concurrency),
    })
    parent.log_text(sweep.config.to_yaml(), "sweep.yaml")
    state_file.write_text(json.dumps({"parent_run_id": parent.run_id, "sweep": sweep.config.filename}) + "\n")
    return parent


def _record_results(sweep: Sweep, rows: list[TrialRow], work_dir: Path, parent: MlflowRun) -> TrialRow | None:
    """Write ``results.csv`` and the best trial's ``best_config.yaml`` (logged to the parent run, with the best
    metric); return the best row."""
    best = best_row(rows, sweep.settings.mode)
    write_csv(rows, sweep, work_dir / "results.csv")
    parent.log_artifact(work_dir / "results.csv")
    if best is not None:
        header = (f"# The best trial ({best.trial_id}, {sweep.settings.metric} {best.metric:.4f}) of the sweep "
                  f"{sweep.config.filename}\n# Train it: python -m raydet.train best_config.yaml\n")
        (work_dir / "best_config.yaml").write_text(header + sweep.trial_config(best.sampled).to_yaml())
        parent.log_artifact(work_dir / "best_config.yaml")
        parent.log_metrics({f"best_{sweep.settings.metric}": best.metric}, step=0)
    return best


def _publish_best_model(sweep: Sweep, best: TrialRow | None, work_dir: Path,
                        parent: MlflowRun) -> PublishedModel | None:
    """The best trial's best checkpoint as the sweep run's MLflow model (``mlflow.log_model`` of the sweep's
    base config), registered with its ``mlflow.registered_model_name`` and ``alias``; None when there is none
    (or it could not be logged: a warning)."""
    from ..builder import build_datasets
    from ..config import load_config
    from ..config.parsed import parse_config
    from ..engine.mlflow_models.publish import log_detector_or_warn  # mlflow: imported once there is a model to log

    settings = sweep.base.mlflow
    trial_dir = trial_work_dir(work_dir, best.trial_id) if best is not None else None
    if not settings.log_model or trial_dir is None or not (trial_dir / "final_metrics.json").is_file():
        return None
    final = json.loads((trial_dir / "final_metrics.json").read_text())
    if not final.get("best_checkpoint"):
        return None
    parsed = parse_config(load_config(trial_dir / "config.yaml"))
    train = build_datasets(parsed, ("train",))["train"]
    return log_detector_or_warn("the best trial's model", parent.tracking_uri, parent.run_id,
                                final["best_checkpoint"], parsed.yaml, train.classes, train.cat_ids, final,
                                step=final.get("iters") or 0, registered_name=settings.registered_model_name,
                                alias=settings.alias,
                                tags={"raydet.sweep": str(sweep.config.filename), "raydet.trial_id": best.trial_id})


def _end_unfinished_children(parent: MlflowRun, trial_status: dict[str, str]) -> None:
    """Close the child runs of ``parent`` still marked RUNNING.

    Only a finished trial closes its own run; one stopped by the scheduler, interrupted or
    failed leaves it to this driver: FAILED for a trial whose ``trial_status`` is ``error``,
    else KILLED.
    """
    experiment_id = parent.client.get_run(parent.run_id).info.experiment_id
    children = parent.client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' and attributes.status = 'RUNNING'")
    for child in children:
        failed = trial_status.get(child.data.tags.get("raydet.trial_id")) == ERROR
        parent.client.set_terminated(child.info.run_id, "FAILED" if failed else "KILLED")
