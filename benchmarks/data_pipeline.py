"""Data pipeline benchmark: Ray Data vs a torch DataLoader, and the cost of ingest to training.

    python benchmarks/data_pipeline.py [--config CFG] [--cpus N] [--epochs E]

Prints one JSON line:

- ``ray_data_images_per_s`` / ``dataloader_images_per_s``: images per second
  through read + decode + augment + collate, Ray Data tasks vs a
  ``torch.utils.data.DataLoader`` with the same transforms, the same batches
  (the epoch plan) and the same number of worker processes (``--cpus``); both
  warmed up for one epoch (worker processes started) before timing, then
  timed back to back for ``--rounds`` epochs each (medians reported).
  ``after_first_batch``: the same passes counted from each one's first batch
  on, which leaves out what a pass pays to start (a DataLoader's persistent
  workers answer at once; a Ray Data execution plans, schedules its first task
  and returns that task's batches together).
- ``ingest_ratio``: training throughput (images/s) of one training process fed
  by the Ray Data stream, divided by its throughput on the very same batches
  held in memory (median over ``--rounds`` alternating pairs).  1.0 means the
  pipeline costs the training loop nothing.  ``ingest_cpu_ms_per_step``: the
  extra CPU time the training process itself spends per step when streaming
  (fetching and unpacking batches), which is what remains on a machine whose
  other cores do the decoding.
  The training step is a real forward + backward + SGD step of the detector
  in ``--config`` (``model(**batch, return_loss=True)`` -> dict of losses).

With no ``--config``: the demo's tiny FCOS on the built-in shapes dataset,
generated into a temporary folder.

    python benchmarks/data_pipeline.py --photos [DIR] [--cpus 1 2] [--step-s 0.216 0.054]

COCO's work instead: the JPEG photographs of ``python -m raydet.data.prepare
photos`` (prepared into DIR, default ``data/photos``, when missing) through the
COCO R50 configs' training pipeline (``Resize`` to 1333 x 800 keeping the
ratio, flip, normalise, pad to 32; 2 images per batch).  For each number of
decode CPUs K in ``--cpus``, Ray Data and the DataLoader each run ``--rounds``
passes back to back after a warm-up; the JSON line gives each side's images/s
and **CPU-seconds per image** (the CPU time of the benchmark's whole process
tree during a pass, decode processes, Ray's raylet and GCS and the consumer
included, divided by its images) and ``ray_data_vs_dataloader`` per K.  With
``--step-s S ...`` the consumer also runs a pass per side that takes S seconds
per batch, standing in for a GPU's training step, and reports for each side, K
and S the **data-wait share**: the fraction of the pass, from its first batch
on, spent waiting for the next batch (the first batch's wait, once an epoch,
is ``first_batch_s``).  No model runs in this mode.

"Equal CPUs" sets the decode processes, not the cores they use: a DataLoader
worker's queue pickles each batch into shared memory on a feeder thread of its
own, beside the decoding, so one worker uses more than one core.  Each side's
``cores_used`` (images/s x CPU-seconds per image) says how many it used, and
``ray_data_vs_dataloader_per_cpu_s`` compares images per CPU-second.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = (REPO / "configs/demo/fcos_tiny_shapes.yaml").resolve()
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from proc_cpu import dataloader_worker_pids, thread_cpu_seconds, tree_cpu_seconds  # noqa: E402  (benchmarks/)

from raydet.builder import batch_recipe, build_dataset, build_model  # noqa: E402
from raydet.config import load_config  # noqa: E402
from raydet.data.collate import to_device  # noqa: E402
from raydet.data.decode import decode_planned_batch  # noqa: E402
from raydet.data.photos import prepare_photos  # noqa: E402
from raydet.data.sampling import aspect_groups, augment_seeds, plan_train_epoch  # noqa: E402
from raydet.data.shapes import generate_shapes  # noqa: E402

PHOTOS_CONFIG = (REPO / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml").resolve()


def planned_dataloader(dataset, plan: np.ndarray, seeds: np.ndarray, size_divisor: int, workers: int):
    """A DataLoader over the same planned batches, decoded as a Ray Data task decodes them
    (``decode_planned_batch``: prepared, collated, uint8 where normalising waits for arrival) in ``workers``
    processes."""
    table = dataset.table()

    class Planned(torch.utils.data.Dataset):
        def __len__(self):
            return len(plan)

        def __getitem__(self, step):
            return decode_planned_batch(table, plan[step], seeds[step], dataset.pipeline, size_divisor,
                                        with_gt=True)[0]

    return torch.utils.data.DataLoader(Planned(), batch_size=None, shuffle=False, num_workers=workers,
                                       persistent_workers=True, prefetch_factor=4)


def images_per_second(batches) -> tuple[float, float]:
    """One pass: (images/s from the start, images/s after the first batch arrived)."""
    start, first, images, first_images = time.perf_counter(), None, 0, 0
    for batch in batches:
        images += len(batch["img_metas"])
        if first is None:
            first, first_images = time.perf_counter(), images
    end = time.perf_counter()
    return images / (end - start), (images - first_images) / (end - first)


def timed_pass(batches, step_s: float = 0.0) -> dict:
    """One pass over ``batches``, the consumer taking ``step_s`` per batch: images/s, CPU-seconds per image
    (``tree_cpu_seconds``), the seconds to the first batch, and the share of the rest of the pass spent waiting
    for the next batch (``wait_share``: the steady state, which an epoch's start, paid once, does not blur)."""
    start, cpu_start, images, waited, first = time.perf_counter(), tree_cpu_seconds(), 0, 0.0, None
    iterator = iter(batches)
    while True:
        asked = time.perf_counter()
        batch = next(iterator, None)
        if first is None:
            first = time.perf_counter()
        else:
            waited += time.perf_counter() - asked
        if batch is None:
            break
        images += len(batch["img_metas"])
        if step_s:
            time.sleep(step_s)
    end = time.perf_counter()
    return {"images_per_s": images / (end - start), "cpu_s_per_image": (tree_cpu_seconds() - cpu_start) / images,
            "first_batch_s": first - start, "wait_share": waited / max(end - first, 1e-9)}


def dataloader_thread_cores(make_loader) -> list[float]:
    """One more pass of the DataLoader: the cores each thread of its worker processes used, busiest first
    (the decoding thread, then the queue's feeder thread that pickles batches into shared memory)."""
    workers = dataloader_worker_pids()
    before = {pid: thread_cpu_seconds(pid) for pid in workers}
    start = time.perf_counter()
    timed_pass(make_loader())
    wall_s = time.perf_counter() - start
    cores = [(seconds - before[pid].get(thread, 0.0)) / wall_s
             for pid in workers for thread, seconds in thread_cpu_seconds(pid).items()]
    return sorted((round(core, 2) for core in cores if core >= 0.005), reverse=True)


def photos_benchmark(args) -> dict:
    """Ray Data vs DataLoader on the photo set at each ``--cpus`` K (see the module's docstring)."""
    import ray

    from raydet.data.ray_stream import train_stream

    root = Path(args.photos)
    if not (root / "annotations" / "instances_train2017.json").is_file():
        prepare_photos(root)
    config = load_config(args.config, [f"data.data_root={root.resolve()}", *args.overrides])
    recipe = batch_recipe(config, "train")
    dataset = build_dataset(config, "train")
    groups = aspect_groups([r["height"] for r in dataset.records], [r["width"] for r in dataset.records])
    plan = plan_train_epoch(groups, recipe.data.samples_per_gpu, 1, recipe.seed, 1)[0]
    seeds = augment_seeds(recipe.seed, 1, (1, *plan.shape))[0]
    torch.set_num_threads(1)
    by_cpus = {}
    for cpus in args.cpus:
        loader = planned_dataloader(dataset, plan, seeds, recipe.data.size_divisor, cpus)
        ray.init(num_cpus=cpus, include_dashboard=False, configure_logging=False, logging_level="ERROR")
        records = ray.put(dataset.table())
        sides = {"ray_data": lambda records=records: train_stream(recipe, records, 1),
                 "dataloader": lambda loader=loader: loader}
        for make in sides.values():  # warm-up: start the processes
            timed_pass(make())
        passes = {name: [] for name in sides}
        for _ in range(args.rounds):  # back to back, so a shared machine's load hits both alike
            for name, make in sides.items():
                passes[name].append(timed_pass(make()))
        thread_cores = dataloader_thread_cores(sides["dataloader"])
        waits = {name: {str(step): timed_pass(make(), step)["wait_share"] for step in args.step_s}
                 for name, make in sides.items()}  # one pass each: a slow consumer's pass is long and steady
        ray.shutdown()
        del loader, sides  # ends the DataLoader's worker processes before the next K
        figures = {name: {"images_per_s": round(statistics.median(p["images_per_s"] for p in runs), 2),
                          "cpu_s_per_image": round(statistics.median(p["cpu_s_per_image"] for p in runs), 4)}
                   for name, runs in passes.items()}
        for name, shares in waits.items():
            if shares:
                figures[name]["wait_share_by_step_s"] = {step: round(share, 3) for step, share in shares.items()}
        for side in passes:
            figures[side]["cores_used"] = round(figures[side]["images_per_s"] * figures[side]["cpu_s_per_image"], 2)
        figures["dataloader"]["worker_thread_cores"] = thread_cores
        figures["ray_data_vs_dataloader"] = round(figures["ray_data"]["images_per_s"]
                                                  / figures["dataloader"]["images_per_s"], 3)
        figures["ray_data_vs_dataloader_per_cpu_s"] = round(figures["dataloader"]["cpu_s_per_image"]
                                                            / figures["ray_data"]["cpu_s_per_image"], 3)
        by_cpus[str(cpus)] = figures
    return {
        "benchmark": "data_pipeline",
        "data": (f"photos: {len(dataset)} JPEGs (mostly 640x480), {args.config.name}'s training pipeline "
                 f"({recipe.pipeline}), {recipe.data.samples_per_gpu} per batch"),
        "rounds": args.rounds,
        "step_s": args.step_s,
        "by_decode_cpus": by_cpus,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}",
    }


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def train_throughput(model, batches, steps: int) -> tuple[float, float]:
    """``steps`` forward + backward + SGD steps on ``batches``: (images/s, this process's CPU ms per step)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    start, cpu_start, images = time.perf_counter(), process_cpu_seconds(), 0
    for batch in itertools.islice(batches, steps):
        losses = model(**to_device(batch), return_loss=True)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        images += len(batch["img_metas"])
    return images / (time.perf_counter() - start), (process_cpu_seconds() - cpu_start) * 1000 / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="raydet config with data and model sections (default: the "
                                                     "demo's; with --photos, Faster R-CNN R50-FPN's COCO config)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides")
    parser.add_argument("--cpus", type=int, nargs="+", default=None,
                        help="decode processes: DataLoader workers = Ray Data CPUs (default: the CPUs less one; "
                             "with --photos: 1 and the CPUs)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds; each times both contenders back to back (medians are reported)")
    parser.add_argument("--train-steps", type=int, default=30, help="timed training steps per feeding mode and round")
    parser.add_argument("--photos", nargs="?", const=str(REPO / "data/photos"), default=None,
                        help="measure on the photo set in this folder (default data/photos; prepared when missing)")
    parser.add_argument("--step-s", type=float, nargs="*", default=[],
                        help="with --photos: also time a pass per side whose consumer takes this long per batch "
                             "(e.g. 0.216 0.054: Faster R-CNN R50-FPN on a V100, and 4x that)")
    args = parser.parse_args()
    if args.photos:
        args.config = Path(args.config or PHOTOS_CONFIG).resolve()
        args.cpus = args.cpus or sorted({1, os.cpu_count() or 1})
        print(json.dumps(photos_benchmark(args)))
        return
    args.cpus = (args.cpus or [max(1, (os.cpu_count() or 2) - 1)])[0]
    args.config = args.config or str(DEMO_CONFIG)

    import ray

    from raydet.data.ray_stream import train_stream

    with tempfile.TemporaryDirectory() as tmp:
        overrides = list(args.overrides)
        if Path(args.config).resolve() == DEMO_CONFIG:
            generate_shapes(tmp, seed=0, num_train=240, num_val=1)
            overrides.append(f"data.data_root={tmp}")
        config = load_config(args.config, overrides)
        recipe = batch_recipe(config, "train")
        section = recipe.data
        dataset = build_dataset(config, "train")
        torch.manual_seed(0)
        model = build_model(config)
        model_name = f"{config['model']['type']} ({Path(args.config).name})"
        model.train()

        groups = aspect_groups([r["height"] for r in dataset.records], [r["width"] for r in dataset.records])
        seed = recipe.seed
        plan = plan_train_epoch(groups, section.samples_per_gpu, 1, seed, 1)[0]
        seeds = augment_seeds(seed, 1, (1, *plan.shape))[0]
        torch.set_num_threads(1)  # one core trains; the decode processes get the others
        loader = planned_dataloader(dataset, plan, seeds, section.size_divisor, args.cpus)
        ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, logging_level="ERROR")
        records = ray.put(dataset.table())
        images_per_second(loader), images_per_second(train_stream(recipe, records, 1))  # warm-up: start the processes
        loader_rates, ray_rates = [], []
        for _ in range(args.rounds):  # back to back, so a shared machine's load hits both alike
            loader_rates.append(images_per_second(loader))
            ray_rates.append(images_per_second(train_stream(recipe, records, 1)))

        steps = min(args.train_steps, len(plan))
        in_memory_batches = list(itertools.islice(train_stream(recipe, records, 1), steps))  # the very same batches
        train_throughput(model, in_memory_batches, 3)  # warm-up (allocator, autograd)
        in_memory, streamed = [], []
        for _ in range(args.rounds):
            in_memory.append(train_throughput(model, in_memory_batches, steps))
            streamed.append(train_throughput(model, train_stream(recipe, records, 1), steps))
        ray.shutdown()
        contenders = (ray_rates, loader_rates)
        ray_rate, loader_rate = (statistics.median(rate for rate, _ in rates) for rates in contenders)
        ray_steady, loader_steady = (statistics.median(rate for _, rate in rates) for rates in contenders)
        ratios = [s[0] / m[0] for s, m in zip(streamed, in_memory)]
        cpu_overheads = [s[1] - m[1] for s, m in zip(streamed, in_memory)]

    print(json.dumps({
        "benchmark": "data_pipeline",
        "data": f"{Path(args.config).stem}: {len(dataset)} train images, {section.samples_per_gpu} per batch",
        "decode_cpus": args.cpus,
        "ray_data_images_per_s": round(ray_rate, 1),
        "dataloader_images_per_s": round(loader_rate, 1),
        "ray_data_vs_dataloader": round(ray_rate / loader_rate, 3),
        "after_first_batch": {"ray_data_images_per_s": round(ray_steady, 1),
                              "dataloader_images_per_s": round(loader_steady, 1),
                              "ray_data_vs_dataloader": round(ray_steady / loader_steady, 3)},
        "model": model_name,
        "train_steps": steps,
        "train_images_per_s_streamed": round(statistics.median(s[0] for s in streamed), 2),
        "train_images_per_s_in_memory": round(statistics.median(m[0] for m in in_memory), 2),
        "ingest_ratio": round(statistics.median(ratios), 3),
        "ingest_ratio_rounds": [round(r, 3) for r in ratios],
        "ingest_cpu_ms_per_step": round(statistics.median(cpu_overheads), 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}",
    }))


if __name__ == "__main__":
    main()
