"""Assign each box (anchor or proposal) to the ground-truth box it overlaps most."""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

from ...registry import TASK_UTILS

NEGATIVE = -1  # below neg_iou_thr: background
IGNORED = -2  # between the thresholds: neither positive nor negative


@TASK_UTILS.register()
class MaxIoUAssigner:
    """Max-IoU assignment: torchvision's ``Matcher`` (mmdetection's ``MaxIoUAssigner``).

    ``assign`` returns, for every box, the index of its ground-truth box (``>= 0``:
    positive), ``NEGATIVE`` (-1, IoU below ``neg_iou_thr``) or ``IGNORED`` (-2,
    in between).

    Args:
        pos_iou_thr: IoU at or above which a box is positive.
        neg_iou_thr: IoU below which a box is negative.
        match_low_quality: also make positive, for every ground-truth box, the boxes
            that overlap it the most (ties included), each assigned to *its own*
            best ground truth — torchvision's ``allow_low_quality_matches``.
            mmdetection's variant (``min_pos_iou``, assigned to that ground truth)
            differs only when such a box overlaps two ground truths.
    """

    def __init__(self, pos_iou_thr: float, neg_iou_thr: float, match_low_quality: bool = True):
        if neg_iou_thr > pos_iou_thr:
            raise ValueError(f"neg_iou_thr ({neg_iou_thr}) must not exceed pos_iou_thr ({pos_iou_thr})")
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.match_low_quality = match_low_quality

    def assign(self, gt_boxes: Tensor, boxes: Tensor) -> Tensor:
        """``[N]`` int64 assignment of ``boxes [N, 4]`` to ``gt_boxes [M, 4]`` (x1y1x2y2)."""
        if gt_boxes.numel() == 0 or boxes.numel() == 0:
            return torch.full((boxes.shape[0],), NEGATIVE, dtype=torch.int64, device=boxes.device)
        iou = box_iou(gt_boxes, boxes)  # [M, N]
        best_iou, matches = iou.max(dim=0)
        best_gt_of_box = matches.clone() if self.match_low_quality else None
        matches[best_iou < self.neg_iou_thr] = NEGATIVE
        matches[(best_iou >= self.neg_iou_thr) & (best_iou < self.pos_iou_thr)] = IGNORED
        if best_gt_of_box is not None:
            best_iou_of_gt = iou.max(dim=1).values
            _, box_indices = torch.where(iou == best_iou_of_gt[:, None])
            matches[box_indices] = best_gt_of_box[box_indices]
        return matches
