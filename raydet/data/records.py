"""Records: one row per image, what the readers produce and what flows through Ray Data.

A record is a plain dict (``Record``)::

    image_id  int
    path      str   local path or URI (s3://, gs://, file://), or the encoded image as bytes
    height    int   pixels, as annotated (0 with width 0: not known, e.g. new images to detect on)
    width     int
    boxes     float32 [N, 4]  absolute x1, y1, x2, y2 in pixels (continuous coordinates, 0..width)
    labels    int64 [N]       0-based contiguous class index (the dataset keeps classes / cat_ids)
    ignore    bool [N]        crowd / difficult: moved with the image, never a training target

``records_to_table`` / ``table_to_records`` convert a list of records to a
``pyarrow.Table`` and back: that table is what the Ray edge ships to workers
(shared zero-copy through the object store) and what decode tasks index into.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, TypedDict

import numpy as np
import pyarrow as pa

from .problems import ProblemReport


class Record(TypedDict):
    image_id: int
    path: str | bytes
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray


@dataclass
class ReadResult:
    """What a reader returns: records sorted by image id, class names, and the category id of each class."""

    records: list[Record]
    classes: list[str]
    cat_ids: list[int]


def make_record(image_id: int, path: str | bytes, height: int, width: int,
                boxes: Iterable | None = None, labels: Iterable | None = None,
                ignore: Iterable | None = None) -> Record:
    """A ``Record`` with normalised dtypes and shapes (``boxes`` ``[N,4]`` float32, ...)."""
    boxes = np.asarray(boxes if boxes is not None else [], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
    ignore = np.asarray(ignore if ignore is not None else np.zeros(len(boxes), bool), dtype=bool).reshape(-1)
    if not len(boxes) == len(labels) == len(ignore):
        raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(labels)} labels, {len(ignore)} ignore flags")
    return Record(image_id=int(image_id), path=path, height=int(height), width=int(width),
                  boxes=boxes, labels=labels, ignore=ignore)


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


_SCHEMA = pa.schema([
    ("image_id", pa.int64()),
    ("path", pa.string()),  # null when the record carries the encoded image in ``encoded``
    ("encoded", pa.binary()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("boxes", pa.list_(pa.float32())),  # flattened [N*4]
    ("labels", pa.list_(pa.int64())),
    ("ignore", pa.list_(pa.bool_())),
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
    }, schema=_SCHEMA)


def table_to_records(table: pa.Table) -> list[Record]:
    """A table made by ``records_to_table`` -> records, in row order."""
    return [record_at(table, i) for i in range(table.num_rows)]


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
    )
