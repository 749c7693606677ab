"""Data: records from COCO / VOC annotations, box-aware transforms, collate, and the Ray Data edge.

Importing this package registers ``CocoDataset`` / ``VOCDataset`` in
``DATASETS`` and the transforms in ``TRANSFORMS``.  Everything here works
without Ray except ``raydet.data.shared_records`` (driver side) and
``raydet.data.ray_stream`` (worker side), the Ray Data / Ray Train edge,
imported only by the processes that use them.
"""
from .coco_writer import detections_to_coco, records_to_coco, write_json
from .collate import Batch, collate, pack_batch, unpack_batch
from .datasets import CocoDataset, DetectionDataset, VOCDataset
from .problems import DataError, ProblemReport
from .records import Record, make_record, records_to_table
from .sample import Sample, load_sample
from .transforms import Compose, Transform

__all__ = [
    "Batch", "CocoDataset", "Compose", "DataError", "DetectionDataset", "ProblemReport", "Record", "Sample",
    "Transform", "VOCDataset", "collate", "detections_to_coco", "load_sample", "make_record", "pack_batch",
    "records_to_coco", "records_to_table", "unpack_batch", "write_json",
]
