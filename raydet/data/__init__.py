"""Data: records from COCO / VOC annotations, box-aware transforms, collate, and the Ray Data edge.

Importing the package imports nothing else: a name below is imported on first
use (``from raydet.data import CocoDataset``), so a process that needs one light
module (a stream runner: ``raydet.data.stream_runner``) does not load torch.
The registries import the modules that register datasets and transforms
(``raydet.data.datasets``, ``raydet.data.transforms``) when first used.
Everything here works without Ray except ``raydet.data.shared_records``
(driver side) and ``raydet.data.ray_stream`` (worker side), the Ray Data /
Ray Train edge, imported only by the processes that use them.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module (in this package) that defines it.  (``collate``, the function, is not one: a name
#: that is also a submodule's would become the module once that module is imported.)
_EXPORTS = {
    "detections_to_coco": "coco_writer", "records_to_coco": "coco_writer", "write_json": "coco_writer",
    "Batch": "collate", "pack_batch": "collate", "unpack_batch": "collate",
    "CocoDataset": "datasets", "DetectionDataset": "datasets", "VOCDataset": "datasets",
    "DataError": "problems", "ProblemReport": "problems",
    "Record": "records", "make_record": "records", "records_to_table": "records",
    "Sample": "sample", "load_sample": "sample",
    "Compose": "transforms", "Transform": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value
