"""``accel.winograd``: the 3x3 stride-1 convolutions of a model as Winograd F(m x m, 3x3) where they gain.

``use_winograd`` turns each plain ``nn.Conv2d`` that can take the path (3x3, stride
1, padding 1, no dilation or groups) into a ``WinogradConv2d``: the same module, the
same parameters and state_dict; per call it runs ``winograd_conv2d`` when
``output_tile`` says the call gains (float32 CPU maps large enough for its input
channels), else ``F.conv2d`` as before.  A norm-folding convolution
(``raydet.accel.folded_norm``) becomes a ``WinogradNormFoldingConv2d``: its folded
weights take the path too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .folded_norm import NormFoldingConv2d
from .specialise import specialise
from .winograd import OutputTile, output_tile, transform_weight, winograd_conv2d


@dataclass
class TransformedWeight:
    """``transform_weight(weight, tile)`` of the ``weight`` it was made from, at that tensor's ``version``."""

    weight: Tensor
    version: int
    transformed: Tensor


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 1, padding 1) whose calls that gain run as Winograd F(m x m, 3x3).

    Attributes:
        largest_tile: the largest output tile ``m`` used (2 or 4; ``output_tile`` picks 2 on
            smaller maps).
        transformed_weight_cache: per tile, the transformed weight of the last weight convolved
            that needs no gradient (frozen, or under ``no_grad``), kept while that tensor is
            unchanged (same tensor, same version counter: in-place updates such as
            ``load_state_dict`` or an optimizer step bump it).  Emptied when the module's
            tensors are moved (``.to()``, ``.float()`` …), copied or pickled.
    """

    largest_tile: OutputTile
    transformed_weight_cache: dict[int, TransformedWeight]

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """``input [N, C_in, H, W]`` -> ``[N, C_out, H, W]`` with ``weight [C_out, C_in, 3, 3]`` (the module's,
        or the folded one of a ``WinogradNormFoldingConv2d``)."""
        tile = output_tile(input, weight, self.stride, self.padding, self.dilation, self.groups, self.largest_tile)
        if tile is None:
            return super()._conv_forward(input, weight, bias)
        return winograd_conv2d(input, weight, bias, tile, self._transformed_weight(weight, tile))

    def _transformed_weight(self, weight: Tensor, tile: int) -> Tensor | None:
        """``transform_weight(weight, tile)`` from the cache (made and kept on a miss); None when ``weight``
        may need a gradient (the autograd function transforms it itself) or is an inference tensor."""
        if (weight.requires_grad and torch.is_grad_enabled()) or weight.is_inference():
            return None
        entry = self.transformed_weight_cache.get(tile)
        if entry is not None and entry.weight is weight and entry.version == weight._version:
            return entry.transformed
        with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable outside inference mode
            transformed = transform_weight(weight, tile)
        self.transformed_weight_cache[tile] = TransformedWeight(weight, weight._version, transformed)
        return transformed

    def _apply(self, fn, *args, **kwargs):
        self.transformed_weight_cache = {}  # tensors moved or converted: transform again
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "transformed_weight_cache": {}}


class WinogradNormFoldingConv2d(NormFoldingConv2d, WinogradConv2d):
    """A ``NormFoldingConv2d`` whose convolutions, folded or not, take ``WinogradConv2d``'s path."""


#: The class each convolution class becomes.
WINOGRAD_CLASS = {nn.Conv2d: WinogradConv2d, NormFoldingConv2d: WinogradNormFoldingConv2d}


def takes_winograd(conv: nn.Module) -> bool:
    """Whether ``conv`` is a convolution that ``WinogradConv2d`` can compute: a plain one (or a norm-folding
    one) with a 3x3 kernel, stride 1, padding 1 (zeros), no dilation and no groups."""
    return (type(conv) in WINOGRAD_CLASS and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def use_winograd(model: nn.Module, largest_tile: OutputTile) -> int:
    """Turn every convolution of ``model`` that ``takes_winograd`` into a ``WinogradConv2d`` with output tiles
    of at most ``largest_tile``, in place; returns how many."""
    if largest_tile not in (2, 4):
        raise ValueError(f"Winograd output tiles offered: [2, 4], got {largest_tile}")
    convs = [module for module in model.modules() if takes_winograd(module)]
    for conv in convs:
        specialise(conv, WINOGRAD_CLASS[type(conv)], largest_tile=largest_tile, transformed_weight_cache={})
    return len(convs)
