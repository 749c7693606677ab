"""How every raydet loss reduces its element-wise values."""
from __future__ import annotations

from torch import Tensor


def reduce_loss(loss: Tensor, avg_factor: float | Tensor | None) -> Tensor:
    """``loss.mean()`` without ``avg_factor``, else ``loss.sum() / avg_factor``.

    Heads pass ``avg_factor`` (e.g. the number of positive anchors) to normalise by
    something other than the number of elements.
    """
    if avg_factor is None:
        return loss.mean()
    return loss.sum() / avg_factor
