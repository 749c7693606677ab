"""Turning a built module into a subclass of its class, in place: how the speed paths enter a model.

The module keeps its identity, parameters, buffers, hooks and place in the model, so
state_dict keys, checkpoints, optimizers' parameter lists and ``isinstance`` checks
are unaffected; only the methods the subclass overrides change.  (torch's own
``nn.utils.parametrize`` enters a module the same way.)
"""
from __future__ import annotations

from typing import Any

from torch import nn


def specialise(module: nn.Module, subclass: type[nn.Module], **attributes: Any) -> None:
    """Make ``module`` an instance of ``subclass`` (a subclass of its class that adds methods, no constructor
    state) and give it ``attributes``.  They are set as plain attributes: a module given here is referenced,
    not registered, so it stays where it is in the module tree and the state_dict."""
    if not issubclass(subclass, type(module)):
        raise TypeError(f"{subclass.__name__} is not a subclass of {type(module).__name__}")
    module.__class__ = subclass
    module.__dict__.update(attributes)
