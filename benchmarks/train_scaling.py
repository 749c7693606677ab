"""Training benchmark: time from the command to the first iteration, and 1 vs 2 DDP workers.

    python benchmarks/train_scaling.py [--config CFG] [--epochs E] [--set k=v ...]

Runs ``python -m raydet.train`` (a fresh process and a fresh local Ray each
time, as a user would) with 1 worker and then with 2, each worker one CPU and
one thread, ``log_config.interval=1`` so every iteration is timestamped in
MLflow.  Prints one JSON line:

- ``seconds_to_first_iteration``: from starting the command to the end of rank
  0's first training iteration (imports, config and model checks, Ray start,
  annotation reading, worker group, data pipeline start, one step).
- ``startup_s``: where those seconds went: ``imports`` (the command's Python
  imports, up to ``launch``), then the run's own ``startup_s`` phases from
  ``final_metrics.json`` (``raydet.engine.launcher.STARTUP_PHASES``).
- ``images_per_s``: training images per second over all workers, from the
  iteration timestamps after ``--warmup`` iterations.
- ``speedup_2_vs_1``: the 2-worker figure over the 1-worker one (target >= 1.8).
- ``ray_train_floor``: what Ray alone costs, per worker count: a fresh process
  that imports Ray, starts a local Ray with the launcher's settings and fits a
  ``TorchTrainer`` whose training function does nothing (same scaling and
  runtime environment as a run): ``imports``, ``ray_start`` and
  ``worker_group`` (``fit()`` to the function's first line), and the
  ``total``.  A run's ``seconds_to_first_iteration`` minus this total is
  raydet's share.

With no ``--config``: the demo config on the built-in shapes dataset,
generated into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs/demo/fcos_tiny_shapes.yaml"


def run_training(config: str, overrides: list[str], num_workers: int, work_dir: Path) -> float:
    """Run the CLI; return the wall-clock time its command started at."""
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "raydet.train", config, "--work-dir", str(work_dir), "--num-workers", str(num_workers),
         "--set", *overrides, "log_config.interval=1", "scaling.resources_per_worker.CPU=1"],
        check=True, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return started


def child_env() -> dict[str, str]:
    """The environment of the commands this benchmark times, runs and floors alike."""
    return {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


def floor_command(num_workers: int) -> list[str]:
    """The command of ``ray_train_floor_child`` (run it with ``child_env()``); it prints one JSON line."""
    return [sys.executable, str(Path(__file__).resolve()), "--ray-floor-child", str(num_workers)]


def ray_train_floor_child(num_workers: int) -> None:
    """In a fresh process: time a local Ray's start and an empty TorchTrainer's worker group; print JSON."""
    started = time.time()
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from raydet.engine.ray_connection import connect_ray

    imported = time.time()
    connect_ray(num_workers)
    ray_ready = time.time()

    def first_line(_config):
        return time.time()

    with tempfile.TemporaryDirectory() as storage:
        trainer = TorchTrainer(
            first_line,
            scaling_config=ray.train.ScalingConfig(num_workers=num_workers, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(name="floor", storage_path=storage,
                                           worker_runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}),
        )
        fit_started = time.time()
        entered = trainer.fit().return_value
    print(json.dumps({"imports": round(imported - started, 2), "ray_start": round(ray_ready - imported, 2),
                      "worker_group": round(entered - fit_started, 2), "total": round(entered - started, 2)}))


def ray_train_floor(num_workers: int) -> dict:
    """``ray_train_floor_child`` in a fresh process, as a run's command is."""
    done = subprocess.run(floor_command(num_workers), check=True, env=child_env(), capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def iteration_times(work_dir: Path) -> list[float]:
    """Wall-clock end (s) of every training iteration of the run in ``work_dir``, from MLflow."""
    from mlflow.tracking import MlflowClient

    final = json.loads((work_dir / "final_metrics.json").read_text())
    client = MlflowClient(f"sqlite:///{work_dir.resolve()}/mlflow.db")
    history = client.get_metric_history(final["mlflow_run_id"], "train/loss")
    return [m.timestamp / 1000 for m in sorted(history, key=lambda m: m.step)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG))
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5, help="iterations left out of the throughput")
    parser.add_argument("--ray-floor-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ray_floor_child:
        return ray_train_floor_child(args.ray_floor_child)

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*args.overrides, f"runner.max_epochs={args.epochs}", f"evaluation.interval={args.epochs}"]
        if Path(args.config).resolve() == DEMO_CONFIG.resolve():
            sys.path.insert(0, str(REPO))
            from raydet.data.shapes import generate_shapes

            generate_shapes(Path(tmp) / "shapes")
            overrides.append(f"data.data_root={Path(tmp) / 'shapes'}")
        from raydet.config import load_config
        from raydet.config.parsed import parse_config

        batch = parse_config(load_config(args.config, overrides)).data.samples_per_gpu
        results = {}
        for workers in (1, 2):
            work_dir = Path(tmp) / f"workers_{workers}"
            started = run_training(args.config, overrides, workers, work_dir)
            ends = iteration_times(work_dir)
            timed = ends[args.warmup:]
            final = json.loads((work_dir / "final_metrics.json").read_text())
            phases = final["startup_s"]
            imports = final["launched_at"] - started
            results[workers] = {
                "seconds_to_first_iteration": round(imports + phases.pop("to_first_iteration"), 1),
                "startup_s": {"imports": round(imports, 2), **phases},
                "iterations": len(ends),
                "images_per_s": round(workers * batch * (len(timed) - 1) / (timed[-1] - timed[0]), 2),
            }
        floor = {workers: ray_train_floor(workers) for workers in (1, 2)}

    import ray
    import torch

    print(json.dumps({
        "benchmark": "train_scaling",
        "config": str(Path(args.config).relative_to(REPO) if Path(args.config).is_relative_to(REPO) else args.config),
        "images_per_batch_per_worker": batch,
        "workers": results,
        "speedup_2_vs_1": round(results[2]["images_per_s"] / results[1]["images_per_s"], 3),
        "ray_train_floor": floor,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU, "
                   f"torch {torch.__version__}, ray {ray.__version__}",
    }))


if __name__ == "__main__":
    main()
