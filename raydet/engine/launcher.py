"""The driver side of a training run, in phases: check, paths and resume, Ray and tracking, trainer, outcome.

``launch`` is what ``python -m raydet.train`` calls.  Everything that can be
checked before a worker starts is checked first (config, model, optimizer,
every section, annotations: ``raydet.builder.check_config``, the one
validation path), so a bad config fails in seconds with the config CLI's
message instead of after the worker group is up.  Each later phase reads what
the one before handed it (``RunPlan``, ``RayParts``), never the raw config.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import ray
import ray.train

from .. import storage
from ..builder import CheckedConfig, batch_recipe, check_config, check_data, lookup, model_factory, optimizer_factory
from ..config import Config, ConfigError
from ..config.parsed import ParsedConfig, parse_config
from ..data.problems import DataError
from ..data.sampling import GlobalBatch
from ..data.shared_records import share_records
from ..data.stream_runner import start_stream_runners, stop_stream_runners
from ..evaluation.coco_metric import METRIC_NAMES, SEGM_METRIC_NAMES
from .checkpoint import CHECKPOINT_FILE, CheckpointError, latest_checkpoint, load_checkpoint_of, load_newest_readable
from .environment import environment_defaults
from .fitting import ControllerKeepingTrainer, fit_again_after_actor_deaths
from .ray_connection import connect_ray
from .recorder import start_recorder
from .spec import TrainingSpec
from .stopwatch import STARTUP_PHASES, Stopwatch, startup_phases
from .tracking import MlflowRun, flatten
from .train_loop import CHECKPOINT_SCORE, LOOP_CONFIG, LoopConfig, StepHook, train_loop_per_worker
from .trainer import NonFiniteLossError

if TYPE_CHECKING:
    import torch

__all__ = ["STARTUP_PHASES", "RunOptions", "TrainOutcome", "launch", "startup_phases"]

RUN_NAME_TIME = "%Y%m%d-%H%M%S"
#: A worker count: fixed, or an elastic ``(MIN, MAX)`` range.
WorkerCount = int | tuple[int, int]
#: How long Ray Train waits for an elastic group's resources before it decides its size again.  It sizes a
#: group from what Ray Data's autoscaling coordinator reserved, which re-reads the node list every 20 s: after a
#: node is lost, the first restart may ask for the lost node's share too, and waits this long (60 s by default)
#: before the next decision, made on the node list without it.
ELASTIC_GROUP_START_TIMEOUT_S = 25


@dataclass
class TrainOutcome:
    """What a finished run leaves behind (also written to ``work_dir/final_metrics.json``)."""

    final_metrics: dict
    work_dir: Path
    mlflow_uri: str
    mlflow_run_id: str


@dataclass(frozen=True)
class RunOptions:
    """How a run started by another tool (a sweep's trial) is named, recorded and watched.

    Attributes:
        name: the Ray Train run's name (its folder under the storage path: the same name
            continues the same run) and the MLflow run's name.
        mlflow_tags: added to the MLflow run's tags (e.g. ``mlflow.parentRunId``).
        mlflow_params: added to the MLflow run's params.
        callbacks: ``ray.train.UserCallback``s (e.g. one that forwards reports to Tune).
        controller_failure_limit: Ray Train controller failures tolerated (e.g. a worker group that
            did not start in time); -1: unlimited.
        ends_run_on_error: close the MLflow run as FAILED / KILLED when the fit raises.  A sweep's
            trial leaves that to the sweep's driver: a trial that Tune stops or a Ctrl+C interrupts
            may see its fit raise while its process is torn down, and only the driver knows why.
    """

    name: str
    mlflow_tags: dict[str, str] = field(default_factory=dict)
    mlflow_params: dict[str, str] = field(default_factory=dict)
    callbacks: tuple[ray.train.UserCallback, ...] = ()
    controller_failure_limit: int = -1
    ends_run_on_error: bool = True


def _workers_fit_here(num_workers: int, resources: dict[str, float], use_gpu: bool) -> bool:
    """Whether the worker group will run on this node: the Ray this process joined has one node, and
    that node holds ``num_workers`` × ``resources`` (and a GPU each with ``use_gpu``).  An autoscaling
    cluster whose head cannot hold the workers answers False."""
    if sum(1 for node in ray.nodes() if node["Alive"]) != 1:
        return False
    per_worker = {**({"GPU": 1.0} if use_gpu else {}), **resources}
    total = ray.cluster_resources()
    return all(total.get(key, 0.0) >= num_workers * amount for key, amount in per_worker.items())


def find_latest_run(storage_path: str, name: str) -> str | None:
    """The newest run folder ``storage_path/<name>-<time>`` that holds a checkpoint, for ``--resume auto``
    (``storage_path``: a local folder or a URI)."""
    pattern = re.compile(re.escape(name) + r"-\d{8}-\d{6}")
    try:
        runs = [run for run in storage.list_dir(storage_path) if pattern.fullmatch(run)]
    except FileNotFoundError:
        return None
    for run in sorted(runs, reverse=True):
        if latest_checkpoint(storage.join(storage_path, run)) is not None:
            return run
    return None


def _checkpoint_file(checkpoint: ray.train.Checkpoint, run_folder: str) -> str:
    """The ``checkpoint.pt`` of a reported checkpoint, named as its run folder is (a path or a URI):
    Ray keeps the path inside the filesystem (``bucket/key``), without the scheme and host."""
    return storage.join(run_folder, storage.name_of(checkpoint.path), CHECKPOINT_FILE)


def training_spec(parsed: ParsedConfig, checked: CheckedConfig, workers: "WorkerGroup") -> TrainingSpec:
    """What every worker receives, built here from the parsed config and the datasets ``check_config`` read."""
    has_val = "val" in checked.datasets
    return TrainingSpec(
        config_yaml=parsed.yaml, seed=parsed.seed, runner=parsed.runner, evaluation=parsed.evaluation,
        checkpoint_config=parsed.checkpoint_config, log_config=parsed.log_config,
        optimizer_config=parsed.optimizer_config, lr_config=parsed.lr_config, num_pictures=parsed.mlflow.num_images,
        train=batch_recipe(parsed, "train"), val=batch_recipe(parsed, "val") if has_val else None,
        val_dataset=checked.datasets.get("val"),
        build_model=model_factory(parsed), build_optimizer=optimizer_factory(parsed), accel=parsed.accel,
        global_batch=GlobalBatch(max(workers.num_workers, 1), parsed.optimizer_config.accumulate),
        checkpoint_interval_iters=parsed.checkpoint_config.iterations_between_checkpoints(workers.elastic),
    )


@dataclass(frozen=True)
class WorkerGroup:
    """The training workers: how many (at most ``num_workers``; at least ``min_workers``, less than
    ``num_workers`` when the group is elastic), on GPUs or not, each one's resources, and Ray Train's objects."""

    num_workers: int
    use_gpu: bool
    resources: dict[str, float]
    scaling_config: ray.train.ScalingConfig
    checkpoint_config: ray.train.CheckpointConfig
    min_workers: int
    health_check_interval_s: float

    @property
    def elastic(self) -> bool:
        return self.min_workers < self.num_workers


@dataclass(frozen=True)
class RunPlan:
    """What the check and path phases decided; the later phases read only this.

    Attributes:
        parsed, checked: the config parsed once, and what ``check_config`` built from it.
        spec: what every worker receives.
        work_dir: the run's work directory (absolute).
        storage_path: Ray Train's storage (a local folder or a URI); the run's folder is ``run_folder``.
        options: the run's name, MLflow tags and params, callbacks.
        workers: the worker group.
        resume_from: the checkpoint the workers start from (``--resume PATH``; ``--resume auto`` without a
            worker group), else None: Ray Train's own latest checkpoint of the run, if any.
    """

    parsed: ParsedConfig
    checked: CheckedConfig
    spec: TrainingSpec
    workers: WorkerGroup
    work_dir: Path
    storage_path: str
    options: RunOptions
    resume_from: str | None

    @property
    def run_folder(self) -> str:
        """Ray Train's folder of this run: its checkpoints, ``config.yaml`` and ``final_metrics.json``."""
        return storage.join(self.storage_path, self.options.name)

    @property
    def has_val(self) -> bool:
        return self.spec.val is not None


@dataclass(frozen=True)
class RayParts:
    """What the Ray phase started: the data stream runners (on this node, or none), each split's records in
    the object store and their summary (``raydet.data.shared_records``)."""

    runners: list
    records: dict
    summary: object


def launch(config: Config, work_dir: Path, resume: str | None = None, num_workers: WorkerCount | None = None,
           use_gpu: bool | None = None, step_hooks: Sequence[StepHook] = (),
           options: RunOptions | None = None) -> TrainOutcome:
    """Train ``config``; write the work directory; return the final metrics.

    Args:
        config: the resolved config.
        work_dir: where the config, log, ``final_metrics.json``, the MLflow store (by
            default) and Ray Train's checkpoints (by default) go.
        resume: ``"auto"`` continues the latest run of this work directory from its
            latest checkpoint (same run directory, same schedule); a path starts a
            new run from that checkpoint's weights, optimizer and schedule.
        num_workers, use_gpu: override ``scaling`` (``num_workers``: a count, or ``(MIN, MAX)``).
        step_hooks: called on every worker after every training step (tests inject failures with them).
        options: the run's name, MLflow tags and params, and Ray Train callbacks, when another tool
            (a sweep) starts it; otherwise the run is named ``<run_name or work dir>-<time>``.

    Raises:
        ConfigError, DataError: a config or dataset that cannot be used (before any worker starts).
        NonFiniteLossError: training stopped at a NaN or inf loss (every worker stopped at that iteration).
    """
    stopwatch = Stopwatch("launched")  # when each start-up phase ended (rank 0 adds its marks)
    parsed = parse_config(config)
    checked, workers = check_run(parsed, resume, num_workers, use_gpu)
    plan = plan_run(parsed, checked, workers, work_dir.resolve(), resume, options)
    stopwatch.mark("checked")
    with mlflow_run(plan) as opening:
        parts = start_ray(plan, stopwatch)
        tracker = opening.result()
        stopwatch.mark("mlflow_ready")
        returned, best = fit(plan, parts, tracker, step_hooks, stopwatch)
    final = final_metrics(plan, returned, best, tracker.run_id, stopwatch)
    final["mlflow_model"] = publish_model(plan, final, tracker)
    write_final_metrics(plan, final, tracker)
    return TrainOutcome(final, plan.work_dir, tracker.tracking_uri, tracker.run_id)


def check_run(parsed: ParsedConfig, resume: str | None, num_workers: WorkerCount | None,
              use_gpu: bool | None) -> tuple[CheckedConfig, WorkerGroup]:
    """Phase 1: build everything the workers will build, here, first (the model and the optimizer, which a
    run must have); check ``--resume PATH``'s checkpoint and the worker group (``num_workers`` and
    ``use_gpu`` override ``scaling``); read and check the training and val annotations."""
    for key in ("model", "optimizer"):  # a run needs both: "<file>: optimizer is missing"
        lookup(parsed.config, key)
    checked = check_config(parsed, data=False)
    if resume not in (None, "auto"):
        _check_resume_checkpoint(storage.absolute(resume), checked.require_model(), parsed.yaml)
    workers = worker_group(parsed, num_workers, use_gpu)
    if parsed.split("train") is None:
        raise ConfigError(f"{parsed.source_of(('data',))}: data.train is missing: there is nothing to train on")
    datasets, lines = check_data(parsed, ("train", "val"), read_here=True)
    for split, dataset in datasets.items():
        if len(dataset) == 0:
            raise DataError(f"data.{split} ({dataset.ann_file}) has no images left to use: {dataset.problems.short()}")
    return dataclasses.replace(checked, datasets=datasets, lines=checked.lines + lines), workers


def _check_resume_checkpoint(path: str, model: torch.nn.Module, config_yaml: str) -> None:
    """``ConfigError`` unless ``--resume PATH`` is a readable checkpoint of this config's model."""
    try:
        load_checkpoint_of(path, model, config_yaml)
    except FileNotFoundError:
        raise ConfigError(f"--resume {path}: checkpoint not found") from None
    except (CheckpointError, OSError) as err:
        raise ConfigError(f"--resume {path}: {err}") from None


def worker_group(parsed: ParsedConfig, num_workers: WorkerCount | None, use_gpu: bool | None) -> WorkerGroup:
    """``scaling`` with the command line's overrides, as Ray Train's objects (their errors are config errors)."""
    scaling = parsed.scaling
    if num_workers is not None:
        try:
            scaling = dataclasses.replace(scaling, num_workers=num_workers)
        except ValueError as err:
            raise ConfigError(f"--num-workers: {err}") from None
    use_gpu = scaling.use_gpu if use_gpu is None else use_gpu
    resources = dict(scaling.resources_per_worker or {"CPU": 1})
    try:
        scaling_config = ray.train.ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=use_gpu, resources_per_worker=resources,
            elastic_resize_monitor_interval_s=scaling.resize_check_interval_s)
        checkpoint_config = ray.train.CheckpointConfig(
            num_to_keep=parsed.checkpoint_config.max_keep_ckpts,
            checkpoint_score_attribute=CHECKPOINT_SCORE if parsed.split("val") is not None else None,
            checkpoint_score_order="max")
    except ValueError as err:
        raise ConfigError(f"{parsed.source_of(('scaling',))}: scaling: {err}") from None
    return WorkerGroup(scaling.max_workers, use_gpu, resources, scaling_config, checkpoint_config, scaling.min_workers,
                       scaling.health_check_interval_s)


def plan_run(parsed: ParsedConfig, checked: CheckedConfig, workers: WorkerGroup, work_dir: Path, resume: str | None,
             options: RunOptions | None) -> RunPlan:
    """Phase 2: where the run lives and its name (``--resume auto`` finds the newest run of this work dir with
    a checkpoint and continues it), and what the workers start from."""
    storage_path = storage.absolute(parsed.scaling.storage_path or work_dir / "ray_results")
    base_name = parsed.mlflow.run_name or work_dir.name
    run_name = None
    if resume == "auto":
        run_name = find_latest_run(storage_path, base_name)
        found = "continuing " + run_name if run_name else "no earlier run with a checkpoint; starting anew"
        print(f"--resume auto: {found}")
    options = options or RunOptions(name=run_name or f"{base_name}-{time.strftime(RUN_NAME_TIME)}")
    resume_from = storage.absolute(resume) if resume not in (None, "auto") else None  # the workers run elsewhere
    if resume == "auto" and workers.num_workers == 0:  # Ray Train keeps no copy of a run without workers: here
        found = load_newest_readable(storage.join(storage_path, options.name))
        if found is not None:
            _, resume_from, warnings = found
            for warning in warnings:
                print(warning, file=sys.stderr)
    return RunPlan(parsed, checked, training_spec(parsed, checked, workers), workers, work_dir, storage_path, options,
                   resume_from)


@contextlib.contextmanager
def mlflow_run(plan: RunPlan) -> Iterator[Future[MlflowRun]]:
    """Phase 3a: open the run's MLflow run on a thread (a new store takes seconds to set up, and mlflow to
    import: it opens while Ray starts); yields its future.  When the launch fails, the run ends FAILED
    (KILLED on Ctrl+C, SIGTERM or an exit) — unless a sweep's driver ends it (``options.ends_run_on_error``); a NaN loss
    always ends it FAILED."""
    plan.work_dir.mkdir(parents=True, exist_ok=True)  # it holds the default store
    pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow")
    opening = pool.submit(_open_mlflow_run, plan)
    pool.shutdown(wait=False)  # the thread ends with its one task
    try:
        yield opening
    except BaseException as error:
        if plan.options.ends_run_on_error or isinstance(error, NonFiniteLossError):
            with contextlib.suppress(Exception):
                opening.result().end("KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED")
        raise


def _open_mlflow_run(plan: RunPlan) -> MlflowRun:
    """Create the run's MLflow run with its tags, params and ``config.yaml``."""
    parsed, options = plan.parsed, plan.options
    tracking_uri, artifact_location = parsed.mlflow.resolved_uri(plan.work_dir)
    tracker = MlflowRun.create(tracking_uri, parsed.mlflow.experiment_name, options.name,
                               tags={"raydet.config": parsed.config.filename, "raydet.work_dir": str(plan.work_dir),
                                     **options.mlflow_tags},
                               artifact_location=artifact_location)
    tracker.log_params({**flatten(dict(parsed.config)), **options.mlflow_params})
    tracker.log_text(parsed.yaml, "config.yaml")
    return tracker


def start_ray(plan: RunPlan, stopwatch: Stopwatch) -> RayParts:
    """Phase 3b: join or start Ray; start the data stream runners when the workers run on this node (a laptop's
    local Ray: they warm up while the worker group starts; on a cluster each worker starts its own); hand
    the records to Ray Data; write the work dir's and the run folder's ``config.yaml``."""
    connect_ray(plan.workers.num_workers * plan.workers.resources.get("CPU", 1))
    here = _workers_fit_here(plan.workers.num_workers, plan.workers.resources, plan.workers.use_gpu)
    runners = start_stream_runners(plan.workers.num_workers) if here else []
    stopwatch.mark("ray_ready")
    records, summary = share_records(plan.checked.datasets, plan.parsed.require_data().samples_per_gpu)
    (plan.work_dir / "config.yaml").write_text(plan.parsed.yaml)
    storage.write_text(storage.join(plan.run_folder, "config.yaml"), plan.parsed.yaml)  # a resume needs it there
    with open(plan.work_dir / "train.log", "a") as log:
        log.write("\n".join(summary.lines()) + "\n")
    stopwatch.mark("records_ready")
    return RayParts(runners, records, summary)


def fit(plan: RunPlan, parts: RayParts, tracker: MlflowRun, step_hooks: Sequence[StepHook],
        stopwatch: Stopwatch) -> tuple[dict, ray.train.Checkpoint | None]:
    """Phase 4: the run recorder and the ``TorchTrainer``; fit.  Returns rank 0's return value and the best
    checkpoint (by ``evaluation.save_best`` with ``data.val``, else the latest)."""
    tracker.log_metrics({k.replace("/", "."): v for k, v in parts.summary.metrics().items()}, step=0)
    recorder = start_recorder(plan.work_dir, tracker.tracking_uri, tracker.run_id)
    loop = LoopConfig(spec=plan.spec, work_dir=str(plan.work_dir), recorder=recorder, resume_from=plan.resume_from,
                      run_folder=plan.run_folder,
                      checkpoint_dir=plan.run_folder if plan.workers.num_workers == 0 else None,
                      step_hooks=tuple(step_hooks), stream_runners=tuple(parts.runners), records=parts.records)
    # In the object store: Ray Train's controller passes a reference on without unpickling the loop config
    # and the actor handles (which would import torchvision and the data pipeline into it); workers fetch it.
    loop_ref = ray.put(loop)

    def new_trainer() -> ControllerKeepingTrainer:
        return ControllerKeepingTrainer(train_loop_per_worker, train_loop_config={LOOP_CONFIG: loop_ref},
                                        scaling_config=plan.workers.scaling_config, run_config=_run_config(plan))

    stopwatch.mark("fit_started")
    try:
        with _controller_environment(plan.workers):
            result, refits = fit_again_after_actor_deaths(new_trainer, plan.run_folder,
                                                          plan.parsed.scaling.max_failures)
        for name, at in ray.get(recorder.startup_marks.remote()).items():  # the first worker group's rank 0's
            stopwatch.mark(name, at=at)
    finally:  # the run's helper actors end with it, after the calls rank 0 sent them
        recorder.__ray_terminate__.options(max_task_retries=0).remote()  # not sent again: it ends the actor
        stop_stream_runners(parts.runners)
    returned = {**(result.return_value or {}), "refits": refits}
    if "non_finite_loss" in returned:
        raise returned["non_finite_loss"]
    best = (result.get_best_checkpoint(CHECKPOINT_SCORE, "max") if plan.has_val and result.best_checkpoints
            else result.checkpoint)
    return returned, best


def _controller_environment(workers: WorkerGroup) -> contextlib.AbstractContextManager:
    """Ray Train's controller settings that it reads from the driver's environment at ``fit`` (each only where
    the environment does not set it already): how often it polls the workers, and for an elastic group how
    long it waits for a group's resources (``ELASTIC_GROUP_START_TIMEOUT_S``)."""
    settings = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": str(workers.health_check_interval_s)}
    if workers.elastic:
        settings["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(ELASTIC_GROUP_START_TIMEOUT_S)
    return environment_defaults(settings)


def _run_config(plan: RunPlan) -> ray.train.RunConfig:
    scaling, options = plan.parsed.scaling, plan.options
    return ray.train.RunConfig(
        name=options.name, storage_path=plan.storage_path,
        failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures,
                                               max_preemption_failures=scaling.max_preemption_failures,
                                               controller_failure_limit=options.controller_failure_limit),
        callbacks=list(options.callbacks),
        checkpoint_config=plan.workers.checkpoint_config,
        worker_runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(1, int(plan.workers.resources.get("CPU", 1))))}},
    )


def final_metrics(plan: RunPlan, returned: dict, best: ray.train.Checkpoint | None, mlflow_run_id: str,
                  stopwatch: Stopwatch) -> dict:
    """Phase 5: what ``final_metrics.json`` holds."""
    metrics = returned.get("metrics", {})
    launched = stopwatch["launched"]
    return {
        **{name: metrics.get(name, -1.0) for name in METRIC_NAMES},
        **{name: metrics[name] for name in SEGM_METRIC_NAMES if name in metrics},  # mask detectors
        "iters": returned.get("iters"),
        "epochs": returned.get("epochs"),
        "wall_time_s": round(time.time() - launched, 1),
        "best_checkpoint": _checkpoint_file(best, plan.run_folder) if best is not None else None,
        "replicas_identical": returned.get("replicas_identical"),
        "worker_nodes": returned.get("worker_nodes"),  # the Ray node id of each rank's worker (the last group's)
        "images_seen": returned.get("images_seen"),  # by all workers, over the run; a restart's redone work once
        "resizes": returned.get("resizes", []),  # an elastic group's: {"iteration", "images_seen", "workers", "reason"}
        "refits": returned.get("refits", 0),  # fits started again: Ray Train's controller gave up on a dead actor
        "decode_problems": returned.get("decode_problems", {}),
        "mlflow_run_id": mlflow_run_id,
        "launched_at": round(launched, 3),  # Unix time; startup_s counts from here
        "startup_s": startup_phases(stopwatch.marks),
    }


def publish_model(plan: RunPlan, final: dict, tracker: MlflowRun) -> dict | None:
    """Phase 5b: the best checkpoint as the run's MLflow model (``mlflow.log_model``), registered as a new
    version of ``mlflow.registered_model_name`` (with ``mlflow.alias``) when set.  Returns what
    ``final_metrics.json`` records of it, or None.  A model that cannot be logged is a warning: the run
    trained, and its checkpoint is where ``best_checkpoint`` says."""
    settings = plan.parsed.mlflow
    if not settings.log_model or not final["best_checkpoint"]:
        return None
    from .mlflow_models.publish import log_detector_or_warn

    train = plan.checked.datasets["train"]
    published = log_detector_or_warn("the model", tracker.tracking_uri, tracker.run_id, final["best_checkpoint"],
                                     plan.parsed.yaml, train.classes, train.cat_ids, final, step=final["iters"] or 0,
                                     registered_name=settings.registered_model_name, alias=settings.alias,
                                     tags={"raydet.config": str(plan.parsed.config.filename),
                                           "raydet.run_name": plan.options.name})
    if published is None:
        return None
    return {"model_uri": published.model_uri, "model_id": published.model_id,
            "registered_model": published.registered_name, "version": published.version,
            "alias": settings.alias if published.version else None}


def write_final_metrics(plan: RunPlan, final: dict, tracker: MlflowRun) -> None:
    """``final_metrics.json`` in the work dir and beside the checkpoints (it outlives the driver's machine; the
    run is done even if that copy fails); logged to MLflow, whose run then ends FINISHED."""
    text = json.dumps(final, indent=2) + "\n"
    (plan.work_dir / "final_metrics.json").write_text(text)
    try:
        storage.write_text(storage.join(plan.run_folder, "final_metrics.json"), text)
    except OSError as err:
        print(f"warning: final_metrics.json not copied to {plan.run_folder}: {storage.describe(err)}")
    tracker.log_artifact(plan.work_dir / "final_metrics.json")
    tracker.log_metrics({"wall_time_s": final["wall_time_s"]}, step=final["iters"] or 0)
    tracker.end("FINISHED")
