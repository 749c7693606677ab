"""Inference benchmark: ``raydet.test``'s actor pool vs a plain loop in one process, same model, same threads.

    python benchmarks/inference.py [--config CFG] [--images N] [--actors 1 2] [--set k=v ...]

Over the same images (the ``val`` split; with no ``--config``, the demo's
tiny FCOS on ``--images`` generated shapes images), the same randomly
initialised model (with the config's ``accel:`` speed paths) and the same evaluation batches:

- ``plain``: one process decodes each planned batch and runs ``simple_test``
  on it, one after another, with ``--threads`` torch threads (all CPUs);
- ``actor_pool``: ``raydet.engine.batch_inference.detections_dataset`` (what
  ``python -m raydet.test`` runs) with ``n`` actors, each with the machine's
  CPUs / ``n`` torch threads (as ``raydet.test`` gives them), for each ``n`` in
  ``--actors``, on a local Ray started once.

Prints one JSON line: images/s of each, counted from the call to the last
detection (``images_per_s``: what a user waits for, the actors' start
included) and from the first batch's detections on (``after_first_batch``:
the rate once the pool runs), and each pool's ``ratio`` to the plain loop.
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

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from raydet.accel import AccelSettings, apply_accel  # noqa: E402
from raydet.builder import batch_recipe, build_dataset, build_model, model_factory  # noqa: E402
from raydet.config import load_config  # noqa: E402
from raydet.config.parsed import parse_config  # noqa: E402
from raydet.data.decode import decode_planned_batch  # noqa: E402
from raydet.data.sampling import augment_seeds, plan_eval  # noqa: E402
from raydet.data.shapes import generate_shapes  # noqa: E402
from raydet.engine.evaluation import predict  # noqa: E402

DEMO_CONFIG = REPO / "configs/demo/fcos_tiny_shapes.yaml"


def rates(start: float, first: float, end: float, images: int, first_images: int) -> dict[str, float]:
    return {"images_per_s": round(images / (end - start), 2),
            "after_first_batch": round((images - first_images) / (end - first), 2) if end > first else None}


def plain_loop(model: torch.nn.Module, recipe, table, plan: np.ndarray, seeds: np.ndarray) -> dict[str, float]:
    """Decode and detect every planned batch in this process, one after another."""
    start, first, images, first_images = time.perf_counter(), None, 0, 0
    for indices, batch_seeds in zip(plan, seeds):
        batch, _ = decode_planned_batch(table, indices, batch_seeds, recipe.pipeline, recipe.data.size_divisor,
                                        with_gt=False)
        images += len(predict(model, [batch], torch.device("cpu")))
        if first is None:
            first, first_images = time.perf_counter(), images
    return rates(start, first, time.perf_counter(), images, first_images)


def actor_pool(recipe, records_ref, build, checkpoint: str, actors: int, accel: AccelSettings) -> dict[str, float]:
    from raydet.engine.batch_inference import detections_dataset, unpack_detections

    start, first, images, first_images = time.perf_counter(), None, 0, 0
    for row in detections_dataset([recipe], records_ref, build, checkpoint, num_workers=actors,
                                  accel=accel).iter_rows():
        detections, _ = unpack_detections(row)
        images += len(detections)
        if first is None:
            first, first_images = time.perf_counter(), images
    return rates(start, first, time.perf_counter(), images, first_images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG))
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides")
    parser.add_argument("--images", type=int, default=160, help="generated val images (demo config only)")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the plain loop's torch threads")
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        overrides = list(args.overrides)
        if Path(args.config).resolve() == DEMO_CONFIG:
            generate_shapes(tmp, seed=0, num_train=1, num_val=args.images)
            overrides.append(f"data.data_root={tmp}")
        config = load_config(args.config, overrides)
        recipe = batch_recipe(config, "val")
        dataset = build_dataset(config, "val")
        table = dataset.table()
        torch.manual_seed(0)
        accel = parse_config(config).accel
        model = apply_accel(build_model(config).eval(), accel)
        checkpoint = str(Path(tmp) / "checkpoint.pt")
        torch.save({"model": model.state_dict()}, checkpoint)
        plan = plan_eval(table["height"].to_numpy(), table["width"].to_numpy(),
                         recipe.data.eval_samples_per_gpu, 1)[0]
        seeds = augment_seeds(recipe.seed, 0, plan.shape)

        torch.set_num_threads(args.threads)
        plain_loop(model, recipe, table, plan[:2], seeds[:2])  # warm-up
        plain = plain_loop(model, recipe, table, plan, seeds)

        ray.init(num_cpus=max(*args.actors, os.cpu_count() or 1), include_dashboard=False, configure_logging=False,
                 logging_level="ERROR")
        records = ray.put(table)
        pools = {}
        for actors in args.actors:
            pools[str(actors)] = result = actor_pool(recipe, records, model_factory(config), checkpoint, actors, accel)
            result["ratio"] = round(result["images_per_s"] / plain["images_per_s"], 3)
            result["ratio_after_first_batch"] = round(result["after_first_batch"] / plain["after_first_batch"], 3)
        ray.shutdown()

    print(json.dumps({
        "benchmark": "inference",
        "model": f"{config['model']['type']} ({Path(args.config).name})",
        "images": len(dataset),
        "batch": recipe.data.eval_samples_per_gpu,
        "plain": {"threads": args.threads, **plain},
        "actor_pool": pools,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}",
    }))


if __name__ == "__main__":
    main()
