"""Sweep benchmark: the per-trial cost Ray Tune adds to a raydet training.

    python benchmarks/tune_overhead.py [--trials N] [--epochs E]

In one process and one local Ray (started first, so neither side pays for it):
one ``launch`` of a config (what ``python -m raydet.train`` runs), then a sweep
of N trials of that same config, one at a time and with no scheduler (the
searched learning rate takes N values on a grid, which changes the numbers
but not the work).  Prints one JSON line with both wall times and

- ``overhead_ratio``: sweep wall time / (N x the single training's wall time);
  1.0 would mean a trial costs exactly what a plain run costs;
- ``per_trial_overhead_s``: (sweep wall time - N x training wall time) / N.

The config is the demo's tiny FCOS, 1 worker, on a built-in shapes dataset of
``--images`` training images generated into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_SWEEP = REPO / "configs/tune/demo_shapes.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials in the sweep")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial and of the single training")
    parser.add_argument("--images", type=int, default=96, help="training images (a quarter as many val images)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))

    import ray
    import torch

    from raydet.data.shapes import generate_shapes
    from raydet.engine.launcher import launch
    from raydet.engine.ray_connection import connect_ray
    from raydet.tune.driver import run_sweep, trial_demand
    from raydet.tune.sweep import load_sweep

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_shapes(tmp / "shapes", seed=0, num_train=args.images, num_val=max(1, args.images // 4))
        lrs = [0.004 * (0.5 ** i) for i in range(args.trials)]
        overrides = [f"data.data_root={tmp / 'shapes'}", f"runner.max_epochs={args.epochs}",
                     f"lr_config.step=[{args.epochs}]", "evaluation.interval=1", "tune.scheduler=null",
                     "tune.max_concurrent_trials=1", "tune.num_samples=1", "mlflow.num_images=0",
                     "search={optimizer.lr: {grid: " + json.dumps(lrs) + "}}"]
        sweep = load_sweep(DEMO_SWEEP, overrides)
        connect_ray(trial_demand(sweep)["CPU"])
        print("single training ...", file=sys.stderr)
        started = time.perf_counter()
        launch(sweep.trial_config({"optimizer.lr": sweep.space.dimensions[0].keys()[0]}), tmp / "train")
        train_s = time.perf_counter() - started
        print(f"sweep of {args.trials} trials ...", file=sys.stderr)
        started = time.perf_counter()
        outcome = run_sweep(sweep, tmp / "sweep")
        sweep_s = time.perf_counter() - started
        assert all(row.status == "finished" for row in outcome.rows), outcome.rows
        ray.shutdown()

    print(json.dumps({
        "benchmark": "tune_overhead",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpu": None,
                    "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__},
        "trials": args.trials, "epochs": args.epochs, "train_images": args.images,
        "train_s": round(train_s, 1), "sweep_s": round(sweep_s, 1),
        "overhead_ratio": round(sweep_s / (args.trials * train_s), 3),
        "per_trial_overhead_s": round((sweep_s - args.trials * train_s) / args.trials, 1),
    }))


if __name__ == "__main__":
    main()
