"""Records and detections -> COCO json (ground truth and results), labels mapped back to category ids."""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

import numpy as np

from .. import storage
from .records import Record


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _file_name(path: str | bytes, img_prefix: str | None, image_id: int) -> str:
    if isinstance(path, bytes):
        return f"{image_id}.jpg"
    if img_prefix and not storage.is_uri(path) and not storage.is_uri(img_prefix):
        return os.path.relpath(path, img_prefix)
    if img_prefix and path.startswith(img_prefix.rstrip("/") + "/"):
        return path[len(img_prefix.rstrip("/")) + 1:]
    return os.path.basename(path)


def records_to_coco(records: Iterable[Record], classes: Sequence[str], cat_ids: Sequence[int],
                    img_prefix: str | None = None) -> dict[str, Any]:
    """Records -> a COCO ground-truth dict (``images``, ``annotations``, ``categories``).

    ``file_name`` is the path relative to ``img_prefix`` (the base name without
    one; ``<image_id>.jpg`` for a record that carries its encoded image); ``ignore``
    boxes are written with ``iscrowd: 1`` (COCO evaluation treats
    them as regions where detections are neither rewarded nor penalised);
    ``area`` is the box area.
    """
    images, annotations = [], []
    for record in records:
        images.append({"id": int(record["image_id"]),
                       "file_name": _file_name(record["path"], img_prefix, record["image_id"]),
                       "height": int(record["height"]), "width": int(record["width"])})
        for box, label, ignore in zip(record["boxes"], record["labels"], record["ignore"]):
            x, y, w, h = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": int(record["image_id"]),
                                "category_id": int(cat_ids[int(label)]), "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": int(bool(ignore))})
    categories = [{"id": int(cat_id), "name": name} for cat_id, name in zip(cat_ids, classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections_to_coco(image_ids: Sequence[int], detections: Sequence[dict], cat_ids: Sequence[int]) -> list[dict]:
    """Per-image detections -> a COCO results list (what ``COCO.loadRes`` takes).

    Args:
        image_ids: the image id of each detection dict.
        detections: per image ``{"boxes": [K, 4] x1y1x2y2 in original pixels,
            "scores": [K], "labels": [K] 0-based}`` (tensors or arrays).
        cat_ids: category id of each label (the dataset's ``cat_ids``).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.
    """
    if len(image_ids) != len(detections):
        raise ValueError(f"{len(image_ids)} image ids for {len(detections)} detection sets")
    results = []
    for image_id, detection in zip(image_ids, detections):
        boxes = np.asarray(_numpy(detection["boxes"]), dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(_numpy(detection["scores"]), dtype=np.float64).reshape(-1)
        labels = np.asarray(_numpy(detection["labels"]), dtype=np.int64).reshape(-1)
        for box, score, label in zip(boxes, scores, labels):
            results.append({"image_id": int(image_id), "category_id": int(cat_ids[label]),
                            "bbox": [round(v, 3) for v in _xywh(box)], "score": round(float(score), 5)})
    return results


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as compact json (a path or a URI), creating the folder."""
    storage.write_text(path, json.dumps(obj, separators=(",", ":")))
