"""Mask R-CNN parity with torchvision's maskrcnn_resnet50_fpn: same weights, same images -> the same
detections, the same masks (IoU >= 0.99 per instance) and the same training losses, ``loss_mask`` included."""
from __future__ import annotations

import re

import pytest
import torch
from torch.nn import functional as F

from raydet.models.torchvision_weights import (
    COCO_CATEGORY_IDS,
    convert_torchvision_state_dict,
    load_torchvision_detector,
)
from tests.torchvision_reference import (
    NUM_CLASSES,
    assert_same_detections,
    converted_pair,
    preprocess,
    raydet_model,
)

MIN_SIZE, MAX_SIZE = 128, 256
IMAGE_SIZES = [(100, 200), (120, 150)]  # resized to 128x256 and 128x160, padded to 128x256
GT_BOXES = [torch.tensor([[10.0, 20.0, 80.0, 90.0], [30.0, 5.0, 60.0, 60.0], [120.0, 30.0, 190.0, 95.0]]),
            torch.tensor([[50.0, 40.0, 140.0, 110.0]])]
GT_LABELS = [torch.tensor([1, 3, 0]), torch.tensor([4])]
LOSS_NAMES = {"loss_objectness": "loss_rpn_cls", "loss_rpn_box_reg": "loss_rpn_bbox", "loss_classifier": "loss_cls",
              "loss_box_reg": "loss_bbox", "loss_mask": "loss_mask"}


def ellipse_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 ``[N, height, width]``: the ellipse inscribed in each box (a shape that is not its box)."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    radius_x, radius_y = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
    inside = (((xs - centre_x[:, None, None]) / radius_x[:, None, None]) ** 2
              + ((ys - centre_y[:, None, None]) / radius_y[:, None, None]) ** 2) <= 1
    return inside.to(torch.uint8)


def resize_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision's training transform of ``[N, height, width]`` masks (nearest, same scale as the image)."""
    scale = min(MIN_SIZE / min(height, width), MAX_SIZE / max(height, width))
    return F.interpolate(masks[:, None].float(), scale_factor=scale, recompute_scale_factor=True)[:, 0].byte()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-instance IoU of bool ``[K, H, W]`` masks (1 where both are empty)."""
    intersection = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


@pytest.fixture(scope="module")
def pair():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the kernels' rounding depends on the thread count
    reference, model = converted_pair("maskrcnn", MIN_SIZE, MAX_SIZE)
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, h, w, generator=generator) for h, w in IMAGE_SIZES]
    yield reference, model, images
    torch.set_num_threads(threads)


@pytest.mark.timeout(120)
def test_simple_test_gives_torchvisions_detections_and_masks(pair):
    reference, model, images = pair
    batch, metas, _ = preprocess(images, MIN_SIZE, MAX_SIZE)
    reference.eval()
    model.eval()
    with torch.no_grad():
        expected = reference(images)
        actual = model.simple_test(batch, metas, rescale=True)
    for want, got, (height, width) in zip(expected, actual, IMAGE_SIZES, strict=True):
        assert len(want["boxes"]) >= 50 and len(want["labels"].unique()) > 1
        matches = assert_same_detections(want, got, label_offset=1)
        assert got["masks"].dtype == torch.bool and got["masks"].shape == (len(got["boxes"]), height, width)
        want_masks = want["masks"][:, 0] >= 0.5  # torchvision: probabilities pasted in the original image
        assert int(want_masks.flatten(1).any(1).sum()) >= 50  # enough non-empty masks to compare
        iou = mask_iou(want_masks, got["masks"][matches])
        assert float(iou.min()) >= 0.99, iou


@pytest.mark.timeout(120)
def test_training_losses_equal_torchvisions(pair):
    """Both models re-seeded where their sampling starts (see test_parity); the ground-truth
    masks are ellipses, given to torchvision in the original image and to raydet resized as
    torchvision's transform resizes them."""
    reference, model, images = pair
    batch, metas, gt_bboxes = preprocess(images, MIN_SIZE, MAX_SIZE, GT_BOXES)
    masks = [ellipse_masks(boxes, h, w) for boxes, (h, w) in zip(GT_BOXES, IMAGE_SIZES)]
    gt_masks = [resize_masks(image_masks, h, w) for image_masks, (h, w) in zip(masks, IMAGE_SIZES)]
    assert [m.shape[-2:] for m in gt_masks] == [meta["img_shape"] for meta in metas]
    targets = [{"boxes": boxes, "labels": labels + 1, "masks": image_masks}
               for boxes, labels, image_masks in zip(GT_BOXES, GT_LABELS, masks)]
    reference.train()
    model.train()
    seed = 123

    def reseed(*_) -> None:
        torch.manual_seed(seed)

    hook = reference.rpn.register_forward_pre_hook(reseed)
    try:
        with torch.no_grad():
            expected = reference(images, targets)
            reseed()
            actual = model(batch, metas, gt_bboxes, GT_LABELS, gt_masks=gt_masks)
    finally:
        hook.remove()
    assert {k for k in actual if "loss" in k} == set(LOSS_NAMES.values())
    assert set(expected) == set(LOSS_NAMES)  # each loss compared below
    for name, value in expected.items():
        assert float(value) > 1e-3
        torch.testing.assert_close(actual[LOSS_NAMES[name]], value, rtol=1e-5, atol=1e-6, msg=name)
    # The comparison can fail: the mask loss follows the masks (every positive RoI is trained on
    # here, whatever the seed), the filled boxes give another one.
    boxes_as_masks = [torch.zeros_like(image_masks) for image_masks in gt_masks]
    for image_masks, boxes in zip(boxes_as_masks, gt_bboxes):
        for mask, (x1, y1, x2, y2) in zip(image_masks, boxes.round().int().tolist()):
            mask[y1:y2, x1:x2] = 1
    reseed()
    with torch.no_grad():
        filled = model(batch, metas, gt_bboxes, GT_LABELS, gt_masks=boxes_as_masks)
    assert abs(float(filled["loss_mask"]) - float(actual["loss_mask"])) > 1e-3
    torch.testing.assert_close(filled["loss_cls"], actual["loss_cls"])


def old_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's keys before 0.13 (the layout of its COCO checkpoint): ``mask_head.mask_fcn<i+1>.*``."""
    return {re.sub(r"mask_head\.(\d+)\.0\.", lambda m: f"mask_head.mask_fcn{int(m[1]) + 1}.", key): value
            for key, value in state.items()}


@pytest.mark.timeout(60)
def test_converter_maps_mask_head_keys_of_both_layouts(pair):
    reference, model, _ = pair
    state = reference.state_dict()
    assert "roi_heads.mask_head.mask_fcn1.weight" in old_layout(state)
    for layout in (state, old_layout(state)):
        converted = convert_torchvision_state_dict(layout, "maskrcnn")
        assert converted.keys() == model.state_dict().keys()
    converted = convert_torchvision_state_dict(old_layout(state), "maskrcnn")
    torch.testing.assert_close(converted["roi_head.mask_head.convs.3.conv.weight"],
                               state["roi_heads.mask_head.3.0.weight"])
    torch.testing.assert_close(converted["roi_head.mask_head.upsample.weight"],
                               state["roi_heads.mask_predictor.conv5_mask.weight"])
    # the mask logits lose torchvision's background channel 0, like the classifier
    torch.testing.assert_close(converted["roi_head.mask_head.conv_logits.weight"],
                               state["roi_heads.mask_predictor.mask_fcn_logits.weight"][1:])


@pytest.mark.timeout(120)
def test_coco_checkpoint_classes_map_onto_80_and_other_classes_keep_their_init():
    import torchvision

    torch.manual_seed(0)
    coco = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    model = raydet_model("maskrcnn", num_classes=80)
    missing = load_torchvision_detector(model, old_layout(coco))
    assert missing == []
    torch.testing.assert_close(model.roi_head.mask_head.conv_logits.bias,
                               coco["roi_heads.mask_predictor.mask_fcn_logits.bias"][COCO_CATEGORY_IDS])
    other = raydet_model("maskrcnn", num_classes=NUM_CLASSES)
    initial_logits = other.roi_head.mask_head.conv_logits.weight.clone()
    missing = load_torchvision_detector(other, coco)
    assert {k.rsplit(".", 1)[0] for k in missing} == {
        "roi_head.bbox_head.fc_cls", "roi_head.bbox_head.fc_reg", "roi_head.mask_head.conv_logits"}
    assert torch.equal(other.roi_head.mask_head.conv_logits.weight, initial_logits)
    torch.testing.assert_close(other.roi_head.mask_head.upsample.weight,
                               coco["roi_heads.mask_predictor.conv5_mask.weight"])
