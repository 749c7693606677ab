"""Datasets: an annotation file read into records, plus the pipeline for one split.

``type: CocoDataset`` / ``type: VOCDataset`` in ``data.train`` / ``data.val`` /
``data.test``.  Building one reads and checks the annotations on the spot (the
driver does this once); decoding and transforms happen later, per sample
(``raydet.data.decode``), in whatever process runs them.
"""
from __future__ import annotations

import pyarrow as pa

from ..registry import DATASETS
from .coco import read_coco
from .problems import OnBadRecord, ProblemReport
from .records import ReadResult, Record, records_to_table
from .transforms import Compose, Transform
from .voc import read_voc


@DATASETS.declare_base
class DetectionDataset:
    """Records of one split with their classes, problems and pipeline.

    Attributes:
        records: one ``Record`` per usable image, sorted by image id.
        classes: class names; label ``i`` is ``classes[i]``.
        cat_ids: category id of each label (for COCO json).
        pipeline: the transforms a decoded sample goes through.
        problems: what was wrong with the annotations (and was skipped or repaired).
        num_without_boxes_filtered: images dropped by ``filter_empty_gt``.
        with_mask: whether the records carry instance masks (each record's ``masks``).
    """

    def __init__(self, result: ReadResult, pipeline: list[Transform], problems: ProblemReport,
                 ann_file: str, img_prefix: str, filter_empty_gt: bool, with_mask: bool = False):
        records = result.records
        self.with_mask = with_mask
        self.num_without_boxes_filtered = 0
        if filter_empty_gt:
            kept = [r for r in records if (~r["ignore"]).any()]
            self.num_without_boxes_filtered = len(records) - len(kept)
            records = kept
        self.records: list[Record] = records
        self.classes = result.classes
        self.cat_ids = result.cat_ids
        self.pipeline = Compose(pipeline)
        self.problems = problems
        self.ann_file = ann_file
        self.img_prefix = img_prefix

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ann_file!r}, {len(self)} images, {len(self.classes)} classes)"

    def table(self) -> pa.Table:
        """The records as a ``pyarrow.Table`` (what the Ray edge ships)."""
        return records_to_table(self.records)

    def summary(self) -> str:
        """``"300 images (12 without boxes), 1,234 boxes (5 ignored), 3 classes; no problems"``."""
        num_boxes = sum(len(r["boxes"]) for r in self.records)
        num_ignored = sum(int(r["ignore"].sum()) for r in self.records)
        num_without_boxes = sum(1 for r in self.records if not (~r["ignore"]).any())
        filtered = (f", {self.num_without_boxes_filtered} without boxes left out"
                    if self.num_without_boxes_filtered else "")
        masks = " with masks" if self.with_mask else ""
        return (f"{len(self):,} images ({num_without_boxes} without boxes{filtered}), {num_boxes:,} boxes{masks} "
                f"({num_ignored} ignored), "
                f"{len(self.classes)} classes; {self.problems.short()}")


@DATASETS.register()
class CocoDataset(DetectionDataset):
    """A COCO detection json (with ``with_mask``: instance segmentation).

    Args:
        ann_file: the json (absolute, or resolved against ``data.data_root``).
        img_prefix: folder or URI that the json's ``file_name`` values are relative to.
        pipeline: transforms after decoding.
        on_bad_record: ``skip`` bad entries (reported) or stop with an ``error``.
        filter_empty_gt: leave out images without any (non-ignored) box (mmdetection does for training).
        check_files: check that local image files exist and are not empty.
        with_mask: read instance masks (each annotation's ``segmentation``: polygons, or RLE for
            crowd regions) for Mask R-CNN; an annotation without a usable one is dropped and reported.
    """

    def __init__(self, ann_file: str, img_prefix: str, pipeline: list[Transform] = (),
                 on_bad_record: OnBadRecord = "skip", filter_empty_gt: bool = False, check_files: bool = True,
                 with_mask: bool = False):
        problems = ProblemReport(on_bad_record)
        result = read_coco(ann_file, img_prefix, problems, check_files, with_mask)
        super().__init__(result, list(pipeline), problems, ann_file, img_prefix, filter_empty_gt, with_mask)


@DATASETS.register()
class VOCDataset(DetectionDataset):
    """Pascal VOC xml annotations (an image-set list, a folder of xml files, or one xml file).

    Args:
        ann_file: ``ImageSets/Main/*.txt``, a folder of ``.xml`` or one ``.xml``.
        img_prefix: the devkit year folder (with a list) or the image folder.
        pipeline: transforms after decoding.
        classes: class names in label order (default: the sorted names found).
        on_bad_record: ``skip`` bad entries (reported) or stop with an ``error``.
        filter_empty_gt: leave out images without any (non-difficult) box.
        check_files: check that local image files exist and are not empty.
    """

    def __init__(self, ann_file: str, img_prefix: str, pipeline: list[Transform] = (), classes: list[str] | None = None,
                 on_bad_record: OnBadRecord = "skip", filter_empty_gt: bool = False, check_files: bool = True):
        problems = ProblemReport(on_bad_record)
        result = read_voc(ann_file, img_prefix, problems, classes, check_files)
        super().__init__(result, list(pipeline), problems, ann_file, img_prefix, filter_empty_gt)
