"""A convolution followed by a BatchNorm that normalises with constants, computed as one convolution.

``FrozenBatchNorm2d``, and ``BatchNorm2d`` in eval mode, compute ``x * scale + shift``
per channel with ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias -
running_mean * scale``; so ``norm(conv(x))`` is the convolution with weight
``conv.weight * scale`` and bias ``shift (+ conv.bias * scale)`` (up to rounding).  The
modules and their parameters stay as they are (state_dict keys, checkpoints and the
torchvision weight converter are unaffected); only the arithmetic of the forward pass
changes.  Gradients reach every parameter that requires one through the folding.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import FrozenBatchNorm2d


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


class ConvNormFolder:
    """Computes ``norm(conv(x))`` as one convolution when ``norm`` normalises with constants.

    The folded weights of a pair that needs no gradient (frozen, or under ``no_grad`` /
    ``inference_mode``) are kept until one of its tensors changes: each is checked by
    its storage and version counter (in-place updates such as ``load_state_dict`` or an
    optimizer step bump it).  The owner calls ``clear()`` when its tensors are moved
    (``Module._apply``: ``.to()``, ``.float()`` …); pickling and ``deepcopy`` drop the cache.
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple, Tensor, Tensor]] = {}

    def clear(self) -> None:
        self._cache.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"_cache": {}}

    def __call__(self, name: str, conv: nn.Conv2d, norm: nn.Module, x: Tensor) -> Tensor:
        """``norm(conv(x))``; ``name`` identifies the pair in the cache."""
        if not normalises_with_constants(norm) or conv.padding_mode != "zeros":
            return norm(conv(x))
        weight, bias = self._parameters(name, conv, norm)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def _parameters(self, name: str, conv: nn.Conv2d, norm: nn.Module) -> tuple[Tensor, Tensor]:
        sources = [t for t in (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
                   if t is not None]
        if (torch.is_grad_enabled() and any(t.requires_grad for t in sources)) or any(t.is_inference()
                                                                                     for t in sources):
            return folded_parameters(conv, norm)
        key = tuple((t.data_ptr(), t._version) for t in sources)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable outside inference mode
            weight, bias = folded_parameters(conv, norm)
        self._cache[name] = (key, weight, bias)
        return weight, bias
