"""Distributed evaluation: every rank predicts its share of a split, rank 0 scores all of it.

``raydet.data.ray_stream.iter_eval_batches`` gives each worker a disjoint share
of the split (every image exactly once overall).  Detections are gathered to
rank 0 with ``torch.distributed.all_gather_object`` and scored by pycocotools
against the split's ground truth: the annotation json itself for a
``CocoDataset`` (so object sizes use COCO's own areas), the records written as
COCO json for other datasets.  A detector that makes masks (Mask R-CNN) is scored by
its masks too (COCO ``segm`` metrics) where the ground truth has segmentations;
its masks become compressed RLE as soon as they are predicted, one image at a
time, so that no dense mask is gathered or kept.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Iterable

import numpy as np
import torch

from .. import storage
from ..data.coco_writer import detections_to_coco, records_to_coco
from ..data.collate import to_device
from ..data.datasets import CocoDataset, DetectionDataset
from ..data.image_io import load_rgb
from ..data.masks import encode_masks
from ..evaluation.box_pr import match_split
from ..evaluation.coco_metric import coco_from_dict, coco_metrics, prepare_segmentations
from ..visualization import comparison_png, ground_truth_of
from .distributed import gather_to_rank_zero

#: One image's detections: ``{"boxes": [K,4] original pixels, "scores": [K], "labels": [K]}`` arrays and, from a
#: detector that makes masks, ``"masks"``: K COCO RLE dicts ``{"size": [h, w], "counts": bytes}`` (original pixels).
Detections = dict[str, Any]


def masks_to_rles(masks: torch.Tensor) -> list[dict]:
    """``[K, H, W]`` bool masks -> K COCO RLE dicts ``{"size": [H, W], "counts": bytes}`` (compressed)."""
    height, width = masks.shape[-2:]
    return [{"size": [int(height), int(width)], "counts": counts}
            for counts in encode_masks(masks.detach().cpu().numpy())]


def to_detections(result: dict[str, torch.Tensor]) -> Detections:
    """One image's model output -> ``Detections``: tensors become arrays, ``masks`` ``[K, H, W]`` RLE."""
    return {key: masks_to_rles(value) if key == "masks" else value.detach().cpu().numpy()
            for key, value in result.items()}


def carries_masks(predictions: list[tuple[int, Detections]]) -> bool:
    """Whether ``predictions`` come from a detector that makes masks."""
    return any("masks" in detections for _, detections in predictions)


@torch.no_grad()
def predict(model: torch.nn.Module, batches: Iterable[dict], device: torch.device) -> list[tuple[int, Detections]]:
    """``(image_id, detections)`` for every image of ``batches`` (``model`` unwrapped, not DDP).

    A batch whose ``img`` is a list holds test-time views of the same images
    (``img_metas`` then a list per view): it goes through ``aug_test``.  Masks (``[K, H, W]`` from
    a mask detector) are RLE-encoded image by image (``to_detections``).
    """
    was_training = model.training
    model.eval()
    predictions = []
    for batch in batches:
        if isinstance(batch["img"], list):
            results = model.aug_test([img.to(device) for img in batch["img"]], batch["img_metas"], rescale=True)
            metas = batch["img_metas"][0]
        else:
            batch = to_device(batch, device)  # normalised here when it came as uint8 (``img_norm``)
            results = model.simple_test(batch["img"], batch["img_metas"], rescale=True)
            metas = batch["img_metas"]
        for meta, result in zip(metas, results):
            predictions.append((int(meta["image_id"]), to_detections(result)))
    model.train(was_training)
    return predictions


class DetectionCollector:
    """Evaluates a model on a val / test split across all workers; rank 0 keeps the metrics and a few pictures.

    Args:
        dataset: the split (read on the driver); only rank 0 uses it, for the ground truth.
        rank: this worker's rank.
        num_pictures: images drawn with their detections for ``picture_png``.
    """

    def __init__(self, dataset: DetectionDataset, rank: int, num_pictures: int = 4):
        self.dataset = dataset
        self.rank = rank
        self.num_pictures = num_pictures
        self.summary = ""
        self.pictured: list[tuple[dict, Detections]] = []  # (record, detections) of the latest evaluation
        self._coco_gt = None

    def _ground_truth(self):
        if self._coco_gt is None:
            if isinstance(self.dataset, CocoDataset):
                gt = json.loads(storage.read_bytes(self.dataset.ann_file))
            else:
                gt = records_to_coco(self.dataset.records, self.dataset.classes, self.dataset.cat_ids)
            self._coco_gt = coco_from_dict(gt)
        return self._coco_gt

    def evaluate(self, model: torch.nn.Module, batches: Iterable[dict], device: torch.device) -> dict[str, float]:
        """Predict this rank's share, gather, and (rank 0) return the COCO metrics; ``{}`` on other ranks."""
        predictions = gather_to_rank_zero(predict(model, batches, device))
        if self.rank != 0:
            return {}
        return self.score(predictions)

    def results(self, predictions: list[tuple[int, Detections]]) -> list[dict]:
        """``predictions`` as a COCO results list, under the annotation file's category ids."""
        return detections_to_coco([i for i, _ in predictions], [d for _, d in predictions], self.dataset.cat_ids)

    @functools.cached_property
    def _segm_problem(self) -> str | None:
        """Why the split's ground truth cannot score masks, or None (``prepare_segmentations``, run once)."""
        return prepare_segmentations(self._ground_truth())

    def score(self, predictions: list[tuple[int, Detections]], classwise: bool = False,
              results: list[dict] | None = None) -> dict[str, float]:
        """The COCO metrics of ``predictions`` (every image of the split's): ``bbox_mAP``, ... and, when the
        predictions carry masks and the ground truth has segmentations, ``segm_mAP``, ....  ``summary`` gets
        pycocotools' summary (and each category's AP and AP50 with ``classwise``), under ``bbox:`` and
        ``segm:`` headings with masks.  ``results``: ``self.results(predictions)`` when the caller has it."""
        dataset = self.dataset
        image_ids = [int(r["image_id"]) for r in dataset.records]
        results = self.results(predictions) if results is None else results
        metrics, self.summary = coco_metrics(self._ground_truth(), results, image_ids, "bbox", classwise)
        if carries_masks(predictions):
            segm_metrics, segm_summary = self._segm_metrics(results, image_ids, classwise)
            metrics.update(segm_metrics)
            self.summary = f"bbox:\n{self.summary}\n\nsegm:\n{segm_summary}"
        by_id = dict(predictions)
        self.pictured = [(r, by_id[int(r["image_id"])]) for r in dataset.records
                         if int(r["image_id"]) in by_id][: self.num_pictures]
        return metrics

    def _segm_metrics(self, results: list[dict], image_ids: list[int],
                      classwise: bool) -> tuple[dict[str, float], str]:
        """``coco_metrics`` of the masks; none, and the reason as the summary, without usable ground truth."""
        if self._segm_problem is not None:
            return {}, f"no segm metrics: {self._segm_problem}"
        return coco_metrics(self._ground_truth(), results, image_ids, "segm", classwise)

    def precision_recall(self, predictions: list[tuple[int, Detections]], iou_thr: float = 0.4,
                         score_thr: float | None = None) -> dict[str, float]:
        """Box precision, recall and F1 (``raydet.evaluation.box_pr``) of the detections scoring ``>= score_thr``
        at IoU ``iou_thr``; ``score_thr`` None: the threshold with the best F1 on this split.  Returns those
        under ``box_precision``, ``box_recall``, ``box_f1``, with ``box_score_thr`` and ``box_iou_thr``."""
        by_id = dict(predictions)
        empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32)}
        found = [by_id.get(int(r["image_id"]), empty) for r in self.dataset.records]
        matched = match_split([(r["boxes"], r["ignore"]) for r in self.dataset.records],
                              [(d["boxes"], d["scores"]) for d in found], iou_thr)
        threshold = matched.best_f1_threshold() if score_thr is None else score_thr
        return {**matched.at(threshold), "box_score_thr": round(threshold, 4), "box_iou_thr": iou_thr}

    def picture_png(self, score_threshold: float = 0.3) -> bytes:
        """The latest evaluation's first few images: ground truth beside the detections (score
        ``>= score_threshold``; masks too where there are), one PNG's bytes."""
        return comparison_png([(load_rgb(record["path"]), ground_truth_of(record), found)
                               for record, found in self.pictured], self.dataset.classes, score_threshold)
