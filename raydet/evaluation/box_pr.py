"""Box precision and recall at one IoU and one score threshold: how tree-crown detection is usually
reported (DeepForest: IoU 0.4), next to COCO's AP.

Matching is class-agnostic and greedy in score order, as in COCO: each detection, from the highest
score down, takes the unmatched ground-truth box it overlaps most if that IoU reaches ``iou_thr``
(a true positive); otherwise, if it overlaps an ignored (crowd) box that much, it is not counted;
otherwise it is a false positive.  A detection's outcome never depends on lower-scoring ones, so one
matching gives precision and recall at every score threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou


@dataclass
class MatchedDetections:
    """Every detection of a split, matched once.

    Attributes:
        scores: ``[D]`` detection scores.
        true_positive: ``[D]`` bool, matched a ground-truth box.
        counted: ``[D]`` bool, a true or false positive (false: it only overlapped an ignored box).
        num_ground_truth: the split's ground-truth boxes that are not ignored.
    """

    scores: np.ndarray
    true_positive: np.ndarray
    counted: np.ndarray
    num_ground_truth: int

    def at(self, score_thr: float) -> dict[str, float]:
        """``box_precision``, ``box_recall``, ``box_f1`` of the detections scoring ``>= score_thr``."""
        kept = self.counted & (self.scores >= score_thr)
        true_positives = int((kept & self.true_positive).sum())
        precision = true_positives / max(int(kept.sum()), 1)
        recall = true_positives / max(self.num_ground_truth, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        return {"box_precision": round(precision, 4), "box_recall": round(recall, 4), "box_f1": round(f1, 4)}

    def best_f1_threshold(self) -> float:
        """The score threshold (one of the detections' scores) with the highest F1; the highest such one on ties.

        One pass over the detections sorted by score (cumulative true positives), so a split of
        millions of detections takes well under a second.
        """
        scores = self.scores[self.counted]
        if scores.size == 0:
            return 1.0
        order = np.argsort(-scores, kind="stable")
        ranked = scores[order]
        true_positives = np.cumsum(self.true_positive[self.counted][order])
        precision = true_positives / np.arange(1, len(ranked) + 1)
        recall = true_positives / max(self.num_ground_truth, 1)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # a threshold keeps all of its ties
        return float(ranked[ends[int(np.argmax(f1[ends]))]])


def match_image(gt_boxes: np.ndarray, gt_ignore: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections ``boxes [D, 4]`` (x1y1x2y2), ``scores [D]`` against ``gt_boxes [G, 4]`` with
    ``gt_ignore [G]``: ``(true_positive [D], counted [D])`` bool arrays in the detections' order."""
    true_positive = np.zeros(len(boxes), bool)
    counted = np.ones(len(boxes), bool)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return true_positive, counted
    ious = box_iou(torch.as_tensor(boxes, dtype=torch.float64), torch.as_tensor(gt_boxes, dtype=torch.float64)).numpy()
    ignore = np.asarray(gt_ignore, bool)
    taken = np.zeros(len(gt_boxes), bool)
    for detection in np.argsort(-np.asarray(scores), kind="stable"):
        free = np.where(~ignore & ~taken, ious[detection], -1.0)
        best = int(free.argmax())
        if free[best] >= iou_thr:
            true_positive[detection] = taken[best] = True
        elif ignore.any() and ious[detection][ignore].max() >= iou_thr:
            counted[detection] = False
    return true_positive, counted


def match_split(ground_truth: list[tuple[np.ndarray, np.ndarray]], detections: list[tuple[np.ndarray, np.ndarray]],
                iou_thr: float = 0.4) -> MatchedDetections:
    """Match every image: ``ground_truth[i] = (boxes [G, 4], ignore [G])`` and ``detections[i] = (boxes [D, 4],
    scores [D])`` of the same image ``i`` (an image without detections: empty arrays)."""
    scores, true_positive, counted = [], [], []
    num_ground_truth = 0
    for (gt_boxes, gt_ignore), (boxes, det_scores) in zip(ground_truth, detections, strict=True):
        image_true_positive, image_counted = match_image(
            np.asarray(gt_boxes).reshape(-1, 4), np.asarray(gt_ignore, bool), np.asarray(boxes).reshape(-1, 4),
            np.asarray(det_scores), iou_thr)
        scores.append(np.asarray(det_scores, float))
        true_positive.append(image_true_positive)
        counted.append(image_counted)
        num_ground_truth += int((~np.asarray(gt_ignore, bool)).sum())
    return MatchedDetections(np.concatenate(scores) if scores else np.zeros(0),
                             np.concatenate(true_positive) if true_positive else np.zeros(0, bool),
                             np.concatenate(counted) if counted else np.zeros(0, bool), num_ground_truth)
