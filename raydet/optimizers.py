"""Optimizers from config, with optional no-weight-decay on norm layers and biases.

``optimizer: {type: SGD, lr: 0.02, momentum: 0.9, weight_decay: 1.0e-4}`` is built
from ``OPTIMIZERS`` (torch.optim classes, checked like every other node).
``optimizer_config`` says how the optimizer is driven: gradient clipping,
gradient accumulation, mixed precision and parameter-wise weight decay.
"""
from __future__ import annotations

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


def build_optimizer(model: torch.nn.Module, optimizer_node: dict, settings: OptimizerConfig,
                    key_path: str = "optimizer") -> torch.optim.Optimizer:
    """The optimizer of ``optimizer_node`` over ``model``'s trainable parameters."""
    if not isinstance(optimizer_node, dict) or "type" not in optimizer_node:
        raise BuildError(key_path, f"expected a mapping with a 'type:' key naming an OPTIMIZERS member, "
                                   f"got {optimizer_node!r}")
    weight_decay = optimizer_node.get("weight_decay", 0.0)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)):
        raise BuildError(f"{key_path}.weight_decay", f"expected float, got {weight_decay!r}")
    groups = param_groups(model, weight_decay, settings.norm_decay_mult, settings.bias_decay_mult)
    return OPTIMIZERS.build(optimizer_node, key_path, params=groups)
