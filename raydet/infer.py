"""``python -m raydet.infer [CFG] CHECKPOINT INPUT... --out DIR [--score-thr T] [--num-workers N] [--use-gpu]``.

A trained detector over new images: INPUT is any mix of image files, folders
(searched recursively), globs (``'photos/*.jpg'``) and URIs (``s3://…``, a
file or a folder).  The images stream through Ray Data
(``raydet.engine.batch_inference``: decode tasks, an actor pool of
``--num-workers`` models, a GPU each with ``--use-gpu``), then through tasks
that draw each image's detections; thousands of images never sit in memory at
once.  Writes:

- ``DIR/predictions.json``: COCO results (``image_id``, ``category_id``,
  ``bbox`` as x, y, w, h, ``score``; from a detector that makes masks, each
  mask as ``segmentation``, an RLE ``{"size": [h, w], "counts": str}`` that
  ``pycocotools.mask.decode`` reads) plus ``file_name``, every detection the
  model keeps (``--score-thr`` does not filter it);
- ``DIR/pictures/<name>.png``: each image with its detections of score
  ``>= --score-thr`` drawn (one colour per class, captions "class score",
  masks filled in their class's colour).

Progress (images/s and time left) goes to stderr.  An unreadable or corrupt
image is reported (file and reason) and skipped; the rest are processed and
the summary counts it.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from typing import TYPE_CHECKING

from . import storage
from .cli import (
    add_checkpoint_arguments,
    add_config_arguments,
    check_checkpoint,
    check_gpus,
    config_from_args,
    resolve_model_arguments,
)
from .config import ConfigError
from .errors import report_user_errors

if TYPE_CHECKING:  # the command imports torch (through the registry) only once it runs
    from .config.parsed import ParsedConfig

#: What ``torchvision.io.decode_image`` reads.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def find_images(inputs: list[str]) -> list[str]:
    """The image files named by ``inputs`` (files, folders searched recursively, globs, URIs), in order,
    each once.  ``ConfigError`` for an input that names nothing."""
    images: dict[str, None] = {}
    for given in inputs:
        if storage.is_uri(given) and glob.has_magic(given):
            raise ConfigError(f"{given}: globs are read on local paths only; give the folder's URI instead")
        if storage.is_dir(given):
            matches = [path for path in storage.walk(given) if path.lower().endswith(IMAGE_SUFFIXES)]
        elif glob.has_magic(given):
            matches = sorted(path for path in glob.glob(given, recursive=True) if os.path.isfile(path))
        else:
            matches = [given] if storage.is_file(given) else []
        if not matches:
            raise ConfigError(f"{given}: no such image file, folder with images, or glob match")
        images.update((storage.absolute(path), None) for path in matches)
    return list(images)


def classes_of(parsed: ParsedConfig, split: str) -> tuple[list[str], list[int]]:
    """Class names and category ids, from ``data.<split>``'s annotations (those of training's classes);
    when they are not on this machine, the model's label numbers as names and ids."""
    from .builder import build_datasets, check_num_classes, num_classes_nodes
    from .data.problems import DataError

    try:
        dataset = build_datasets(parsed, (split,))[split]  # numbered as the training split numbers them
    except (OSError, ConfigError, DataError, ValueError):
        counts = [count for _, count in num_classes_nodes(parsed.config["model"])]
        print(f"warning: data.{split}'s annotations are not readable here: classes are named by number",
              file=sys.stderr)
        return [str(label) for label in range(max(counts, default=0))], list(range(max(counts, default=0)))
    check_num_classes(parsed, dataset.classes, split)
    return list(dataset.classes), list(dataset.cat_ids)


def results_of_batch(found: list[tuple[int, dict]], cat_ids: list[int], paths: list[str]) -> list[dict]:
    """``predictions.json``'s entries for one batch's detections (``[(image_id, Detections)]``, the image id
    an index into ``paths``): COCO results (with ``segmentation`` RLE from a mask detector) and ``file_name``."""
    from .data.coco_writer import detections_to_coco

    return [{**result, "file_name": paths[image_id]} for image_id, detections in found
            for result in detections_to_coco([image_id], [detections], cat_ids)]


def _progress(done: int, total: int, started: float) -> str:
    elapsed = time.time() - started
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else float("nan")
    return f"{done}/{total} images  {rate:.1f} img/s  eta {left:.0f} s"


def run(config, checkpoint: str, inputs: list[str], out_dir: str, score_threshold: float = 0.3,
        num_workers: int = 1, use_gpu: bool = False) -> dict:
    """Detect on every image of ``inputs``; write ``out_dir``'s predictions.json and pictures; return a summary."""
    import numpy as np
    import ray

    from .builder import batch_recipe, check_config, model_factory
    from .config.parsed import parse_config
    from .data.records import make_record, records_to_table
    from .engine.batch_inference import detections_dataset, unpack_detections, with_pictures
    from .engine.ray_connection import connect_ray

    parsed = parse_config(config)
    paths = find_images(inputs)
    check_checkpoint(check_config(parsed, data=False).require_model(), parsed.yaml, checkpoint, num_workers)
    split = "test" if parsed.split("test") is not None else "val"
    classes, cat_ids = classes_of(parsed, split)
    recipe = batch_recipe(parsed, split)  # the split's pipeline: resize, normalise, pad
    batch = recipe.data.eval_samples_per_gpu  # images in input order (sizes are not known before decoding)
    plan = np.full((-(-len(paths) // batch), batch), -1, np.int64)
    plan.flat[: len(paths)] = np.arange(len(paths))

    connect_ray(num_workers)
    check_gpus(num_workers, use_gpu)
    records = ray.put(records_to_table([make_record(i, path, 0, 0) for i, path in enumerate(paths)]))
    dataset = with_pictures(detections_dataset([recipe], records, model_factory(parsed), checkpoint, num_workers,
                                               use_gpu, plan=plan, accel=parsed.accel),
                            records, storage.join(out_dir, "pictures"), classes, score_threshold)
    results, detected, unusable, started = [], 0, 0, time.time()
    for row in dataset.iter_rows():
        found, problems = unpack_detections(row)
        for kind, examples in problems.examples.items():  # each unusable image: its problem, file and why
            for example in examples:
                print(f"skipped ({kind}) {example}", file=sys.stderr)
        detected, unusable = detected + len(found), unusable + problems.total
        results.extend(results_of_batch(found, cat_ids, paths))
        print(_progress(detected + unusable, len(paths), started), file=sys.stderr)
    results.sort(key=lambda result: result["image_id"])  # input order (the actors finish in any order)
    storage.write_text(storage.join(out_dir, "predictions.json"), json.dumps(results) + "\n")
    skipped = len(paths) - detected
    return {"images": len(paths), "detected": detected, "skipped": skipped,
            "detections": len(results), "seconds": round(time.time() - started, 1), "out": out_dir}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m raydet.infer", description="Detect objects in new images.")
    add_config_arguments(parser)
    add_checkpoint_arguments(parser)
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders, globs or URIs")
    parser.add_argument("--out", required=True, help="output folder (a path or a URI)")
    parser.add_argument("--score-thr", type=float, default=0.3, help="draw detections scoring at least this")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        resolve_model_arguments(args, rest="inputs")
        if not args.inputs:
            raise ConfigError("INPUT is missing: give the images (files, folders, globs or URIs) after CHECKPOINT")
        config = config_from_args(args)
        summary = run(config, args.checkpoint, args.inputs, storage.absolute(args.out), args.score_thr,
                      args.num_workers, args.use_gpu)
        print(f"{summary['detected']} of {summary['images']} images detected ({summary['skipped']} skipped), "
              f"{summary['detections']} detections in {summary['seconds']} s: {summary['out']}")
        print(json.dumps(summary))

    return report_user_errors(body)


if __name__ == "__main__":
    sys.exit(main())
