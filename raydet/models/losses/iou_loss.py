"""IoU-based box losses between predicted and target boxes (x1y1x2y2, aligned pairs)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from ...registry import MODELS
from .reduction import reduce_loss


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU ``[N]`` of each pair ``boxes1[i], boxes2[i]`` (``[N, 4]`` x1y1x2y2 each)."""
    top_left = torch.max(boxes1[:, :2], boxes2[:, :2])
    bottom_right = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return intersection / (area1 + area2 - intersection + eps)


@MODELS.register()
class IoULoss(nn.Module):
    """``-log(IoU)`` (``mode: log``, UnitBox / mmdetection's default) or ``1 - IoU`` (``linear``)."""

    def __init__(self, mode: Literal["log", "linear"] = "log", eps: float = 1e-6, loss_weight: float = 1.0):
        super().__init__()
        self.mode, self.eps, self.loss_weight = mode, eps, loss_weight

    def forward(self, pred: Tensor, target: Tensor, avg_factor: float | Tensor | None = None) -> Tensor:
        iou = aligned_box_iou(pred, target).clamp(min=self.eps)
        loss = -iou.log() if self.mode == "log" else 1 - iou
        return self.loss_weight * reduce_loss(loss, avg_factor)


@MODELS.register()
class GIoULoss(nn.Module):
    """``1 - GIoU`` via torchvision's ``generalized_box_iou_loss`` (FCOS's box loss)."""

    def __init__(self, eps: float = 1e-7, loss_weight: float = 1.0):
        super().__init__()
        self.eps, self.loss_weight = eps, loss_weight

    def forward(self, pred: Tensor, target: Tensor, avg_factor: float | Tensor | None = None) -> Tensor:
        loss = generalized_box_iou_loss(pred, target, reduction="none", eps=self.eps)
        return self.loss_weight * reduce_loss(loss, avg_factor)
