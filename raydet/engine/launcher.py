"""The driver side of a training run: checks, Ray, the data, MLflow, ``TorchTrainer``, the work directory.

``launch`` is what ``python -m raydet.train`` calls.  Everything that can be
checked before a worker starts is checked first (config, model, optimizer,
every section, annotations), so a bad config fails in seconds with the config
CLI's message instead of after the worker group is up.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import ray
import ray.train
from ray.train.torch import TorchTrainer

from .. import storage
from ..builder import (
    batch_recipe,
    build_datasets,
    build_model,
    check_masks_match,
    check_num_classes,
    check_top_level_keys,
    data_section,
    model_factory,
    optimizer_factory,
    optimizer_for,
    section,
    seed_of,
    with_absolute_paths,
)
from ..config import Config, ConfigError
from ..config.schema import SECTIONS
from ..data.datasets import DetectionDataset
from ..data.problems import DataError
from ..data.ray_datasets import build_ray_datasets
from ..data.ray_stream import start_stream_runners, stop_stream_runners
from ..evaluation.coco_metric import METRIC_NAMES, SEGM_METRIC_NAMES
from .checkpoint import CHECKPOINT_FILE, load_checkpoint
from .recorder import start_recorder
from .spec import TrainingSpec
from .tracking import MlflowRun, flatten
from .train_loop import CHECKPOINT_SCORE, LOOP_CONFIG, StepHook, train_loop_per_worker

RUN_NAME_TIME = "%Y%m%d-%H%M%S"


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


#: A local Ray's settings.  Ray ends a pooled worker process idle for over a second whenever there are
#: more idle ones than free CPUs; decode tasks go idle that long between epochs (and while the training
#: process is behind), so their processes were ended and restarted, each importing torch again, about
#: once an epoch in a long test session.  Idle for up to a minute, they are reused instead.
LOCAL_RAY_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000}


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
    needed = math.ceil(cpus - 1e-9) + 2
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, needed), _system_config=LOCAL_RAY_SYSTEM_CONFIG)


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


def latest_checkpoint(run_folder: str) -> str | None:
    """The newest ``checkpoint_…`` folder of a run folder (Ray's names sort by time), if any."""
    try:
        names = [name for name in storage.list_dir(run_folder) if name.startswith("checkpoint_")]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return storage.join(run_folder, max(names)) if names else None


def _checkpoint_file(checkpoint: ray.train.Checkpoint, run_folder: str) -> str:
    """The ``checkpoint.pt`` of a reported checkpoint, named as its run folder is (a path or a URI):
    Ray keeps the path inside the filesystem (``bucket/key``), without the scheme and host."""
    return storage.join(run_folder, storage.name_of(checkpoint.path), CHECKPOINT_FILE)


#: Start-up phases of a run, in order: (name in ``startup_s``, the mark that ends it).  Marks come from the
#: driver (``launched`` … ``fit_started``) and rank 0 (``worker_started`` … ``first_iteration``).
STARTUP_PHASES = (
    ("checks", "checked"),              # config, model and optimizer built once, annotations read and checked
    ("ray_start", "ray_ready"),         # a local Ray started (or the cluster joined)
    ("records", "records_ready"),       # the records tables handed to Ray Data, the work dir written
    ("mlflow_wait", "mlflow_ready"),    # what is left of opening the MLflow run (it opens while Ray starts)
    ("to_fit", "fit_started"),          # the run recorder and the TorchTrainer
    ("worker_group", "worker_started"),  # Ray Train's controller, placement, the worker processes and imports
    ("model", "model_ready"),           # model, DDP, optimizer built; checkpoint restored (decoding has begun)
    ("first_batch", "first_batch"),     # waiting for the first decoded batch
    ("first_step", "first_iteration"),  # the first forward, backward and optimizer step
)


def startup_phases(marks: dict[str, float]) -> dict[str, float]:
    """Seconds each start-up phase took (``STARTUP_PHASES``), and ``to_first_iteration`` from the launch.

    A phase whose mark is missing (no iteration ran, say) is left out.
    """
    phases, previous = {}, marks["launched"]
    for name, mark in STARTUP_PHASES:
        if mark in marks:
            phases[name] = round(marks[mark] - previous, 2)
            previous = marks[mark]
    if "first_iteration" in marks:
        phases["to_first_iteration"] = round(marks["first_iteration"] - marks["launched"], 2)
    return phases


def _open_mlflow_run(config: Config, tracking_uri: str, artifact_location: str | None, run_name: str,
                     work_dir: Path, options: RunOptions) -> MlflowRun:
    """Create the run's MLflow run with its tags, params and ``config.yaml``."""
    tracker = MlflowRun.create(tracking_uri, section(config, "mlflow").experiment_name, run_name,
                               tags={"raydet.config": config.filename, "raydet.work_dir": str(work_dir),
                                     **options.mlflow_tags},
                               artifact_location=artifact_location)
    tracker.log_params({**flatten(dict(config)), **options.mlflow_params})
    tracker.log_text(config.to_yaml(), "config.yaml")
    return tracker


def _abandon_mlflow_run(opening: Future, error: BaseException) -> None:
    """End the MLflow run of a launch that failed before training (if the run was opened at all)."""
    with contextlib.suppress(Exception):
        opening.result().end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


def training_spec(config: Config, datasets: dict[str, DetectionDataset]) -> TrainingSpec:
    """What every worker receives, built here from the config (``datasets``: the splits read on the driver)."""
    settings = {key: section(config, key) for key in SECTIONS}
    has_val = "val" in datasets
    return TrainingSpec(
        config_yaml=config.to_yaml(), seed=seed_of(config), runner=settings["runner"],
        evaluation=settings["evaluation"], checkpointing=settings["checkpoint_config"], logging=settings["log_config"],
        optim=settings["optimizer_config"], lr=settings["lr_config"], num_pictures=settings["mlflow"].num_images,
        accel=settings["accel"],
        train=batch_recipe(config, "train"), val=batch_recipe(config, "val") if has_val else None,
        val_dataset=datasets.get("val"),
        build_model=model_factory(config), build_optimizer=optimizer_factory(config),
    )


def launch(config: Config, work_dir: Path, resume: str | None = None, num_workers: int | None = None,
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
        num_workers, use_gpu: override ``scaling``.
        step_hooks: called on every worker after every training step (tests inject failures with them).
        options: the run's name, MLflow tags and params, and Ray Train callbacks, when another tool
            (a sweep) starts it; otherwise the run is named ``<run_name or work dir>-<time>``.

    Raises:
        ConfigError, DataError: a config or dataset that cannot be used (before any worker starts).
        NonFiniteLossError: training stopped at a NaN or inf loss (every worker stopped at that iteration).
    """
    started = time.time()
    marks = {"launched": started}  # when each start-up phase ended (the workers add theirs)
    config = with_absolute_paths(config)
    work_dir = work_dir.resolve()
    check_top_level_keys(config)  # then everything the workers will build, here, first
    seed_of(config)
    settings = {key: section(config, key) for key in SECTIONS}
    scaling, mlflow_settings = settings["scaling"], settings["mlflow"]
    num_workers = scaling.num_workers if num_workers is None else num_workers
    use_gpu = scaling.use_gpu if use_gpu is None else use_gpu
    model = build_model(config)
    check_masks_match(config, model)
    optimizer_for(config, model)
    if resume not in (None, "auto"):
        resume = storage.absolute(resume)  # the workers run elsewhere
        try:
            load_checkpoint(resume)
        except FileNotFoundError:
            raise ConfigError(f"--resume {resume}: checkpoint not found") from None
        except Exception as err:
            raise ConfigError(f"--resume {resume}: not a raydet checkpoint ({type(err).__name__}: {err})") from None

    storage_path = storage.absolute(scaling.storage_path or work_dir / "ray_results")
    base_name = mlflow_settings.run_name or work_dir.name
    run_name = None
    if resume == "auto":
        run_name = find_latest_run(storage_path, base_name)
        found = "continuing " + run_name if run_name else "no earlier run with a checkpoint; starting anew"
        print(f"--resume auto: {found}")
    options = options or RunOptions(name=run_name or f"{base_name}-{time.strftime(RUN_NAME_TIME)}")
    run_name = options.name

    resources = dict(scaling.resources_per_worker or {"CPU": 1})
    has_val = (config.get("data") or {}).get("val") is not None
    try:
        scaling_config = ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                                 resources_per_worker=resources)
        checkpoint_config = ray.train.CheckpointConfig(
            num_to_keep=settings["checkpoint_config"].max_keep_ckpts,
            checkpoint_score_attribute=CHECKPOINT_SCORE if has_val else None, checkpoint_score_order="max")
    except ValueError as err:
        raise ConfigError(f"{config.source_of(('scaling',))}: scaling: {err}") from None

    if data_section(config).split("train") is None:
        raise ConfigError(f"{config.source_of(('data',))}: data.train is missing: there is nothing to train on")
    datasets = build_datasets(config)
    for split, dataset in datasets.items():
        if len(dataset) == 0:
            raise DataError(f"data.{split} ({dataset.ann_file}) has no images left to use: {dataset.problems.short()}")
    check_num_classes(config, datasets["train"].classes)
    spec = training_spec(config, datasets)
    marks["checked"] = time.time()

    work_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri, artifact_location = mlflow_settings.resolved_uri(work_dir)
    # A new MLflow store takes seconds to set up (and mlflow to import): do it while Ray starts.
    pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow")
    opening = pool.submit(_open_mlflow_run, config, tracking_uri, artifact_location, run_name, work_dir, options)
    pool.shutdown(wait=False)  # the thread ends with its one task
    try:
        connect_ray(num_workers * resources.get("CPU", 1))
        # When the workers will run on this node (a laptop's local Ray), their stream runners start, and warm
        # up, here and now, while the worker group starts; on a cluster each worker starts its own on its node.
        runners = start_stream_runners(num_workers) if _workers_fit_here(num_workers, resources, use_gpu) else []
        marks["ray_ready"] = time.time()
        ray_datasets, data_config, summary = build_ray_datasets(datasets, data_section(config).samples_per_gpu)
        (work_dir / "config.yaml").write_text(config.to_yaml())
        run_folder = storage.join(storage_path, run_name)  # Ray Train's folder of this run: its checkpoints
        storage.write_text(storage.join(run_folder, "config.yaml"), config.to_yaml())  # a resume needs it there
        with open(work_dir / "train.log", "a") as log:
            log.write("\n".join(summary.lines()) + "\n")
        marks["records_ready"] = time.time()
        tracker = opening.result()
    except BaseException as error:
        if options.ends_run_on_error:
            _abandon_mlflow_run(opening, error)
        raise
    marks["mlflow_ready"] = time.time()
    resume_from = resume
    if resume == "auto":  # continues through Ray Train's own copy of the run, which a run without workers lacks
        resume_from = latest_checkpoint(run_folder) if num_workers == 0 else None
    tracker.log_metrics({k.replace("/", "."): v for k, v in summary.metrics().items()}, step=0)

    recorder = start_recorder(work_dir, tracking_uri, tracker.run_id)
    trainer = TorchTrainer(
        train_loop_per_worker,
        # In the object store: Ray Train's controller passes a reference on without unpickling the spec and
        # the actor handles (which would import torchvision and the data pipeline into it); workers fetch it.
        train_loop_config={LOOP_CONFIG: ray.put({
            "spec": spec, "work_dir": str(work_dir),
            "recorder": recorder,
            "resume_from": resume_from,
            # without a worker group Ray keeps no copy of a checkpoint: the loop writes it to stay
            "checkpoint_dir": run_folder if num_workers == 0 else None,
            "step_hooks": list(step_hooks),
            "stream_runners": runners,
        })},
        scaling_config=scaling_config,
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures,
                                                   max_preemption_failures=scaling.max_preemption_failures,
                                                   controller_failure_limit=options.controller_failure_limit),
            callbacks=list(options.callbacks),
            checkpoint_config=checkpoint_config,
            worker_runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(1, int(resources.get("CPU", 1))))}},
        ),
        datasets=ray_datasets,
        dataset_config=data_config,
    )
    marks["fit_started"] = time.time()
    try:
        result = trainer.fit()
        worker_marks = ray.get(recorder.startup_marks.remote())  # the first worker group's rank 0's
    except BaseException as error:
        if options.ends_run_on_error:
            tracker.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    finally:  # the run's helper actors end with it, after the calls rank 0 sent them
        recorder.__ray_terminate__.remote()
        stop_stream_runners(runners)
    returned = result.return_value or {}
    if "non_finite_loss" in returned:
        tracker.end("FAILED")
        raise returned["non_finite_loss"]
    best = (result.get_best_checkpoint(CHECKPOINT_SCORE, "max") if has_val and result.best_checkpoints
            else result.checkpoint)
    metrics = returned.get("metrics", {})
    final = {
        **{name: metrics.get(name, -1.0) for name in METRIC_NAMES},
        **{name: metrics[name] for name in SEGM_METRIC_NAMES if name in metrics},  # mask detectors
        "iters": returned.get("iters"),
        "epochs": returned.get("epochs"),
        "wall_time_s": round(time.time() - started, 1),
        "best_checkpoint": _checkpoint_file(best, run_folder) if best is not None else None,
        "replicas_identical": returned.get("replicas_identical"),
        "worker_nodes": returned.get("worker_nodes"),  # the Ray node id of each rank's worker
        "decode_problems": returned.get("decode_problems", {}),
        "mlflow_run_id": tracker.run_id,
        "launched_at": round(started, 3),  # Unix time; startup_s counts from here
        "startup_s": startup_phases({**marks, **worker_marks}),
    }
    (work_dir / "final_metrics.json").write_text(json.dumps(final, indent=2) + "\n")
    try:  # beside the checkpoints, it outlives the driver's machine; the run is done even if this fails
        storage.write_text(storage.join(run_folder, "final_metrics.json"), json.dumps(final, indent=2) + "\n")
    except OSError as err:
        print(f"warning: final_metrics.json not copied to {run_folder}: {storage.describe(err)}")
    tracker.log_artifact(work_dir / "final_metrics.json")
    tracker.log_metrics({"wall_time_s": final["wall_time_s"]}, step=final["iters"] or 0)
    tracker.end("FINISHED")
    return TrainOutcome(final, work_dir, tracking_uri, tracker.run_id)
