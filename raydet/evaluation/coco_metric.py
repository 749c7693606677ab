"""COCO bbox and segm metrics with pycocotools, under mmdetection's metric names."""
from __future__ import annotations

import builtins
import contextlib
import functools
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.masks import json_rle, segmentation_to_rle

#: The kinds of COCO evaluation: boxes, and instance masks (segmentations).
IOU_TYPES = ("bbox", "segm")


def metric_names(iou_type: str) -> tuple[str, ...]:
    """The six metrics of ``iou_type`` in pycocotools' summary order: ``("bbox_mAP", "bbox_mAP_50", ...)``."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type {iou_type!r}: expected one of {', '.join(IOU_TYPES)}")
    return tuple(f"{iou_type}_{name}" for name in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l"))


METRIC_NAMES = metric_names("bbox")
SEGM_METRIC_NAMES = metric_names("segm")

#: The result key each evaluation leaves out: a bbox evaluation scores boxes alone, and a segm evaluation
#: takes each instance's area from its mask (pycocotools would take it from a box it is given, as
#: detectron2 and mmdetection note; COCO's segm results format has no box).
_LEFT_OUT = {"bbox": "segmentation", "segm": "bbox"}


@contextlib.contextmanager
def _printed_into(buffer: io.StringIO):
    """Send pycocotools' ``print`` output to ``buffer`` (also where ``print`` is patched, as in Ray Train workers)."""
    current = builtins.print
    builtins.print = functools.partial(current, file=buffer)
    try:
        yield buffer
    finally:
        builtins.print = current


def coco_from_dict(gt: dict) -> COCO:
    """A pycocotools ``COCO`` index over an in-memory COCO json dict."""
    coco = COCO()
    coco.dataset = gt
    with _printed_into(io.StringIO()):
        coco.createIndex()
    return coco


def coco_metrics(coco_gt: COCO, results: list[dict], image_ids: list[int], iou_type: str = "bbox",
                 classwise: bool = False) -> tuple[dict[str, float], str]:
    """Evaluate COCO-format detections on ``image_ids``, by their boxes (``"bbox"``) or masks (``"segm"``).

    Args:
        coco_gt: ground truth (crowd objects are handled by COCOeval as "ignore"); for ``"segm"`` every
            annotation needs a ``segmentation`` (``prepare_segmentations`` says whether it has).
        results: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``, for ``"segm"`` each
            with ``"segmentation"`` (a COCO RLE ``{"size": [h, w], "counts": str}``); left as they are.
        image_ids: the images that were evaluated (an image with no detections
            still counts: its objects are misses).
        iou_type: ``"bbox"`` or ``"segm"``.
        classwise: append a table of each category's AP and AP50 to the summary
            (as mmdetection's ``classwise``).

    Returns:
        ``({"bbox_mAP": ..., "bbox_mAP_50": ..., ...}, summary_text)`` (``segm_mAP``, ... for ``"segm"``);
        APs in [0, 1], -1 where COCO has no ground truth of that size, like pycocotools.
    """
    names = metric_names(iou_type)
    if not results:
        return {name: 0.0 for name in names}, "no detections: every AP is 0"
    if iou_type == "segm" and (maskless := next((r for r in results if "segmentation" not in r), None)):
        raise ValueError(f"segm metrics need a mask for every detection: the one at {maskless.get('bbox')} "
                         f"in image {maskless.get('image_id')} has no segmentation")
    left_out = _LEFT_OUT[iou_type]
    with _printed_into(io.StringIO()) as printed:  # loadRes adds keys to each dict: it gets copies
        coco_dt = coco_gt.loadRes([{k: v for k, v in result.items() if k != left_out} for result in results])
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = sorted(set(image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats[: len(names)], dtype=float)
    summary = "\n".join(line for line in printed.getvalue().splitlines() if line.startswith(" Average"))
    if classwise:
        summary += "\n\n" + classwise_table(evaluator)
    return {name: round(float(v), 4) for name, v in zip(names, stats)}, summary


def prepare_segmentations(coco_gt: COCO) -> str | None:
    """Make ``coco_gt`` the ground truth of a segm evaluation: each annotation's segmentation becomes the
    compressed RLE raydet reads it as (``segmentation_to_rle``: a polygon part of fewer than 3 points left out,
    which pycocotools would take for a box or refuse).  Returns why it cannot be (an annotation without a
    segmentation, or with a malformed one), or None when it can."""
    annotations = coco_gt.dataset.get("annotations", [])
    missing = [ann for ann in annotations if not ann.get("segmentation")]
    if missing and len(missing) == len(annotations):
        return "the ground truth has no segmentation"
    if missing:
        return (f"{len(missing)} of {len(annotations)} ground-truth objects have no segmentation "
                f"(annotation {missing[0].get('id')} of image {missing[0].get('image_id')}, first)")
    for ann in annotations:
        image = coco_gt.imgs[ann["image_id"]]
        size = [int(image["height"]), int(image["width"])]
        try:
            counts = segmentation_to_rle(ann["segmentation"], *size)
        except ValueError as error:
            return f"annotation {ann.get('id')} of image {ann['image_id']}: {error}"
        ann["segmentation"] = json_rle(counts, *size)  # coco_gt.anns holds the same dict
    return None


def classwise_table(evaluator: COCOeval) -> str:
    """Each category's AP (IoU 0.50:0.95) and AP50, all areas, 100 detections, from an accumulated ``COCOeval``
    (``nan`` for a category without ground truth)."""
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall points, categories, areas, max detections]
    names = [evaluator.cocoGt.cats[cat_id]["name"] for cat_id in evaluator.params.catIds]
    width = max([len("category"), *map(len, names)])
    lines = [f"{'category':<{width}}  {'AP':>6}  {'AP50':>6}"]
    for k, name in enumerate(names):
        values = []
        for curve in (precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]):
            valid = curve[curve > -1]
            values.append(float(valid.mean()) if valid.size else float("nan"))
        lines.append(f"{name:<{width}}  {values[0]:6.3f}  {values[1]:6.3f}")
    return "\n".join(lines)
