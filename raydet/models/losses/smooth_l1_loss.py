"""Smooth-L1 (Huber) loss for box regression."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ...registry import MODELS
from .reduction import reduce_loss


@MODELS.register()
class SmoothL1Loss(nn.Module):
    """Smooth-L1 between ``pred [N, 4]`` and ``target [N, 4]``; quadratic below ``beta``.

    torchvision's Faster R-CNN uses ``beta = 1/9`` in the RPN and the RoI head.
    """

    def __init__(self, beta: float = 1.0, loss_weight: float = 1.0):
        super().__init__()
        self.beta, self.loss_weight = beta, loss_weight

    def forward(self, pred: Tensor, target: Tensor, avg_factor: float | Tensor | None = None) -> Tensor:
        loss = F.smooth_l1_loss(pred, target, beta=self.beta, reduction="none")
        return self.loss_weight * reduce_loss(loss, avg_factor)
