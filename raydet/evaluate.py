"""``python -m raydet.test [CFG] CHECKPOINT [--split S] [--aug-test] [--num-workers N] [--use-gpu] [--out F] ...``.

(The command's code; ``raydet/test.py`` runs this module's ``main``.)

COCO metrics of a checkpoint on ``data.<split>``: Ray Data batch inference on a
local Ray (or the cluster in ``RAY_ADDRESS``): tasks decode the split, an
actor pool of ``--num-workers`` models (a GPU each with ``--use-gpu``) detects,
each image exactly once.  Prints pycocotools' summary, each category's AP and
AP50, then one JSON line of the metrics under training's names
(``bbox_mAP``, ``bbox_mAP_50``, …; for a detector that makes masks, such as
Mask R-CNN, also ``segm_mAP``, ``segm_mAP_50``, … where the split's ground
truth has segmentations).  ``--out`` writes the detections in COCO results
format (``image_id``, ``category_id`` from the annotation file, ``bbox`` as
x, y, w, h, ``score``; each mask as ``segmentation``, an RLE
``{"size": [h, w], "counts": str}``), which pycocotools scores the same.
``--show-dir``: a picture per image, its ground truth beside its detections
(``--show-score-thr``), masks drawn filled.  ``CHECKPOINT`` is a ``checkpoint.pt`` (e.g.
``best_checkpoint`` of ``final_metrics.json``) or its folder, a local path or
a URI (``s3://…``), or an MLflow model (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
``models:/MODEL_ID``, ``runs:/RUN_ID/model``, from ``--tracking-uri`` or ``MLFLOW_TRACKING_URI``), which
carries its config: ``CFG`` may then be left out.

``--aug-test``: test-time augmentation — every ``--tta-scales`` scale of the
split's ``Resize`` (``LONGxSHORT`` sizes, or plain factors of each image's own
size for ``Resize: {scale_factor: …}`` pipelines), each seen in every
``--tta-flips`` direction (default ``none,horizontal``; overhead imagery, which
has no "up", can use ``none,horizontal,vertical,diagonal``); the model's
``aug_test`` maps each view's detections back to the original image and merges
them by NMS.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from typing import Sequence

from . import storage
from .cli import (
    add_checkpoint_arguments,
    add_config_arguments,
    check_checkpoint,
    check_gpus,
    config_from_args,
    resolve_model_arguments,
)
from .config import Config, ConfigError
from .errors import report_user_errors
from .registry import did_you_mean

#: Test-time flip directions: unflipped, left-right, up-down, both (a half turn).
TTA_FLIPS = ("none", "horizontal", "vertical", "diagonal")
#: ``--tta-flips``'s default: each scale unflipped and flipped left-right, as mmdetection's ``MultiScaleFlipAug``.
DEFAULT_TTA_FLIPS = ("none", "horizontal")


def tta_configs(config: Config, split: str, scales: list[list[int] | float],
                flips: Sequence[str] = DEFAULT_TTA_FLIPS) -> list[Config]:
    """One config per test-time view: each scale (``[long, short]`` or a factor of the image's size) in each
    flip direction of ``flips`` (``TTA_FLIPS``; ``"none"`` unflipped), ``Resize`` and ``RandomFlip`` replaced."""
    pipeline = config["data"][split].get("pipeline") or []
    kinds = [step.get("type") for step in pipeline]
    if "Resize" not in kinds:
        raise ConfigError(f"{config.where(f'data.{split}.pipeline')}: --aug-test needs a Resize step to vary")
    views = []
    for scale in scales:
        for flip in flips:
            view = copy.deepcopy(dict(config))
            steps = view["data"][split]["pipeline"] = [dict(step) for step in pipeline]
            resize = steps[kinds.index("Resize")]
            resize.pop("img_scale", None)
            resize.pop("scale_factor", None)
            resize.update({"scale_factor": scale} if isinstance(scale, float) else
                          {"img_scale": scale, "multiscale_mode": "range"})
            flip_step = ({"type": "RandomFlip", "flip_ratio": 0.0} if flip == "none" else
                         {"type": "RandomFlip", "flip_ratio": 1.0, "direction": flip})
            if "RandomFlip" in kinds:
                steps[kinds.index("RandomFlip")] = flip_step
            else:
                steps.insert(kinds.index("Resize") + 1, flip_step)
            views.append(Config(view, config.filename, config.sources))
    return views


def evaluate_checkpoint(config: Config, checkpoint: str, split: str, scales: list[list[int] | float] | None,
                        num_workers: int = 1, use_gpu: bool = False, show_dir: str | None = None,
                        show_score_thr: float = 0.3, pr_iou: float = 0.4,
                        pr_score_thr: float | None = None,
                        flips: Sequence[str] = DEFAULT_TTA_FLIPS) -> tuple[dict, str, list[dict]]:
    """``(metrics, summary, COCO results)`` of ``checkpoint`` on ``data.<split>``: the split decoded by Ray
    Data tasks and detected by ``num_workers`` actors (``raydet.engine.batch_inference``), each image once;
    the summary is pycocotools' followed by each category's AP and AP50 (for boxes, and for masks from a
    mask detector: ``DetectionCollector.score``), then box precision and recall at
    IoU ``pr_iou`` of the detections scoring ``pr_score_thr`` or more (None: the threshold with the best
    F1 on this split).  ``show_dir``: a picture per image there, its ground truth beside its detections
    scoring ``show_score_thr`` or more."""
    import ray

    from .builder import batch_recipe, check_config, check_data, check_num_classes, model_factory
    from .config.parsed import parse_config
    from .data.problems import ProblemReport
    from .engine.batch_inference import detections_dataset, unpack_detections, with_pictures
    from .engine.evaluation import DetectionCollector
    from .engine.ray_connection import connect_ray

    parsed = parse_config(config)
    check_checkpoint(check_config(parsed, data=False).require_model(), parsed.yaml, checkpoint, num_workers)
    if parsed.split(split) is None:
        raise ConfigError(f"{config.filename}: data.{split} is missing: there is nothing to evaluate")
    dataset = check_data(parsed, (split,), read_here=True)[0][split]  # numbered as the training split numbers it
    check_num_classes(parsed, dataset.classes, split)
    views = [parsed] if scales is None else tta_configs(parsed.config, split, scales, flips)
    connect_ray(num_workers)
    check_gpus(num_workers, use_gpu)
    records = ray.put(dataset.table())
    predictions, problems = [], ProblemReport()
    detection_rows = detections_dataset([batch_recipe(view, split) for view in views], records,
                                        model_factory(parsed), checkpoint, num_workers=num_workers, use_gpu=use_gpu,
                                        accel=parsed.accel)
    if detection_rows is not None and show_dir:
        detection_rows = with_pictures(detection_rows, records, show_dir, dataset.classes, show_score_thr,
                                       ground_truth=True)
    for row in detection_rows.iter_rows() if detection_rows is not None else ():
        detections, skipped = unpack_detections(row)
        predictions.extend(detections)
        problems.merge(skipped)
    if problems:
        print(f"found while decoding: {problems.short()}", file=sys.stderr)
        for line in problems.lines():
            print(f"  {line}", file=sys.stderr)
    collector = DetectionCollector(dataset, rank=0)
    results = collector.results(predictions)
    metrics = collector.score(predictions, classwise=True, results=results)
    counts = collector.precision_recall(predictions, pr_iou, pr_score_thr)
    chosen = "given" if pr_score_thr is not None else "the best F1 on this split"
    summary = (f"{collector.summary}\n\nbox precision {counts['box_precision']:.3f}, "
               f"recall {counts['box_recall']:.3f}, F1 {counts['box_f1']:.3f} at IoU {pr_iou} "
               f"for scores >= {counts['box_score_thr']} ({chosen})")
    return {**metrics, **counts}, summary, results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m raydet.test", description="COCO metrics of a checkpoint.")
    add_config_arguments(parser)
    add_checkpoint_arguments(parser)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--aug-test", action="store_true", help="multi-scale + flip test-time augmentation")
    parser.add_argument("--tta-scales", default="1333x800,1666x1000",
                        help="scales for --aug-test separated by commas: LONGxSHORT sizes, or factors "
                             "of each image's size (e.g. 1.5,2,2.5)")
    parser.add_argument("--tta-flips", default=",".join(DEFAULT_TTA_FLIPS),
                        help="flip directions for --aug-test separated by commas, from "
                             f"{','.join(TTA_FLIPS)} (diagonal: both flips, a half turn; overhead imagery: "
                             "all four)")
    parser.add_argument("--out", help="write the detections here in COCO results format (a path or a URI)")
    parser.add_argument("--show-dir", help="write a picture per image here: ground truth beside the detections")
    parser.add_argument("--show-score-thr", type=float, default=0.3, help="draw detections scoring at least this")
    parser.add_argument("--pr-iou", type=float, default=0.4,
                        help="IoU at which box precision and recall are counted (default 0.4, as DeepForest)")
    parser.add_argument("--pr-score-thr", type=float,
                        help="score threshold for box precision and recall (default: the best F1 on this split; "
                             "choose it on val, then give it for the test set)")
    return parser


def parse_tta_scales(text: str) -> list[list[int] | float]:
    """``"1333x800,1666x1000"`` -> ``[[1333, 800], [1666, 1000]]``; ``"1.5,2"`` -> ``[1.5, 2.0]``."""
    try:
        scales = [[int(v) for v in scale.split("x")] if "x" in scale else float(scale) for scale in text.split(",")]
    except ValueError:
        scales = []
    if not scales or any(isinstance(s, list) and (len(s) != 2 or min(s) <= 0)
                         or isinstance(s, float) and not (0 < s < math.inf) for s in scales):
        raise ConfigError(f"--tta-scales: expected LONGxSHORT or factors separated by commas "
                          f"(1333x800,1666x1000 or 1.5,2), got {text!r}")
    return scales


def parse_tta_flips(text: str) -> list[str]:
    """``"none,horizontal,vertical"`` -> ``["none", "horizontal", "vertical"]`` (each of ``TTA_FLIPS``, once)."""
    flips = [flip.strip() for flip in text.split(",")]
    unknown = [flip for flip in flips if flip not in TTA_FLIPS]
    if unknown or len(set(flips)) != len(flips):
        raise ConfigError(f"--tta-flips: expected directions from {', '.join(TTA_FLIPS)} separated by commas, "
                          f"each once, got {text!r}{did_you_mean(unknown[0], TTA_FLIPS) if unknown else ''}")
    return flips


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        resolve_model_arguments(args)
        config = config_from_args(args)
        scales, flips = None, DEFAULT_TTA_FLIPS
        if args.aug_test:
            scales = parse_tta_scales(args.tta_scales)
            flips = parse_tta_flips(args.tta_flips)
        if not 0 < args.pr_iou <= 1:
            raise ConfigError(f"--pr-iou: expected an IoU in (0, 1], got {args.pr_iou}")
        show_dir = storage.absolute(args.show_dir) if args.show_dir else None
        metrics, summary, results = evaluate_checkpoint(
            config, args.checkpoint, args.split, scales, num_workers=args.num_workers, use_gpu=args.use_gpu,
            show_dir=show_dir, show_score_thr=args.show_score_thr, pr_iou=args.pr_iou,
            pr_score_thr=args.pr_score_thr, flips=flips)
        if args.out:
            storage.write_text(args.out, json.dumps(results) + "\n")
        print(summary)
        print(json.dumps(metrics))

    return report_user_errors(body)

