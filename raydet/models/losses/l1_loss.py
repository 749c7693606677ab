"""L1 loss for box regression."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ...registry import MODELS
from .reduction import reduce_loss


@MODELS.register()
class L1Loss(nn.Module):
    """Absolute difference between ``pred [N, 4]`` and ``target [N, 4]`` (RetinaNet's box loss)."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, avg_factor: float | Tensor | None = None) -> Tensor:
        return self.loss_weight * reduce_loss(F.l1_loss(pred, target, reduction="none"), avg_factor)
