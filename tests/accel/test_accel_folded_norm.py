"""``accel.fold_norm``: a convolution and the frozen / eval-mode BatchNorm after it computed as one
convolution is the pair's function, forward and backward; a ResNet folded keeps its state_dict and outputs;
the tests see that the folded path ran."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from raydet.accel import folded_norm
from raydet.accel.folded_norm import FoldedAwayNorm, NormFoldingConv2d, fold_conv_norm_pairs, fold_pair
from raydet.models.backbones import ResNet
from tests.accel.accel_helpers import assert_same_function, gradients, record_calls

pytestmark = pytest.mark.timeout(120)


def random_norm(kind: str, channels: int) -> nn.Module:
    norm = FrozenBatchNorm2d(channels) if kind == "FrozenBN" else nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            getattr(norm, name).copy_(torch.randn(channels))
        norm.running_var.copy_(torch.rand(channels) + 0.5)
    return norm.double()


@pytest.mark.parametrize("kind", ["FrozenBN", "BN-eval"])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_folded_conv_norm_is_conv_then_norm_forward_and_backward(kind, conv_bias, monkeypatch):
    folds = record_calls(monkeypatch, folded_norm, "folded_parameters")
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=conv_bias).double()
    norm = random_norm(kind, 6)
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64, requires_grad=True)
    inputs = [x, *conv.parameters(), *norm.parameters()]
    expected = norm(conv(x))
    fold_pair(conv, norm)  # the same modules and parameters, folded
    actual = norm(conv(x))
    assert isinstance(conv, NormFoldingConv2d) and isinstance(norm, FoldedAwayNorm) and len(folds) == 1
    assert_same_function(actual, expected, inputs, atol=1e-12)


def test_batchnorm_in_train_mode_is_not_folded(monkeypatch):
    folds = record_calls(monkeypatch, folded_norm, "folded_parameters")
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4).train()
    reference_conv, reference_norm = copy.deepcopy(conv), copy.deepcopy(norm)
    fold_pair(conv, norm)
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(norm(conv(x)), reference_norm(reference_conv(x)))
    assert torch.equal(norm.running_mean, reference_norm.running_mean)  # its statistics were updated, once
    assert folds == []
    norm.eval()
    torch.testing.assert_close(norm(conv(x)), reference_norm.eval()(reference_conv(x)))
    assert len(folds) == 1  # in eval mode it folds


def test_folded_weights_are_kept_until_a_tensor_changes():
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(3, 4, 3, padding=1, bias=False).requires_grad_(False), FrozenBatchNorm2d(4)
    fold_pair(conv, norm)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        conv(x)
        cached = conv.folded_parameters_cache[1]
        conv(x)
        assert conv.folded_parameters_cache[1] is cached  # unchanged tensors: reused
        norm.load_state_dict({"weight": torch.full((4,), 2.0), "bias": torch.ones(4), "running_mean": torch.zeros(4),
                              "running_var": torch.ones(4)})
        expected = FrozenBatchNorm2d.forward(norm, nn.Conv2d.forward(conv, x))  # the unfolded pair
        torch.testing.assert_close(norm(conv(x)), expected)
        conv.weight.add_(1.0)
        expected = FrozenBatchNorm2d.forward(norm, nn.Conv2d.forward(conv, x))
        torch.testing.assert_close(norm(conv(x)), expected)
    assert copy.deepcopy(conv).folded_parameters_cache is None
    assert conv.double().folded_parameters_cache is None  # moved or converted: folded again


def test_resnet_folding_keeps_its_state_dict_checkpoints_and_outputs(tmp_path, monkeypatch):
    folds = record_calls(monkeypatch, folded_norm, "folded_parameters")
    torch.manual_seed(0)
    folding = ResNet(depth=18, norm="FrozenBN", frozen_stages=1)
    plain = ResNet(depth=18, norm="FrozenBN", frozen_stages=1)
    state_dict_keys = list(folding.state_dict())
    assert fold_conv_norm_pairs(folding) == 1 + 8 * 2 + 3  # the stem, two per block, three downsample branches
    with torch.no_grad():
        for module in folding.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    assert list(folding.state_dict()) == state_dict_keys == list(plain.state_dict())
    torch.save(folding.state_dict(), tmp_path / "folding.pth")
    plain.load_state_dict(torch.load(tmp_path / "folding.pth"), strict=True)  # a folding model's checkpoint
    folding.load_state_dict(plain.state_dict(), strict=True)  # … and back
    folding.double()  # moved: folded again
    plain.double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    # every pair folds: the 15 trainable ones per call, the 5 frozen ones (stem, layer1) once, then from the cache
    for mode, computed_folds in (("train", 20), ("eval", 15)):
        folding.train(mode == "train")
        plain.train(mode == "train")
        folds.clear()
        outs = folding(x)
        assert len(folds) == computed_folds
        expected = plain(x)
        for got, want in zip(outs, expected):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        grad_folding = gradients(sum(o.sum() for o in outs), [p for p in folding.parameters() if p.requires_grad],
                                 torch.ones((), dtype=torch.float64))
        grad_plain = gradients(sum(o.sum() for o in expected), [p for p in plain.parameters() if p.requires_grad],
                               torch.ones((), dtype=torch.float64))
        for got, want in zip(grad_folding, grad_plain):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
