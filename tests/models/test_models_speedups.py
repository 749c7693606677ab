"""raydet's speed options compute the functions they replace (up to rounding), forward and backward:
Winograd convolutions (``model.winograd``), conv + frozen / eval-mode BatchNorm folded into one
convolution (``model.backbone.fold_norm``), RoIAlign as a weighted gather
(``model.roi_head.bbox_roi_extractor.gather_roi_align``), channels-last feature maps in eval mode
(``model.channels_last``); and a detector with them on gives the outputs it gives with them off."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import FrozenBatchNorm2d, roi_align
from torchvision_reference import REPO

from raydet.builder import build_model
from raydet.config import ConfigError, load_config
from raydet.models import winograd
from raydet.models.backbones import ResNet
from raydet.models.folded_norm import ConvNormFolder
from raydet.models.roi_heads import SingleRoIExtractor
from raydet.models.roi_heads.gather_roi_align import gather_roi_align
from raydet.models.winograd import WinogradConvolutions, output_tile, winograd_conv2d

pytestmark = pytest.mark.timeout(120)


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


# --- Winograd convolutions -------------------------------------------------------------------------------


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


def test_winograd_mode_takes_only_the_convolutions_that_gain(monkeypatch):
    taken = []

    def spy(x, weight, bias=None, m=4):
        taken.append((tuple(x.shape), m))
        return F.conv2d(x, weight, bias, padding=1)

    monkeypatch.setattr(winograd, "winograd_conv2d", spy)
    torch.manual_seed(0)
    cases = [  # (conv, input, the tile it takes or None)
        (nn.Conv2d(128, 8, 3, padding=1), torch.randn(1, 128, 24, 24), 4),
        (nn.Conv2d(128, 8, 3, padding=1), torch.randn(1, 128, 16, 16), None),  # too small for 128 channels
        (nn.Conv2d(256, 8, 3, padding=1), torch.randn(1, 256, 16, 16), 2),  # small: F(2x2) without gradients
        (nn.Conv2d(128, 8, 3, stride=2, padding=1), torch.randn(1, 128, 48, 48), None),
        (nn.Conv2d(128, 8, 1), torch.randn(1, 128, 48, 48), None),
        (nn.Conv2d(128, 8, 3), torch.randn(1, 128, 48, 48), None),  # no padding
        (nn.Conv2d(128, 8, 3, padding=1, dilation=1, groups=2), torch.randn(1, 128, 48, 48), None),
        (nn.Conv2d(128, 8, 3, padding=1).double(), torch.randn(1, 128, 48, 48, dtype=torch.float64), None),
    ]
    with torch.no_grad(), WinogradConvolutions(4):
        for conv, x, _ in cases:
            conv(x)
    assert taken == [(tuple(x.shape), tile) for _, x, tile in cases if tile is not None]
    conv = nn.Conv2d(256, 8, 3, padding=1)
    assert output_tile(torch.randn(1, 256, 16, 16), conv.weight, padding=1) is None  # trainable: large maps only
    assert output_tile(torch.randn(1, 256, 32, 32), conv.weight, padding=1, largest=2) == 2


def test_winograd_mode_trains_like_the_direct_convolution():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 4, 3, padding=1))
    x = torch.randn(2, 128, 28, 28)
    expected = net(x).square().mean()
    want = gradients(expected, list(net.parameters()), torch.ones(()))
    with WinogradConvolutions(4):
        actual = net(x).square().mean()
    got = gradients(actual, list(net.parameters()), torch.ones(()))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-4 * float(w.abs().max()))


def test_winograd_keeps_the_transformed_weights_only_while_they_are_unchanged():
    torch.manual_seed(0)
    x = torch.randn(1, 128, 24, 24)
    weight = torch.randn(8, 128, 3, 3)
    with torch.no_grad():
        first = winograd_conv2d(x, weight)
        assert torch.equal(winograd_conv2d(x, weight), first)  # from the cache
        weight.mul_(2)  # in place: a new version
        torch.testing.assert_close(winograd_conv2d(x, weight), 2 * first)
        weight.copy_(torch.randn(8, 128, 3, 3))
        expected = F.conv2d(x, weight, padding=1)
        torch.testing.assert_close(winograd_conv2d(x, weight), expected, rtol=0,
                                   atol=1e-4 * float(expected.abs().max()))


# --- conv + BatchNorm folding ----------------------------------------------------------------------------


def random_norm(kind: str, channels: int) -> nn.Module:
    norm = FrozenBatchNorm2d(channels) if kind == "FrozenBN" else nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            getattr(norm, name).copy_(torch.randn(channels))
        norm.running_var.copy_(torch.rand(channels) + 0.5)
    return norm.double()


@pytest.mark.parametrize("kind", ["FrozenBN", "BN-eval"])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_folded_conv_norm_is_conv_then_norm_forward_and_backward(kind, conv_bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=conv_bias).double()
    norm = random_norm(kind, 6)
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64, requires_grad=True)
    inputs = [x, *conv.parameters(), *norm.parameters()]
    expected = norm(conv(x))
    actual = ConvNormFolder()("conv", conv, norm, x)
    assert_same_function(actual, expected, inputs, atol=1e-12)


def test_batchnorm_in_train_mode_is_not_folded():
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4).train()
    reference_norm = copy.deepcopy(norm)
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(ConvNormFolder()("conv", conv, norm, x), reference_norm(conv(x)))
    assert torch.equal(norm.running_mean, reference_norm.running_mean)  # its statistics were updated, once


def test_folded_weights_are_kept_until_a_tensor_changes():
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(3, 4, 3, padding=1, bias=False).requires_grad_(False), FrozenBatchNorm2d(4)
    folder = ConvNormFolder()
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        folder("conv", conv, norm, x)
        cached = folder._cache["conv"][1]
        folder("conv", conv, norm, x)
        assert folder._cache["conv"][1] is cached  # unchanged tensors: reused
        norm.load_state_dict({"weight": torch.full((4,), 2.0), "bias": torch.ones(4), "running_mean": torch.zeros(4),
                              "running_var": torch.ones(4)})
        torch.testing.assert_close(folder("conv", conv, norm, x), norm(conv(x)))
        conv.weight.add_(1.0)
        torch.testing.assert_close(folder("conv", conv, norm, x), norm(conv(x)))
    assert copy.deepcopy(folder)._cache == {}


def test_resnet_folding_keeps_its_state_dict_checkpoints_and_outputs(tmp_path):
    torch.manual_seed(0)
    folding = ResNet(depth=18, norm="FrozenBN", frozen_stages=1, fold_norm=True)
    plain = ResNet(depth=18, norm="FrozenBN", frozen_stages=1, fold_norm=False)
    with torch.no_grad():
        for module in folding.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    assert list(folding.state_dict()) == list(plain.state_dict())
    torch.save(folding.state_dict(), tmp_path / "folding.pth")
    plain.load_state_dict(torch.load(tmp_path / "folding.pth"), strict=True)  # a folding model's checkpoint
    folding.load_state_dict(plain.state_dict(), strict=True)  # … and back
    folding.double()  # moved: folded again
    plain.double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for mode in ("train", "eval"):
        folding.train(mode == "train")
        plain.train(mode == "train")
        outs = folding(x)
        expected = plain(x)
        for got, want in zip(outs, expected):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        grad_folding = gradients(sum(o.sum() for o in outs), [p for p in folding.parameters() if p.requires_grad],
                                 torch.ones((), dtype=torch.float64))
        grad_plain = gradients(sum(o.sum() for o in expected), [p for p in plain.parameters() if p.requires_grad],
                               torch.ones((), dtype=torch.float64))
        for got, want in zip(grad_folding, grad_plain):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


# --- RoIAlign as a gather --------------------------------------------------------------------------------


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("images", [1, 2])
def test_gather_roi_align_is_torchvisions_forward_and_backward(aligned, sampling_ratio, images):
    torch.manual_seed(0)
    feat = torch.randn(images, 5, 11, 13, dtype=torch.float64, requires_grad=True)
    corners = torch.rand(40, 2, dtype=torch.float64) * torch.tensor([13 * 8.0, 11 * 8.0], dtype=torch.float64) - 16
    sizes = torch.rand(40, 2, dtype=torch.float64) * 60
    sizes[:4] = 0.3  # smaller than a cell
    rois = torch.cat([torch.randint(0, images, (40, 1)).double(), corners, corners + sizes], dim=1)
    rois[4] = torch.tensor([0, 200.0, 200.0, 260.0, 250.0])  # outside the map
    expected = roi_align(feat, rois, (7, 7), 0.125, sampling_ratio, aligned)
    actual = gather_roi_align(feat, rois, (7, 7), 0.125, sampling_ratio, aligned)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)
    grad = torch.randn_like(expected)
    torch.testing.assert_close(gradients(actual, [feat], grad)[0], gradients(expected, [feat], grad)[0],
                               rtol=0, atol=1e-12)


def test_gather_roi_align_takes_no_rois_and_refuses_adaptive_sampling():
    feat = torch.randn(1, 3, 8, 8)
    assert gather_roi_align(feat, torch.zeros(0, 5), (7, 7), 0.5, 2).shape == (0, 3, 7, 7)
    with pytest.raises(ValueError, match="sampling_ratio > 0"):
        gather_roi_align(feat, torch.zeros(1, 5), (7, 7), 0.5, 0)


def test_roi_extractor_gathers_torchvisions_features():
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, 64 // s, 64 // s, requires_grad=True) for s in (4, 8, 16, 32)]
    boxes = torch.rand(60, 2) * 40
    sizes = torch.exp(torch.empty(60, 2).uniform_(1.5, 7.0))  # 4 .. 1100 px: every level gets RoIs
    rois = torch.cat([torch.randint(0, 2, (60, 1)).float(), boxes, boxes + sizes], dim=1)
    gathered = SingleRoIExtractor([4, 8, 16, 32], gather_roi_align=True)(feats, rois)
    expected = SingleRoIExtractor([4, 8, 16, 32], gather_roi_align=False)(feats, rois)
    assert_same_function(gathered, expected, feats, atol=1e-5, rtol=1e-5)


# --- detectors -------------------------------------------------------------------------------------------

CONFIGS = {"retinanet": "retinanet_r50_fpn", "fcos": "fcos_r50_fpn", "fasterrcnn": "faster_rcnn_r50_fpn"}
HEADS = {"retinanet": "bbox_head", "fcos": "bbox_head", "fasterrcnn": "roi_head.bbox_head"}
SPEED_OFF = ["model.winograd=0", "model.backbone.fold_norm=false", "model.channels_last=false"]


def detector(arch: str, *overrides: str) -> nn.Module:
    return build_model(load_config(REPO / f"configs/_base_/models/{CONFIGS[arch]}.yaml", [
        f"model.{HEADS[arch]}.num_classes=5", "model.backbone.init_cfg=null", *overrides]))


def test_speed_options_are_on_in_the_r50_configs_and_checked():
    model = detector("fasterrcnn")
    assert model.winograd == 4 and model.channels_last and model.backbone.fold_norm
    assert model.roi_head.bbox_roi_extractor.gather_roi_align
    with pytest.raises(ConfigError, match=r"model.winograd: expected Literal\[0, 2, 4\], got 3"):
        detector("retinanet", "model.winograd=3")


@pytest.mark.parametrize("arch", ["retinanet", "fcos", "fasterrcnn"])
def test_speed_options_change_a_detector_only_by_rounding(arch):
    """The configs' set-up (FrozenBN with statistics, stem and layer1 frozen) on a 256x256 image, where
    Winograd takes the FPN and head convolutions: the pyramid, the heads' outputs and the losses (for
    Faster R-CNN the RoI head on fixed proposals: proposals pass thresholds and NMS) match."""
    torch.manual_seed(0)
    fast = detector(arch)
    with torch.no_grad():
        for module in fast.backbone.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    exact = detector(arch, *SPEED_OFF, *(["model.roi_head.bbox_roi_extractor.gather_roi_align=false"]
                                         if arch == "fasterrcnn" else []))
    exact.load_state_dict(fast.state_dict(), strict=True)
    img = torch.randn(1, 3, 256, 256)
    metas = [{"img_shape": (256, 256), "pad_shape": (256, 256), "scale_factor": [1.0] * 4, "flip": False}]
    gt_bboxes, gt_labels = [torch.tensor([[30.0, 40.0, 120.0, 150.0], [100.0, 20.0, 250.0, 90.0]])], [
        torch.tensor([1, 3])]

    proposals = [torch.tensor([[10.0, 10.0, 90.0, 120.0], [50.0, 30.0, 240.0, 100.0], [0.0, 0.0, 255.0, 255.0],
                               [120.0, 140.0, 140.0, 150.0]])]

    def head_outputs(model: nn.Module, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if arch != "fasterrcnn":
            return [*feats, *sum(model.bbox_head(feats), [])]
        rois = model.roi_head.to_rois(proposals)
        return [*feats, *sum(model.rpn_head(feats), []),
                *model.roi_head.bbox_head(model.roi_head.bbox_roi_extractor(feats, rois))]

    def outputs(model: nn.Module) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        model.eval()  # channels_last is on in eval mode only
        with torch.no_grad(), model.convolutions():
            evaluated = head_outputs(model, model.extract_feat(img))
        model.train()
        with model.convolutions():
            feats = model.extract_feat(img)
            trained = head_outputs(model, feats)
            torch.manual_seed(1)
            if arch == "fasterrcnn":
                losses = model.rpn_head.loss(*model.rpn_head(feats), torch.cat(model.rpn_head.priors(feats)),
                                             gt_bboxes)
                losses.update(model.roi_head.forward_train(feats, proposals, metas, gt_bboxes, gt_labels))
            else:
                losses = model.bbox_head.forward_train(feats, metas, gt_bboxes, gt_labels)
        return evaluated + trained, losses

    fast_outputs, fast_losses = outputs(fast)
    exact_outputs, exact_losses = outputs(exact)
    assert fast_outputs[0].is_contiguous(memory_format=torch.channels_last)  # eval-mode feature maps
    for got, want in zip(fast_outputs, exact_outputs):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(want.detach().abs().max()))
    for name, value in exact_losses.items():
        torch.testing.assert_close(fast_losses[name], value, rtol=1e-4, atol=1e-6, msg=name)
    # Gradients pass ReLUs and thresholds whose side a rounding can flip: perturbing the input by 1e-7
    # (relative) moves the exact model's gradients by up to 0.7% (L2, FCOS's backbone), as these options do.
    trainable = [name for name, p in exact.named_parameters() if p.requires_grad]
    grads = [torch.autograd.grad(sum(v for k, v in losses.items() if "loss" in k),
                                 [dict(model.named_parameters())[n] for n in trainable], allow_unused=True)
             for model, losses in ((fast, fast_losses), (exact, exact_losses))]
    pairs = [(name, got, want) for name, got, want in zip(trainable, *grads) if want is not None]
    for name, got, want in pairs:
        assert float((got - want).norm()) <= 5e-2 * float(want.norm()), name
    total = sum(float((got - want).square().sum()) for _, got, want in pairs) ** 0.5
    assert total <= 1e-2 * sum(float(want.square().sum()) for _, _, want in pairs) ** 0.5
