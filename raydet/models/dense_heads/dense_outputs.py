"""Shared helpers of dense heads: flattening per-level maps and selecting detections."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image


def flatten_level(output: Tensor, channels: int) -> Tensor:
    """``[B, A * C, H, W]`` -> ``[B, H * W * A, C]``, the order of ``AnchorGenerator``'s anchors."""
    batch, _, height, width = output.shape
    return output.view(batch, -1, channels, height, width).permute(0, 3, 4, 1, 2).reshape(batch, -1, channels)


def flatten_levels(outputs: list[Tensor], channels: int) -> Tensor:
    """Per-level ``[B, A * C, H_l, W_l]`` -> ``[B, sum_l H_l * W_l * A, C]``."""
    return torch.cat([flatten_level(output, channels) for output in outputs], dim=1)


def select_detections(scores: list[Tensor], box_preds: list[Tensor], priors: list[Tensor],
                      decode: Callable[[Tensor, Tensor], Tensor], img_shape: tuple[int, int], score_thr: float,
                      nms_pre: int, nms_iou_thr: float, max_per_img: int) -> dict[str, Tensor]:
    """One image's detections from per-level class scores, in torchvision's order.

    Per level: keep (prior, class) pairs scoring above ``score_thr``, the ``nms_pre``
    best of them, decode and clip their boxes to ``img_shape`` (h, w); then class-wise
    NMS over all levels and the ``max_per_img`` best.

    Args:
        scores: per level ``[N_l, K]`` probabilities.
        box_preds: per level ``[N_l, 4]`` regression outputs.
        priors: per level ``[N_l, 4]`` anchors / points.
        decode: ``(priors [n, 4], box_preds [n, 4]) -> boxes [n, 4]``.
    Returns:
        ``{"boxes": [D, 4] x1y1x2y2, "scores": [D], "labels": [D] int64}``.
    """
    all_boxes, all_scores, all_labels = [], [], []
    for level_scores, level_box_preds, level_priors in zip(scores, box_preds, priors):
        num_classes = level_scores.shape[-1]
        level_scores = level_scores.flatten()
        keep = level_scores > score_thr
        level_scores = level_scores[keep]
        indices = torch.where(keep)[0]
        level_scores, order = level_scores.topk(min(nms_pre, indices.numel()))
        indices = indices[order]
        prior_indices = torch.div(indices, num_classes, rounding_mode="floor")
        boxes = decode(level_priors[prior_indices], level_box_preds[prior_indices])
        all_boxes.append(clip_boxes_to_image(boxes, img_shape))
        all_scores.append(level_scores)
        all_labels.append(indices % num_classes)
    boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    keep = batched_nms(boxes, scores, labels, nms_iou_thr)[:max_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
