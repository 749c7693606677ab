"""``accel.winograd``: Winograd F(m x m, 3x3) is ``F.conv2d``'s function up to rounding, forward and backward;
``WinogradConv2d`` takes that path for the calls that gain (and the tests see that it did) and keeps the
transformed weights only while they are valid."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from raydet.accel import winograd_conv
from raydet.accel.winograd import output_tile, winograd_conv2d
from raydet.accel.winograd_conv import WinogradConv2d, use_winograd
from tests.accel.accel_helpers import assert_same_function, gradients, record_calls

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize(("shape", "out_channels", "bias"), [((2, 6, 13, 10), 5, True), ((1, 4, 8, 8), 3, False),
                                                             ((1, 2, 1, 3), 2, True)])
def test_winograd_convolution_is_conv2d_forward_and_backward(m, shape, out_channels, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(out_channels, shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out_channels, dtype=torch.float64, requires_grad=True) if bias else None
    inputs = [x, weight] + ([b] if bias else [])
    expected = F.conv2d(x, weight, b, padding=1)
    actual = winograd_conv2d(x, weight, b, m)
    assert_same_function(actual, expected, inputs, atol=1e-10)


def test_winograd_float32_rounding_is_within_a_fixed_multiple_of_a_dot_products():
    """Against float64, each output's error in units of float32 eps x sum(|x * w|) (the scale of any float32
    dot product's rounding): F(2x2, 3x3) within 4, F(4x4, 3x3) within 64.  Measured on a 2-core EPYC: 1.0-1.3
    and 22-27 over four seeds, oneDNN's direct convolution 0.5.  (A bound relative to oneDNN's own error, as
    this test had, held on one CPU and failed on an AVX-512 one whose direct convolution rounds better.)"""
    torch.manual_seed(0)
    x = torch.randn(1, 128, 32, 32)
    weight = torch.randn(128, 128, 3, 3) * (2 / (9 * 128)) ** 0.5
    exact = F.conv2d(x.double(), weight.double(), padding=1)
    unit = torch.finfo(torch.float32).eps * F.conv2d(x.double().abs(), weight.double().abs(), padding=1)
    assert ((winograd_conv2d(x, weight, None, 2) - exact).abs() / unit).max() <= 4
    assert ((winograd_conv2d(x, weight, None, 4) - exact).abs() / unit).max() <= 64


def test_winograd_takes_only_the_convolutions_that_gain(monkeypatch):
    taken = []

    def spy(x, weight, bias=None, m=4, transformed_weight=None):
        taken.append((tuple(x.shape), m))
        return F.conv2d(x, weight, bias, padding=1)

    monkeypatch.setattr(winograd_conv, "winograd_conv2d", spy)
    torch.manual_seed(0)
    cases = [  # (conv, input, it becomes a WinogradConv2d, the tile a call takes or None)
        (nn.Conv2d(128, 8, 3, padding=1), torch.randn(1, 128, 24, 24), True, 4),
        (nn.Conv2d(128, 8, 3, padding=1), torch.randn(1, 128, 16, 16), True, None),  # too small for 128 channels
        (nn.Conv2d(256, 8, 3, padding=1), torch.randn(1, 256, 16, 16), True, 2),  # small: F(2x2) without gradients
        (nn.Conv2d(128, 8, 3, padding=1).double(), torch.randn(1, 128, 48, 48, dtype=torch.float64), True, None),
        (nn.Conv2d(128, 8, 3, stride=2, padding=1), torch.randn(1, 128, 48, 48), False, None),
        (nn.Conv2d(128, 8, 1), torch.randn(1, 128, 48, 48), False, None),
        (nn.Conv2d(128, 8, 3), torch.randn(1, 128, 48, 48), False, None),  # no padding
        (nn.Conv2d(128, 8, 3, padding=1, groups=2), torch.randn(1, 128, 48, 48), False, None),
        (nn.Conv2d(128, 8, 3, padding=1, padding_mode="reflect"), torch.randn(1, 128, 48, 48), False, None),
    ]
    convs = nn.ModuleList(conv for conv, *_ in cases)
    assert use_winograd(convs, 4) == sum(swapped for *_, swapped, _ in cases)
    assert [type(conv) is WinogradConv2d for conv in convs] == [swapped for *_, swapped, _ in cases]
    with torch.no_grad():
        for conv, x, *_ in cases:
            conv(x)
    assert taken == [(tuple(x.shape), tile) for _, x, _, tile in cases if tile is not None]
    conv = nn.Conv2d(256, 8, 3, padding=1)
    assert output_tile(torch.randn(1, 256, 16, 16), conv.weight, padding=1) is None  # trainable: large maps only
    assert output_tile(torch.randn(1, 256, 32, 32), conv.weight, padding=1, largest=2) == 2


def test_winograd_trains_like_the_direct_convolution(monkeypatch):
    taken = record_calls(monkeypatch, winograd_conv, "winograd_conv2d")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 4, 3, padding=1))
    fast = copy.deepcopy(net)
    assert use_winograd(fast, 4) == 2
    x = torch.randn(2, 128, 28, 28)
    expected = net(x).square().mean()
    want = gradients(expected, list(net.parameters()), torch.ones(()))
    actual = fast(x).square().mean()
    got = gradients(actual, list(fast.parameters()), torch.ones(()))
    assert [call[3] for call in taken] == [4, 4]  # both convolutions, F(4x4, 3x3)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-4 * float(w.abs().max()))


def test_winograd_keeps_the_transformed_weights_only_while_they_are_unchanged():
    torch.manual_seed(0)
    x = torch.randn(1, 128, 24, 24)
    conv = nn.Conv2d(128, 8, 3, padding=1, bias=False).requires_grad_(False)
    use_winograd(conv, 4)
    with torch.no_grad():
        first = conv(x)
        cached = conv.transformed_weight_cache[4].transformed  # the Winograd path ran and kept its transform
        assert torch.equal(conv(x), first) and conv.transformed_weight_cache[4].transformed is cached
        conv.weight.mul_(2)  # in place: a new version
        torch.testing.assert_close(conv(x), 2 * first)
        assert conv.transformed_weight_cache[4].transformed is not cached
        conv.weight.copy_(torch.randn(8, 128, 3, 3))
        expected = F.conv2d(x, conv.weight, padding=1)
        torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-4 * float(expected.abs().max()))
    assert copy.deepcopy(conv).transformed_weight_cache == {}
    assert conv.double().transformed_weight_cache == {}  # moved or converted: transformed again
    with torch.enable_grad():
        trainable = nn.Conv2d(128, 8, 3, padding=1)
        use_winograd(trainable, 4)
        trainable(x)
    assert trainable.transformed_weight_cache == {}  # a weight that needs a gradient is transformed per call
