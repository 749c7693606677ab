"""Sigmoid focal loss (RetinaNet, FCOS classification)."""
from __future__ import annotations

from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from ...registry import MODELS
from .reduction import reduce_loss


@MODELS.register()
class FocalLoss(nn.Module):
    """torchvision's ``sigmoid_focal_loss`` on ``logits [N, K]`` against one-hot ``targets [N, K]``.

    Args:
        alpha: weight of the positive term (``-1``: no weighting).
        gamma: focusing exponent.
        loss_weight: multiplies the reduced loss.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, loss_weight: float = 1.0):
        super().__init__()
        self.alpha, self.gamma, self.loss_weight = alpha, gamma, loss_weight

    def forward(self, logits: Tensor, targets: Tensor, avg_factor: float | Tensor | None = None) -> Tensor:
        loss = sigmoid_focal_loss(logits, targets, self.alpha, self.gamma, reduction="none")
        return self.loss_weight * reduce_loss(loss, avg_factor)
