"""The r50 configs' speed paths (``accel:``) applied to a detector change its outputs, losses and gradients
only by rounding, against the same weights as built; and each path the config turns on actually ran."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from raydet.accel import apply_accel, folded_norm, gather_roi_align, winograd_conv
from raydet.builder import build_model
from raydet.config import load_config
from raydet.config.parsed import parse_config
from tests.accel.accel_helpers import record_calls
from tests.torchvision_reference import REPO

CONFIGS = {"retinanet": "retinanet_r50_fpn", "fcos": "fcos_r50_fpn", "fasterrcnn": "faster_rcnn_r50_fpn",
           "maskrcnn": "mask_rcnn_r50_fpn"}
CLASSES = {"retinanet": ("bbox_head",), "fcos": ("bbox_head",), "fasterrcnn": ("roi_head.bbox_head",),
           "maskrcnn": ("roi_head.bbox_head", "roi_head.mask_head")}
IMG = (1, 3, 256, 256)
METAS = [{"ori_shape": (256, 256), "img_shape": (256, 256), "pad_shape": (256, 256), "scale_factor": [1.0] * 4,
          "flip": False, "flip_direction": None, "image_id": 0}]
GT_BBOXES = [torch.tensor([[30.0, 40.0, 120.0, 150.0], [100.0, 20.0, 250.0, 90.0]])]
GT_LABELS = [torch.tensor([1, 3])]
PROPOSALS = [torch.tensor([[10.0, 10.0, 90.0, 120.0], [50.0, 30.0, 240.0, 100.0], [25.0, 35.0, 125.0, 140.0],
                           [120.0, 140.0, 140.0, 150.0]])]


def exact_and_accelerated(arch: str) -> tuple[nn.Module, nn.Module]:
    """The r50 config's detector (5 classes, random weights; the configs' FrozenBN with drawn statistics,
    stem and layer1 frozen) twice with the same weights: as built, and with the config's ``accel:`` applied."""
    config = load_config(REPO / f"configs/_base_/models/{CONFIGS[arch]}.yaml",
                         [*(f"model.{head}.num_classes=5" for head in CLASSES[arch]), "model.backbone.init_cfg=null"])
    torch.manual_seed(0)
    exact = build_model(config)
    with torch.no_grad():
        for module in exact.backbone.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    accelerated = build_model(config)
    accelerated.load_state_dict(exact.state_dict(), strict=True)
    return exact, apply_accel(accelerated, parse_config(config).accel)


@pytest.fixture
def kernel_calls(monkeypatch) -> dict[str, list]:
    """The calls of each speed path's kernel while the test runs (a fold counts when it is computed, not
    when it comes from the cache)."""
    return {"winograd": record_calls(monkeypatch, winograd_conv, "winograd_conv2d"),
            "fold_norm": record_calls(monkeypatch, folded_norm, "folded_parameters"),
            "gather_roi_align": record_calls(monkeypatch, gather_roi_align, "gather_roi_align")}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("arch", ["retinanet", "fcos", "fasterrcnn"])
def test_speed_paths_change_a_detector_only_by_rounding(arch, kernel_calls):
    """On a 256x256 image, where Winograd takes the FPN and head convolutions: the pyramid, the heads'
    outputs and the losses (for Faster R-CNN the RoI head on fixed proposals: proposals pass thresholds
    and NMS) match, in eval and train mode; so do the gradients, to what a rounding can move them."""
    exact, fast = exact_and_accelerated(arch)
    img = torch.randn(*IMG)

    def head_outputs(model: nn.Module, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if arch != "fasterrcnn":
            return [*feats, *sum(model.bbox_head(feats), [])]
        rois = model.roi_head.to_rois(PROPOSALS)
        return [*feats, *sum(model.rpn_head(feats), []),
                *model.roi_head.bbox_head(model.roi_head.bbox_roi_extractor(feats, rois))]

    def outputs(model: nn.Module) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        model.eval()  # channels_last acts in eval mode only
        with torch.no_grad():
            evaluated = head_outputs(model, model.extract_feat(img))
        model.train()
        feats = model.extract_feat(img)
        trained = head_outputs(model, feats)
        torch.manual_seed(1)
        if arch == "fasterrcnn":
            losses = model.rpn_head.loss(*model.rpn_head(feats), torch.cat(model.rpn_head.priors(feats)), GT_BBOXES)
            losses.update(model.roi_head.forward_train(feats, PROPOSALS, METAS, GT_BBOXES, GT_LABELS))
        else:
            losses = model.bbox_head.forward_train(feats, METAS, GT_BBOXES, GT_LABELS)
        return evaluated + trained, losses

    fast_outputs, fast_losses = outputs(fast)
    assert all(kernel_calls[path] for path in ("winograd", "fold_norm")), "a speed path did not run"
    assert bool(kernel_calls["gather_roi_align"]) == (arch == "fasterrcnn")
    assert fast_outputs[0].is_contiguous(memory_format=torch.channels_last)  # eval-mode feature maps
    for calls in kernel_calls.values():
        calls.clear()
    exact_outputs, exact_losses = outputs(exact)
    assert not any(kernel_calls.values())  # the model as built takes none of them
    for got, want in zip(fast_outputs, exact_outputs):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(want.detach().abs().max()))
    for name, value in exact_losses.items():
        torch.testing.assert_close(fast_losses[name], value, rtol=1e-4, atol=1e-6, msg=name)
    # Gradients pass ReLUs and thresholds whose side a rounding can flip: perturbing the input by 1e-7
    # (relative) moves the exact model's gradients by up to 0.7% (L2, FCOS's backbone), as these paths do.
    trainable = [name for name, p in exact.named_parameters() if p.requires_grad]
    grads = [torch.autograd.grad(sum(v for k, v in losses.items() if "loss" in k),
                                 [dict(model.named_parameters())[n] for n in trainable], allow_unused=True)
             for model, losses in ((fast, fast_losses), (exact, exact_losses))]
    pairs = [(name, got, want) for name, got, want in zip(trainable, *grads) if want is not None]
    for name, got, want in pairs:
        assert float((got - want).norm()) <= 5e-2 * float(want.norm()), name
    total = sum(float((got - want).square().sum()) for _, got, want in pairs) ** 0.5
    assert total <= 1e-2 * sum(float(want.square().sum()) for _, _, want in pairs) ** 0.5


@pytest.mark.timeout(120)
def test_speed_paths_change_the_mask_branch_only_by_rounding(kernel_calls):
    """Mask R-CNN with its config's speed paths (RoIAlign as a gather in both extractors among them): the
    mask logits of fixed RoIs and the RoI head's losses, mask loss included, agree to rounding."""
    exact, fast = exact_and_accelerated("maskrcnn")
    img = torch.randn(*IMG)
    gt_masks = torch.zeros(2, 256, 256, dtype=torch.uint8)
    gt_masks[0, 60:130, 40:110] = 1
    gt_masks[1, 30:80, 120:240] = 1

    def outputs(model: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.eval()
        head = model.roi_head
        with torch.no_grad():
            feats = model.extract_feat(img)
            mask_logits = head.mask_head(head.mask_roi_extractor(feats, head.to_rois(PROPOSALS)))
        model.train()
        torch.manual_seed(1)
        with torch.no_grad():
            losses = head.forward_train(model.extract_feat(img), PROPOSALS, METAS, GT_BBOXES, GT_LABELS, [gt_masks])
        return mask_logits, losses

    fast_logits, fast_losses = outputs(fast)
    gathered_channels = {call[0].shape[1] for call in kernel_calls["gather_roi_align"]}
    assert kernel_calls["winograd"] and kernel_calls["fold_norm"] and gathered_channels == {256}
    assert {call[2] for call in kernel_calls["gather_roi_align"]} == {(14, 14), (7, 7)}  # both extractors
    exact_logits, exact_losses = outputs(exact)
    torch.testing.assert_close(fast_logits, exact_logits, rtol=0, atol=1e-4 * float(exact_logits.abs().max()))
    assert set(exact_losses) >= {"loss_cls", "loss_bbox", "loss_mask"}
    for name, value in exact_losses.items():
        torch.testing.assert_close(fast_losses[name], value, rtol=1e-4, atol=1e-6, msg=name)
