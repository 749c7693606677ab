"""Optimizers from config, with optional no-weight-decay on norm layers and biases.

``optimizer: {type: SGD, lr: 0.02, momentum: 0.9, weight_decay: 1.0e-4}`` is built
from ``OPTIMIZERS`` (torch.optim classes, checked like every other node).
``optimizer_config`` says how the optimizer is driven: gradient clipping,
gradient accumulation, mixed precision and parameter-wise weight decay.
"""
from __future__ import annotations

import math

import torch

from .config.schema import OptimizerConfig
from .registry import OPTIMIZERS, BuildError

for _optimizer in (torch.optim.SGD, torch.optim.AdamW, torch.optim.Adam):
    OPTIMIZERS.register()(_optimizer)

_NORM_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm,
                torch.nn.modules.instancenorm._InstanceNorm)


def param_groups(model: torch.nn.Module, weight_decay: float, norm_decay_mult: float | None,
                 bias_decay_mult: float | None) -> list[dict]:
    """Split trainable parameters into groups by their weight decay.

    Returns ``[{"params": [...], "weight_decay": wd}, ...]`` — one group per distinct
    decay, so an optimizer state dict stays stable across runs.
    """
    norm_mult = 1.0 if norm_decay_mult is None else norm_decay_mult
    bias_mult = 1.0 if bias_decay_mult is None else bias_decay_mult
    decay_of: dict[float, list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, _NORM_LAYERS)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            mult = norm_mult if is_norm else (bias_mult if name == "bias" else 1.0)
            decay_of.setdefault(weight_decay * mult, []).append(param)
    return [{"params": params, "weight_decay": decay} for decay, params in decay_of.items()]


#: The largest finite float32: parameters are float32, so a larger step size or decay overflows in the step.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _check_fits_float32(optimizer_node: dict, key_path: str) -> None:
    """Each number of the optimizer's settings (``lr``, ``momentum``, ``betas`` ...) finite and within float32
    (the fuzzer's ``lr: 1e+300`` passed the check, then failed the first step: "value cannot be converted to
    type float without overflow")."""
    for key, value in optimizer_node.items():
        for number in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(number, (int, float)) and not isinstance(number, bool) and not (
                    math.isfinite(number) and abs(number) <= FLOAT32_MAX):
                raise BuildError(f"{key_path}.{key}", f"{value!r} does not fit in float32 (the parameters' type: "
                                                      f"finite and at most {FLOAT32_MAX:.3g} in size)")


def build_optimizer(model: torch.nn.Module, optimizer_node: dict, settings: OptimizerConfig,
                    key_path: str = "optimizer") -> torch.optim.Optimizer:
    """The optimizer of ``optimizer_node`` over ``model``'s trainable parameters."""
    if not isinstance(optimizer_node, dict) or "type" not in optimizer_node:
        raise BuildError(key_path, f"expected a mapping with a 'type:' key naming an OPTIMIZERS member, "
                                   f"got {optimizer_node!r}")
    _check_fits_float32(optimizer_node, key_path)
    weight_decay = optimizer_node.get("weight_decay", 0.0)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)):
        raise BuildError(f"{key_path}.weight_decay", f"expected float, got {weight_decay!r}")
    groups = param_groups(model, weight_decay, settings.norm_decay_mult, settings.bias_decay_mult)
    return OPTIMIZERS.build(optimizer_node, key_path, params=groups)
