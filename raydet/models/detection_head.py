"""What a detector's final head declares: the classes it predicts and how its detections are merged."""
from __future__ import annotations

import abc

from torch import nn


class DetectionHead(nn.Module, metaclass=abc.ABCMeta):
    """A head whose outputs are the detector's detections (``BaseDetector.final_head``).

    Its ``simple_test`` gives, per image, ``{"boxes": [K, 4] x1y1x2y2, "scores": [K],
    "labels": [K] int64}`` with ``K <= max_per_img``; ``BaseDetector.aug_test`` merges
    several augmentations' detections with class-wise NMS at ``nms_iou_thr``, again
    keeping ``max_per_img``.

    A head that also segments its detections (``with_mask``: Mask R-CNN's RoI head) adds
    ``"mask_probs": [K, M, M]``, each detection's foreground probabilities on an ``M x M``
    grid over its box; the detector pastes them into the image and keeps the pixels whose
    probability is at least ``mask_thr_binary``.

    Attributes:
        num_classes: object classes (no background); labels are ``0 .. num_classes - 1``.
        nms_iou_thr: IoU above which class-wise NMS drops the lower-scoring of two boxes.
        max_per_img: the most detections kept per image.
        with_mask: whether ``simple_test`` gives ``mask_probs`` (and training needs ``gt_masks``).
        mask_thr_binary: with ``with_mask``, the probability from which a pasted mask's pixel is foreground.
    """

    with_mask: bool = False
    mask_thr_binary: float = 0.5

    def __init__(self, num_classes: int, nms_iou_thr: float, max_per_img: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if not 0.0 < nms_iou_thr <= 1.0:
            raise ValueError(f"nms_iou_thr must be in (0, 1], got {nms_iou_thr}")
        if max_per_img < 1:
            raise ValueError(f"max_per_img must be at least 1, got {max_per_img}")
        self.num_classes = num_classes
        self.nms_iou_thr = nms_iou_thr
        self.max_per_img = max_per_img
