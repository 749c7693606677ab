"""``accel.fold_norm``: a convolution and the BatchNorm after it computed as one convolution, when the norm
normalises with constants.

``FrozenBatchNorm2d``, and ``BatchNorm2d`` in eval mode, compute ``x * scale + shift``
per channel with ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias -
running_mean * scale``; so ``norm(conv(x))`` is the convolution with weight
``conv.weight * scale`` and bias ``shift (+ conv.bias * scale)`` (up to rounding).

``fold_conv_norm_pairs`` finds the pairs whose norm is applied directly to the
convolution's output (``CONV_NORM_PAIRS``: torchvision's ResNet blocks and raydet's
ResNet stem) and turns, in place, the convolution into a ``NormFoldingConv2d`` and
the norm into a ``FoldedAwayNorm``: while the norm normalises with constants the
convolution applies it and the norm passes its input through; otherwise (BatchNorm
in train mode) both compute as before.  The modules keep their parameters, buffers
and state_dict keys (checkpoints and the torchvision weight converter are
unaffected); gradients reach every parameter that requires one through the folding.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from ..models.backbones.resnet import ResNet
from .specialise import specialise


def normalises_with_constants(norm: nn.Module) -> bool:
    """Whether ``norm`` is a per-channel affine map now: ``FrozenBatchNorm2d``, or ``BatchNorm2d``
    in eval mode with running statistics (in train mode it normalises with the batch's)."""
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return (isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_mean is not None
            and norm.running_var is not None)


def folded_parameters(conv: nn.Conv2d, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """The weight ``[C_out, C_in, k, k]`` and bias ``[C_out]`` of ``norm(conv(x))`` as one convolution."""
    scale = (norm.running_var + norm.eps).rsqrt()
    if norm.weight is not None:
        scale = norm.weight * scale
    shift = -norm.running_mean * scale if norm.bias is None else norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return conv.weight * scale.reshape(-1, 1, 1, 1), shift


class NormFoldingConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that also applies ``norm_after`` (the norm layer its output goes to, a
    ``FoldedAwayNorm``) whenever that norm normalises with constants.

    Attributes:
        norm_after: the norm, referenced (it stays registered where it was).
        folded_parameters_cache: ``(sources, weight, bias)``: the folded weight and bias of a pair that
            needs no gradient (frozen, or under ``no_grad`` / ``inference_mode``), kept until one of its
            tensors changes (``sources``: each tensor's storage and version counter; in-place updates
            such as ``load_state_dict`` or an optimizer step bump it).  Emptied when the module's
            tensors are moved (``.to()``, ``.float()`` …), copied or pickled.
    """

    norm_after: nn.Module
    folded_parameters_cache: tuple[tuple, Tensor, Tensor] | None

    def forward(self, input: Tensor) -> Tensor:
        """``input [N, C_in, H, W]`` -> ``norm_after(conv(input))`` ``[N, C_out, H', W']`` when the norm
        normalises with constants, else ``conv(input)``."""
        if not normalises_with_constants(self.norm_after):
            return super().forward(input)
        return self._conv_forward(input, *self._folded_parameters())

    def _folded_parameters(self) -> tuple[Tensor, Tensor]:
        norm = self.norm_after
        sources = [t for t in (self.weight, self.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
                   if t is not None]
        if (torch.is_grad_enabled() and any(t.requires_grad for t in sources)) or any(t.is_inference()
                                                                                     for t in sources):
            return folded_parameters(self, norm)
        key = tuple((t.data_ptr(), t._version) for t in sources)
        cached = self.folded_parameters_cache
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable outside inference mode
            weight, bias = folded_parameters(self, norm)
        self.folded_parameters_cache = (key, weight, bias)
        return weight, bias

    def _apply(self, fn, *args, **kwargs):
        self.folded_parameters_cache = None  # tensors moved or converted: fold again
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "folded_parameters_cache": None}


class FoldedAwayNorm(nn.Module):
    """A norm layer whose constant affine map the ``NormFoldingConv2d`` before it applies: while it
    normalises with constants it passes its input through, else it normalises as its class does."""

    def forward(self, input: Tensor) -> Tensor:
        return input if normalises_with_constants(self) else super().forward(input)


class FoldedAwayBatchNorm2d(FoldedAwayNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` folded into the convolution before it (in eval mode)."""


class FoldedAwayFrozenBatchNorm2d(FoldedAwayNorm, FrozenBatchNorm2d):
    """``FrozenBatchNorm2d`` folded into the convolution before it."""


#: The class each foldable norm class becomes.
FOLDED_AWAY_CLASS = {nn.BatchNorm2d: FoldedAwayBatchNorm2d, FrozenBatchNorm2d: FoldedAwayFrozenBatchNorm2d}

#: Modules whose ``forward`` applies a norm layer directly to a convolution's output: the pairs'
#: paths within the module, ``(convolution, norm)``.
CONV_NORM_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    ResNet: (("conv1", "bn1"),),
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2"), ("downsample.0", "downsample.1")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("downsample.0", "downsample.1")),
}


def _submodule(owner: nn.Module, path: str) -> nn.Module | None:
    try:
        return owner.get_submodule(path)
    except AttributeError:  # e.g. a block without a downsample branch
        return None


def conv_norm_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.Module]]:
    """The ``(convolution, norm)`` pairs of ``model`` that can be folded: in a module of ``CONV_NORM_PAIRS``,
    a plain ``nn.Conv2d`` (zero padding) and a plain ``BatchNorm2d`` / ``FrozenBatchNorm2d``."""
    pairs = []
    for owner in model.modules():
        for conv_path, norm_path in CONV_NORM_PAIRS.get(type(owner), ()):
            conv, norm = _submodule(owner, conv_path), _submodule(owner, norm_path)
            if type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and type(norm) in FOLDED_AWAY_CLASS:
                pairs.append((conv, norm))
    return pairs


def fold_pair(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Turn ``conv`` into a ``NormFoldingConv2d`` that applies ``norm`` and ``norm`` into a ``FoldedAwayNorm``,
    in place.  Only for a pair whose norm is applied directly to the convolution's output."""
    specialise(norm, FOLDED_AWAY_CLASS[type(norm)])
    specialise(conv, NormFoldingConv2d, norm_after=norm, folded_parameters_cache=None)


def fold_conv_norm_pairs(model: nn.Module) -> int:
    """``fold_pair`` every pair of ``conv_norm_pairs(model)``; returns how many pairs."""
    pairs = conv_norm_pairs(model)
    for conv, norm in pairs:
        fold_pair(conv, norm)
    return len(pairs)
