"""Records: one row per image, what the readers produce and what flows through Ray Data.

A record is a plain dict (``Record``)::

    image_id  int
    path      str   local path or URI (s3://, gs://, file://), or the encoded image as bytes
    height    int   pixels, as annotated (0 with width 0: not known, e.g. new images to detect on)
    width     int
    boxes     float32 [N, 4]  absolute x1, y1, x2, y2 in pixels (continuous coordinates, 0..width)
    labels    int64 [N]       0-based contiguous class index (the dataset keeps classes / cat_ids)
    ignore    bool [N]        crowd / difficult: moved with the image, never a training target
    masks     list of N bytes, or None: each box's instance mask as pycocotools' compressed RLE
              ``counts`` at (height, width) (``raydet.data.masks``); None when read without masks

``records_to_table`` converts a list of records to a ``pyarrow.Table`` and
``record_at`` reads one back: that table is what the Ray edge ships to workers
(shared zero-copy through the object store) and what decode tasks index into.
Its ``masks`` column is ``list<binary>``, null for a record without masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, TypedDict

import numpy as np
import pyarrow as pa

from .masks import rle_areas, rle_boxes, segmentation_to_rle
from .problems import ProblemReport


class Record(TypedDict):
    image_id: int
    path: str | bytes
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    masks: list[bytes] | None


@dataclass
class ReadResult:
    """What a reader returns: records sorted by image id, class names, and the category id of each class."""

    records: list[Record]
    classes: list[str]
    cat_ids: list[int]


def make_record(image_id: int, path: str | bytes, height: int, width: int,
                boxes: Iterable | None = None, labels: Iterable | None = None,
                ignore: Iterable | None = None, masks: Iterable[bytes] | None = None) -> Record:
    """A ``Record`` with normalised dtypes and shapes (``boxes`` ``[N,4]`` float32, ...).

    ``masks`` (one compressed RLE ``counts`` per box, at ``height`` x ``width``) stays ``None`` when not given.
    """
    boxes = np.asarray(boxes if boxes is not None else [], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
    ignore = np.asarray(ignore if ignore is not None else np.zeros(len(boxes), bool), dtype=bool).reshape(-1)
    if not len(boxes) == len(labels) == len(ignore):
        raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(labels)} labels, {len(ignore)} ignore flags")
    if masks is not None:
        masks = _checked_masks(image_id, masks, len(boxes), int(height), int(width))
    return Record(image_id=int(image_id), path=path, height=int(height), width=int(width),
                  boxes=boxes, labels=labels, ignore=ignore, masks=masks)


def _checked_masks(image_id: int, masks: Iterable[bytes], num_boxes: int, height: int, width: int) -> list[bytes]:
    """``masks`` as a list of ``bytes``, one per box, of an image whose size is known."""
    masks = list(masks)
    if len(masks) != num_boxes:
        raise ValueError(f"image {image_id}: {len(masks)} masks for {num_boxes} boxes (give one per box)")
    if masks and (height <= 0 or width <= 0):
        raise ValueError(f"image {image_id}: masks need the image's height and width, got {width}x{height}")
    if not all(isinstance(counts, bytes) for counts in masks):
        raise TypeError(f"image {image_id}: masks must be compressed RLE counts (bytes), "
                        "e.g. from raydet.data.masks.segmentation_to_rle")
    return masks


def check_box(box: list, height: int, width: int, where: str, report: ProblemReport) -> list[float] | None:
    """Validate one ``[x1, y1, x2, y2]`` box against its image.

    Returns the box (clipped to the image when it is partly outside) or ``None``
    when it is invalid (non-numeric, x2 <= x1, y2 <= y1) or entirely outside the
    image; each case is reported to ``report``.
    """
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        report.add("invalid_box", where, f"box {box!r} is not four numbers")
        return None
    if not all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        report.add("invalid_box", where, f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has x2 <= x1 or y2 <= y1")
        return None
    cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    if cx2 <= cx1 or cy2 <= cy1:
        report.add("box_outside_image", where,
                   f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is outside the {width}x{height} image")
        return None
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        report.add("box_clipped", where, f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] clipped to the {width}x{height} image")
    return [cx1, cy1, cx2, cy2]


def check_mask(segmentation: object, box: list[float], height: int, width: int, where: str,
               report: ProblemReport) -> bytes | None:
    """An annotation's COCO ``segmentation`` -> its compressed RLE ``counts`` at ``height`` x ``width``.

    Returns ``None`` when the segmentation is missing or malformed (``invalid_mask``), covers no pixel
    (``empty_mask``), or does not overlap ``box`` (``[x1, y1, x2, y2]``, the annotation's checked
    bbox: ``mask_outside_box``); each case is reported to ``report``.
    """
    if segmentation is None:
        report.add("invalid_mask", where, "the annotation has no 'segmentation' (polygons or RLE)")
        return None
    try:
        counts = segmentation_to_rle(segmentation, height, width)
    except ValueError as err:
        report.add("invalid_mask", where, f"segmentation: {err}")
        return None
    if rle_areas([counts], height, width)[0] == 0:
        report.add("empty_mask", where, f"the segmentation covers no pixel of the {width}x{height} image")
        return None
    mx1, my1, mx2, my2 = rle_boxes([counts], height, width)[0].tolist()
    x1, y1, x2, y2 = box
    if min(mx2, x2) <= max(mx1, x1) or min(my2, y2) <= max(my1, y1):
        report.add("mask_outside_box", where, f"the segmentation's extent [{mx1:g}, {my1:g}, {mx2:g}, {my2:g}] "
                                              f"does not overlap the bbox [{x1:g}, {y1:g}, {x2:g}, {y2:g}]")
        return None
    return counts


_SCHEMA = pa.schema([
    ("image_id", pa.int64()),
    ("path", pa.string()),  # null when the record carries the encoded image in ``encoded``
    ("encoded", pa.binary()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("boxes", pa.list_(pa.float32())),  # flattened [N*4]
    ("labels", pa.list_(pa.int64())),
    ("ignore", pa.list_(pa.bool_())),
    ("masks", pa.list_(pa.binary())),  # null for a record read without masks
])


def records_to_table(records: list[Record]) -> pa.Table:
    """Records -> a ``pyarrow.Table`` (one row per image, in order)."""
    def list_array(values: list[np.ndarray], value_type: pa.DataType) -> pa.Array:
        lengths = np.fromiter((len(v) for v in values), dtype=np.int32, count=len(values))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        flat = np.concatenate(values) if values else np.zeros(0)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))

    paths = [r["path"] for r in records]
    return pa.table({
        "image_id": pa.array([r["image_id"] for r in records], pa.int64()),
        "path": pa.array([p if isinstance(p, str) else None for p in paths], pa.string()),
        "encoded": pa.array([p if isinstance(p, bytes) else None for p in paths], pa.binary()),
        "height": pa.array([r["height"] for r in records], pa.int32()),
        "width": pa.array([r["width"] for r in records], pa.int32()),
        "boxes": list_array([r["boxes"].reshape(-1) for r in records], pa.float32()),
        "labels": list_array([r["labels"] for r in records], pa.int64()),
        "ignore": list_array([r["ignore"] for r in records], pa.bool_()),
        "masks": pa.array([r["masks"] for r in records], pa.list_(pa.binary())),
    }, schema=_SCHEMA)


def table_has_masks(table: pa.Table) -> bool:
    """Whether a records table holds masks (records read with ``with_mask``: a non-null ``masks`` row)."""
    return table.column("masks").null_count < table.num_rows


def record_at(table: pa.Table, index: int) -> Record:
    """Row ``index`` of a records table as a ``Record``."""
    def values(name: str, dtype: type) -> np.ndarray:
        return table.column(name)[index].values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)

    path = table.column("path")[index].as_py()
    return make_record(
        image_id=table.column("image_id")[index].as_py(),
        path=path if path is not None else table.column("encoded")[index].as_py(),
        height=table.column("height")[index].as_py(),
        width=table.column("width")[index].as_py(),
        boxes=values("boxes", np.float32),
        labels=values("labels", np.int64),
        ignore=values("ignore", bool),
        masks=table.column("masks")[index].as_py(),
    )
