"""Sample a fixed-size, fixed-ratio batch of positive and negative boxes per image."""
from __future__ import annotations

import torch
from torch import Tensor

from ...registry import TASK_UTILS
from .max_iou_assigner import NEGATIVE


@TASK_UTILS.register()
class RandomSampler:
    """Random positives (up to ``num * pos_fraction``), negatives fill up to ``num``.

    torchvision's ``BalancedPositiveNegativeSampler``, drawing from torch's global
    generator in the same order (one ``randperm`` for the positives, then one for
    the negatives, image by image), so seeding reproduces its choice.
    """

    def __init__(self, num: int, pos_fraction: float):
        if not 0 <= pos_fraction <= 1:
            raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}")
        self.num = num
        self.pos_fraction = pos_fraction

    def sample(self, assigned: Tensor) -> tuple[Tensor, Tensor]:
        """Masks ``[N]`` bool of the sampled positives and negatives of one image.

        ``assigned``: ``[N]`` assignment from an assigner (``>= 0`` positive,
        ``NEGATIVE`` negative, anything else ignored).
        """
        positive = torch.where(assigned >= 0)[0]
        negative = torch.where(assigned == NEGATIVE)[0]
        num_pos = min(positive.numel(), int(self.num * self.pos_fraction))
        num_neg = min(negative.numel(), self.num - num_pos)
        chosen_pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
        chosen_neg = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
        pos_mask = torch.zeros_like(assigned, dtype=torch.bool)
        neg_mask = torch.zeros_like(assigned, dtype=torch.bool)
        pos_mask[chosen_pos] = True
        neg_mask[chosen_neg] = True
        return pos_mask, neg_mask
