"""The driver side of a training run: Ray, the data, MLflow, ``TorchTrainer``, the work directory.

``launch`` is what ``python -m raydet.train`` and each Ray Tune trial call.
Everything that can be checked before a worker starts is checked first
(config, model, optimizer, annotations), so a bad config fails in seconds
with the config CLI's message instead of after the worker group is up.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
from ray.train.torch import TorchTrainer

from ..builder import build_model, check_top_level_keys, optimizer_for, section, with_absolute_data_root
from ..config import Config
from ..data.problems import DataError
from ..data.ray_ingest import build_ray_datasets
from ..evaluation.coco_metric import METRIC_NAMES
from .tracking import MlflowRun, flatten
from .train_loop import FAIL_AT_ITERATION_ENV, train_loop_per_worker

# Passed on to the workers when set on the driver (Ray Train forwards its own RAY_TRAIN_* settings).
FORWARDED_ENV = (FAIL_AT_ITERATION_ENV, "MLFLOW_TRACKING_URI")


@dataclass
class TrainOutcome:
    """What a finished run leaves behind (also written to ``work_dir/final_metrics.json``)."""

    final_metrics: dict
    work_dir: Path
    run_dir: str
    mlflow_uri: str
    mlflow_run_id: str


def connect_ray(num_workers: int, cpus_per_worker: float) -> None:
    """Join the cluster this process runs in (``RAY_ADDRESS``, set inside a Ray job), else start a local Ray.

    A local Ray gets at least two logical CPUs more than the training workers
    take, so Ray Data's decode tasks are never starved (on a 2-core laptop
    with 2 workers, Ray would otherwise hang waiting for a free CPU).
    """
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    needed = int(num_workers * cpus_per_worker + 0.999) + 2
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, needed))


def _worker_env(threads: int) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(threads)}
    env.update({name: os.environ[name] for name in FORWARDED_ENV if name in os.environ})
    return env


def find_latest_run(storage_path: Path, name: str) -> str | None:
    """The newest run directory ``storage_path/<name>-<time>`` that holds a checkpoint, for ``--resume auto``."""
    if not storage_path.is_dir():
        return None
    runs = sorted((p for p in storage_path.glob(f"{name}-*") if any(p.glob("checkpoint_*"))),
                  key=lambda p: p.stat().st_mtime)
    return runs[-1].name if runs else None


def launch(config: Config, work_dir: Path, resume: str | None = None, num_workers: int | None = None,
           use_gpu: bool | None = None) -> TrainOutcome:
    """Train ``config``; write the work directory; return the final metrics.

    Args:
        config: the resolved config.
        work_dir: where the config, log, ``final_metrics.json``, the MLflow store (by
            default) and Ray Train's checkpoints (by default) go.
        resume: ``"auto"`` continues the latest run of this work directory from its
            latest checkpoint (same run directory, same schedule); a path starts a
            new run from that checkpoint's weights, optimizer and schedule.
        num_workers, use_gpu: override ``scaling``.

    Raises:
        ConfigError, DataError: a config or dataset that cannot be used (before any worker starts).
    """
    started = time.time()
    config = with_absolute_data_root(config)
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    scaling, checkpointing = section(config, "scaling"), section(config, "checkpoint_config")
    evaluation, mlflow_settings = section(config, "evaluation"), section(config, "mlflow")
    num_workers = scaling.num_workers if num_workers is None else num_workers
    use_gpu = scaling.use_gpu if use_gpu is None else use_gpu

    check_top_level_keys(config)  # then everything the workers will build, here, first
    for key in ("runner", "lr_config", "optimizer_config", "log_config"):
        section(config, key)
    optimizer_for(config, build_model(config))
    resources = dict(scaling.resources_per_worker or {"CPU": 1})
    connect_ray(num_workers, resources.get("CPU", 1))
    datasets, data_config, summary = build_ray_datasets(config)
    if "train" not in datasets:
        raise DataError(f"{config.filename}: data.train is missing: there is nothing to train on")
    for split, info in summary.splits.items():
        if info.num_images == 0:
            raise DataError(f"data.{split} ({info.ann_file}) has no usable images: {info.problems.short()}")

    (work_dir / "config.yaml").write_text(config.to_yaml())
    storage = Path(scaling.storage_path) if scaling.storage_path and "://" not in scaling.storage_path else None
    storage_path = scaling.storage_path or str(work_dir / "ray_results")
    base_name = mlflow_settings.run_name or work_dir.name
    run_name = None
    if resume == "auto":
        run_name = find_latest_run(storage or Path(storage_path), base_name)
        print(f"--resume auto: {'continuing ' + run_name if run_name else 'no earlier run with a checkpoint; starting anew'}")
    run_name = run_name or f"{base_name}-{time.strftime('%Y%m%d-%H%M%S')}"

    tracking_uri, artifact_location = mlflow_settings.resolved_uri(work_dir)
    tracker = MlflowRun.create(tracking_uri, mlflow_settings.experiment_name, run_name,
                               tags={"raydet.config": config.filename, "raydet.work_dir": str(work_dir)},
                               artifact_location=artifact_location)
    tracker.log_params(flatten(dict(config)))
    tracker.log_text(config.to_yaml(), "config.yaml")
    tracker.log_metrics({k.replace("/", "."): v for k, v in summary.metrics().items()}, step=0)

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config, "work_dir": str(work_dir),
            "mlflow": {"tracking_uri": tracking_uri, "run_id": tracker.run_id},
            "resume_from": None if resume in (None, "auto") else str(Path(resume).resolve()),
        },
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=checkpointing.max_keep_ckpts, checkpoint_score_attribute=evaluation.save_best,
                checkpoint_score_order="max"),
            worker_runtime_env={"env_vars": _worker_env(max(1, int(resources.get("CPU", 1))))},
        ),
        datasets=datasets,
        dataset_config=data_config,
    )
    try:
        result = trainer.fit()
    except BaseException:
        tracker.end("FAILED")
        raise
    returned = result.return_value or {}
    best = result.get_best_checkpoint(evaluation.save_best, "max") if result.best_checkpoints else result.checkpoint
    metrics = returned.get("metrics", {})
    final = {
        **{name: metrics.get(name, -1.0) for name in METRIC_NAMES},
        "iters": returned.get("iters"),
        "epochs": returned.get("epochs"),
        "wall_time_s": round(time.time() - started, 1),
        "best_checkpoint": os.path.join(best.path, "checkpoint.pt") if best is not None else None,
        "replicas_identical": returned.get("replicas_identical"),
        "decode_problems": returned.get("decode_problems", {}),
        "mlflow_run_id": tracker.run_id,
    }
    (work_dir / "final_metrics.json").write_text(json.dumps(final, indent=2) + "\n")
    tracker.log_artifact(work_dir / "final_metrics.json")
    tracker.log_metrics({"wall_time_s": final["wall_time_s"]}, step=final["iters"] or 0)
    tracker.end("FINISHED")
    return TrainOutcome(final, work_dir, str(Path(storage_path) / run_name), tracking_uri, tracker.run_id)
