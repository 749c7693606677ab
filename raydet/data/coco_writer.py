"""Records and detections -> COCO json (ground truth and results), labels mapped back to category ids."""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

import numpy as np

from .. import storage
from .masks import json_rle, rle_areas
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
    ``area`` is the box area, or for a record with masks the mask's, whose RLE is
    then the annotation's ``segmentation`` (``{"size": [h, w], "counts": str}``).
    """
    images, annotations = [], []
    for record in records:
        images.append({"id": int(record["image_id"]),
                       "file_name": _file_name(record["path"], img_prefix, record["image_id"]),
                       "height": int(record["height"]), "width": int(record["width"])})
        segmentations = _segmentations(record)
        for box, label, ignore, segmentation in zip(record["boxes"], record["labels"], record["ignore"],
                                                    segmentations):
            x, y, w, h = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": int(record["image_id"]),
                                "category_id": int(cat_ids[int(label)]), "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": int(bool(ignore))})
            if segmentation is not None:
                annotations[-1].update(segmentation)
    categories = [{"id": int(cat_id), "name": name} for cat_id, name in zip(cat_ids, classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _segmentations(record: Record) -> list[dict | None]:
    """Per box ``{"segmentation": RLE dict, "area": mask pixels}`` of a record with masks, else ``None``s."""
    if record.get("masks") is None:
        return [None] * len(record["boxes"])
    height, width = int(record["height"]), int(record["width"])
    areas = rle_areas(record["masks"], height, width)
    return [{"segmentation": json_rle(counts, height, width), "area": float(area)}
            for counts, area in zip(record["masks"], areas)]


def detections_to_coco(image_ids: Sequence[int], detections: Sequence[dict], cat_ids: Sequence[int]) -> list[dict]:
    """Per-image detections -> a COCO results list (what ``COCO.loadRes`` takes).

    Args:
        image_ids: the image id of each detection dict.
        detections: per image ``{"boxes": [K, 4] x1y1x2y2 in original pixels,
            "scores": [K], "labels": [K] 0-based}`` (tensors or arrays) and, from a detector that
            makes masks, ``"masks"``: K COCO RLE dicts ``{"size": [h, w], "counts": bytes}``.
        cat_ids: category id of each label (the dataset's ``cat_ids``).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``, each with
        ``"segmentation": {"size": [h, w], "counts": str}`` (JSON-ready RLE) where there are masks.
    """
    if len(image_ids) != len(detections):
        raise ValueError(f"{len(image_ids)} image ids for {len(detections)} detection sets")
    results = []
    for image_id, detection in zip(image_ids, detections):
        boxes = np.asarray(_numpy(detection["boxes"]), dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(_numpy(detection["scores"]), dtype=np.float64).reshape(-1)
        labels = np.asarray(_numpy(detection["labels"]), dtype=np.int64).reshape(-1)
        masks = detection.get("masks")
        if masks is not None and len(masks) != len(boxes):
            raise ValueError(f"image {image_id}: {len(masks)} masks for {len(boxes)} boxes")
        for k, (box, score, label) in enumerate(zip(boxes, scores, labels)):
            results.append({"image_id": int(image_id), "category_id": int(cat_ids[label]),
                            "bbox": [round(v, 3) for v in _xywh(box)], "score": round(float(score), 5)})
            if masks is not None:
                results[-1]["segmentation"] = json_rle(masks[k]["counts"], *masks[k]["size"])
    return results


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as compact json (a path or a URI), creating the folder."""
    storage.write_text(path, json.dumps(obj, separators=(",", ":")))
