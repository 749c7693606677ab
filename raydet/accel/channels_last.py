"""``accel.channels_last``: in eval mode on the CPU, the image (and so every feature map) laid out channels-last.

oneDNN's convolutions run faster on that layout for inference (a few % of it); the
values are the same up to rounding.  Training keeps the contiguous layout, whose
backward passes are faster there (a 256-channel 48x48 3x3 convolution, batch 2:
337-364 ms channels-last against 237-299 ms).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def channels_last_in_eval(backbone: nn.Module, args: tuple) -> tuple | None:
    """A forward pre-hook of ``backbone``: its image ``img [B, 3, H, W]`` made channels-last when the
    backbone is in eval mode and the image on the CPU (None: the arguments unchanged)."""
    img: Tensor = args[0]
    if backbone.training or img.device.type != "cpu":
        return None
    return (img.contiguous(memory_format=torch.channels_last), *args[1:])


def channels_last_backbone_input(model: nn.Module) -> int:
    """Hook ``channels_last_in_eval`` onto ``model.backbone`` (a detector's); returns 1, or 0 for a model
    without a backbone."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        return 0
    backbone.register_forward_pre_hook(channels_last_in_eval)
    return 1
