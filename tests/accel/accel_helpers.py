"""Helpers of the speed-path tests: comparing two computations of one function, forward and backward, and
counting the calls that went through a speed path's kernel."""
from __future__ import annotations

import types
from typing import Any

import pytest
import torch


def gradients(output: torch.Tensor, inputs: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(output, inputs, grad))


def assert_same_function(actual: torch.Tensor, expected: torch.Tensor, inputs: list[torch.Tensor],
                         atol: float, rtol: float = 0.0) -> None:
    """``actual`` equals ``expected``, and so do their gradients with respect to ``inputs`` (for one random
    output gradient), within the tolerances."""
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
    grad = torch.randn_like(expected)
    for got_one, want_one in zip(gradients(actual, inputs, grad), gradients(expected, inputs, grad)):
        torch.testing.assert_close(got_one, want_one, rtol=rtol, atol=atol)


def record_calls(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType, name: str) -> list[tuple[Any, ...]]:
    """Wrap the function ``module.name`` (for the test's duration) so that each call's positional arguments
    are appended to the returned list; the function still computes its result."""
    function = getattr(module, name)
    calls: list[tuple[Any, ...]] = []

    def recording(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls
