"""Losses: each takes ``(pred, target, avg_factor=None)`` and returns a scalar."""
from .cross_entropy_loss import CrossEntropyLoss
from .focal_loss import FocalLoss
from .iou_loss import GIoULoss, IoULoss
from .l1_loss import L1Loss
from .smooth_l1_loss import SmoothL1Loss

__all__ = ["CrossEntropyLoss", "FocalLoss", "GIoULoss", "IoULoss", "L1Loss", "SmoothL1Loss"]
