"""Instance masks: COCO segmentations <-> compressed RLE <-> dense ``[N, H, W]`` uint8, with pycocotools.

Records keep each instance's mask as pycocotools' compressed RLE ``counts``
(``bytes``, a few hundred for a typical object) at the record's ``(height, width)``;
masks become dense bitmaps only inside a decode task, one image at a time.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def segmentation_to_rle(segmentation: object, height: int, width: int) -> bytes:
    """A COCO ``segmentation`` -> compressed RLE ``counts`` of an ``height x width`` mask.

    Accepts polygons (``[[x1, y1, x2, y2, ...], ...]``, several parts merged; a part of fewer than
    3 points encloses nothing and is left out, as detectron2 does),
    uncompressed RLE (``{"size": [h, w], "counts": [ints]}``, COCO's crowd regions) and
    compressed RLE (``{"size": [h, w], "counts": "..."}``).

    Raises:
        ValueError: malformed (no polygon part of 3 points or more, an odd number of
            coordinates, non-finite ones or ones far outside the image; an RLE of another
            size or with bad counts),
            with a message that says which.
    """
    if isinstance(segmentation, list):
        if not segmentation:
            raise ValueError("the polygon list is empty")
        for part in segmentation:
            _check_polygon(part, height, width)
        parts = [[float(v) for v in part] for part in segmentation if len(part) >= 6]
        if not parts:
            raise ValueError(f"polygon {_short(segmentation)} needs at least 3 x, y points")
        return mask_utils.merge(mask_utils.frPyObjects(parts, height, width))["counts"]
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = segmentation["size"]
        if not isinstance(size, list) or size != [height, width]:
            raise ValueError(f"RLE size {size!r} is not the image's [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
                raise ValueError(f"uncompressed RLE counts must be >= 0 and sum to {height * width}")
            return mask_utils.frPyObjects(segmentation, height, width)["counts"]
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        if not isinstance(counts, bytes):
            raise ValueError(f"RLE counts must be a string or a list of ints, got {type(counts).__name__}")
        runs = compressed_runs(counts)
        if runs is None or min(runs, default=0) < 0 or sum(runs) != height * width:
            raise ValueError(f"RLE counts are not a valid compressed RLE of {height * width} pixels")
        return counts
    raise ValueError(f"segmentation {_short(segmentation)} is neither polygons nor RLE")


def _check_polygon(part: object, height: int, width: int) -> None:
    """``ValueError`` unless ``part`` is ``[x1, y1, x2, y2, ...]``: finite numbers, in pairs, within one image size
    of the ``height x width`` image (pycocotools rasterises the whole outline: a far-off point costs memory)."""
    if not isinstance(part, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in part):
        raise ValueError(f"polygon {_short(part)} is not a list of numbers")
    if len(part) % 2:
        raise ValueError(f"polygon {_short(part)} has an odd number of coordinates ({len(part)})")
    if not all(math.isfinite(v) for v in part):
        raise ValueError(f"polygon {_short(part)} has a non-finite coordinate")
    xs, ys = part[0::2], part[1::2]
    if xs and (min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height):
        raise ValueError(f"polygon {_short(part)} reaches far outside the {width}x{height} image")


def compressed_runs(counts: bytes) -> list[int] | None:
    """The run lengths a compressed RLE string encodes (pycocotools' ``rleFrString`` read in Python), or
    ``None`` when it ends inside a number.  pycocotools decodes without checking the runs against the
    mask's size, so a string is checked here before it is ever decoded."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                return None
            char = counts[position] - 48
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            position += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def decode_masks(counts: Sequence[bytes], height: int, width: int) -> np.ndarray:
    """Compressed RLE counts -> ``[N, height, width]`` uint8 (0 / 1); ``N`` may be 0."""
    if not len(counts):
        return np.zeros((0, height, width), np.uint8)
    rles = [{"size": [height, width], "counts": c} for c in counts]
    return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))


def json_rle(counts: bytes | str, height: int, width: int) -> dict:
    """One mask in COCO's JSON form (annotation files, results files): ``{"size": [h, w], "counts": str}``."""
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    return {"size": [int(height), int(width)], "counts": text}


def encode_masks(masks: np.ndarray) -> list[bytes]:
    """``[N, H, W]`` bool / uint8 masks -> N compressed RLE counts."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
    if not len(masks):
        return []
    return [rle["counts"] for rle in mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))]


def rle_areas(counts: Sequence[bytes], height: int, width: int) -> np.ndarray:
    """``[N]`` float64 pixel count of each compressed RLE mask."""
    if not len(counts):
        return np.zeros(0, np.float64)
    return mask_utils.area([{"size": [height, width], "counts": c} for c in counts]).astype(np.float64)


def rle_boxes(counts: Sequence[bytes], height: int, width: int) -> np.ndarray:
    """``[N, 4]`` float32 x1, y1, x2, y2: the tight box of each compressed RLE mask (zeros for an empty one)."""
    if not len(counts):
        return np.zeros((0, 4), np.float32)
    xywh = mask_utils.toBbox([{"size": [height, width], "counts": c} for c in counts]).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
