"""COCO bbox metrics with pycocotools, under mmdetection's metric names."""
from __future__ import annotations

import builtins
import contextlib
import functools
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRIC_NAMES = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")


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


def coco_bbox_metrics(coco_gt: COCO, results: list[dict], image_ids: list[int],
                      classwise: bool = False) -> tuple[dict[str, float], str]:
    """Evaluate COCO-format detections on ``image_ids``.

    Args:
        coco_gt: ground truth (crowd boxes are handled by COCOeval as "ignore").
        results: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.
        image_ids: the images that were evaluated (an image with no detections
            still counts: its objects are misses).
        classwise: append a table of each category's AP and AP50 to the summary
            (as mmdetection's ``classwise``).

    Returns:
        ``({"bbox_mAP": ..., "bbox_mAP_50": ..., ...}, summary_text)``; APs in [0, 1],
        -1 where COCO has no ground truth of that size, like pycocotools.
    """
    if not results:
        return {name: 0.0 for name in METRIC_NAMES}, "no detections: every AP is 0"
    with _printed_into(io.StringIO()) as printed:
        coco_dt = coco_gt.loadRes([dict(result) for result in results])  # loadRes adds keys to each dict
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = sorted(set(image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats[: len(METRIC_NAMES)], dtype=float)
    summary = "\n".join(line for line in printed.getvalue().splitlines() if line.startswith(" Average"))
    if classwise:
        summary += "\n\n" + classwise_table(evaluator)
    return {name: round(float(v), 4) for name, v in zip(METRIC_NAMES, stats)}, summary


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
