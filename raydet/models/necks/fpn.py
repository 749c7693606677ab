"""Feature Pyramid Network (arXiv 1612.03144) with the extra levels RetinaNet and FCOS use."""
from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torch.nn import functional as F

from ...registry import MODELS

ExtraConvSource = Literal[False, "on_input", "on_lateral", "on_output"]


#: Extra levels past the inputs: P6 and P7 are common; a seventh halving of a stride-32 map is stride 4096.
MAX_EXTRA_LEVELS = 6


@MODELS.register()
class FPN(nn.Module):
    """Top-down pathway with lateral 1x1 convs and 3x3 output convs, plus extra coarser levels.

    Inputs ``in_channels[start_level:]`` are used (mmdetection's ``start_level``).
    ``num_outs`` beyond those are extra levels: with ``add_extra_convs: false``
    each is the previous output subsampled by 2 (``max_pool2d(k=1, s=2)``, Faster
    R-CNN's P6); otherwise each is a 3x3 stride-2 conv whose first input is the
    last backbone map (``on_input``), the last lateral (``on_lateral``) or the last
    output (``on_output``), and whose later inputs are the previous extra level,
    through a ReLU when ``relu_before_extra_convs``.  torchvision's RetinaNet and
    FCOS use ``on_output`` with the ReLU (``LastLevelP6P7(256, 256)``).

    Parameter layout: ``lateral_convs.i`` and ``fpn_convs.i`` (extra convs follow
    the per-input ones in ``fpn_convs``), as in mmdetection.
    """

    def __init__(self, in_channels: list[int], out_channels: int, num_outs: int, start_level: int = 0,
                 add_extra_convs: ExtraConvSource = False, relu_before_extra_convs: bool = False):
        super().__init__()
        num_inputs = len(in_channels) - start_level
        if num_inputs < 1 or num_outs < num_inputs:
            raise ValueError(f"num_outs ({num_outs}) must be >= the {num_inputs} inputs used "
                             f"from start_level {start_level}")
        if num_outs > num_inputs + MAX_EXTRA_LEVELS:
            raise ValueError(f"num_outs ({num_outs}) is at most {num_inputs + MAX_EXTRA_LEVELS}: the {num_inputs} "
                             f"inputs and {MAX_EXTRA_LEVELS} extra levels, each half the size of the one before")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels[start_level:])
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(num_inputs))
        if add_extra_convs:
            for extra in range(num_outs - num_inputs):
                source_channels = in_channels[-1] if extra == 0 and add_extra_convs == "on_input" else out_channels
                self.fpn_convs.append(nn.Conv2d(source_channels, out_channels, 3, stride=2, padding=1))
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)

    def top_down(self, inputs: list[Tensor]) -> list[Tensor]:
        """Lateral maps merged top-down: ``[B, out_channels, H_i, W_i]`` per used input."""
        inputs = inputs[self.start_level:]
        merged = [self.lateral_convs[-1](inputs[-1])]
        for index in range(len(inputs) - 2, -1, -1):
            lateral = self.lateral_convs[index](inputs[index])
            merged.insert(0, lateral + F.interpolate(merged[0], size=lateral.shape[-2:], mode="nearest"))
        return merged

    def extra_levels(self, outs: list[Tensor], inputs: list[Tensor], merged: list[Tensor]) -> list[Tensor]:
        """``outs`` followed by the ``num_outs - len(outs)`` extra levels."""
        num_inputs = len(outs)
        if not self.add_extra_convs:
            for _ in range(self.num_outs - num_inputs):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            return outs
        source = {"on_input": inputs[-1], "on_lateral": merged[-1], "on_output": outs[-1]}[self.add_extra_convs]
        outs.append(self.fpn_convs[num_inputs](source))
        for index in range(num_inputs + 1, self.num_outs):
            previous = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
            outs.append(self.fpn_convs[index](previous))
        return outs

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        """Backbone maps (finest first) -> ``num_outs`` maps ``[B, out_channels, H_l, W_l]``, finest first."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"{type(self).__name__} expects {len(self.in_channels)} inputs, got {len(inputs)}")
        merged = self.top_down(inputs)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, merged)]
        return self.extra_levels(outs, inputs, merged)
