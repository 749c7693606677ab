"""Cross-entropy: softmax over classes, or per-element sigmoid (binary)."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ...registry import MODELS
from .reduction import reduce_loss


@MODELS.register()
class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy of ``logits [N, C]`` against class indices ``targets [N]``,
    or, with ``use_sigmoid``, binary cross-entropy of ``logits [...]`` against
    probabilities ``targets [...]`` (RPN objectness, FCOS centre-ness).
    """

    def __init__(self, use_sigmoid: bool = False, loss_weight: float = 1.0):
        super().__init__()
        self.use_sigmoid, self.loss_weight = use_sigmoid, loss_weight

    def forward(self, logits: Tensor, targets: Tensor, avg_factor: float | Tensor | None = None) -> Tensor:
        if self.use_sigmoid:
            loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
        else:
            loss = F.cross_entropy(logits, targets, reduction="none")
        return self.loss_weight * reduce_loss(loss, avg_factor)
