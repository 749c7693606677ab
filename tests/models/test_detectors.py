"""The Detector API on the tiny detectors: training steps, empty images, rescaling, flips, TTA, learning."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from raydet.builder import build_model
from raydet.config import load_config
from raydet.models.detectors import boxes_to_original
from tests.helpers import REPO

NUM_CLASSES = 3
HEAD = {"retinanet": "bbox_head", "fcos": "bbox_head", "faster_rcnn": "roi_head"}
LOSSES = {"retinanet": {"loss_cls", "loss_bbox"}, "fcos": {"loss_cls", "loss_bbox", "loss_centerness"},
          "faster_rcnn": {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"}}
ARCHS = list(HEAD)


def tiny_detector(arch: str, *overrides: str, seed: int = 0) -> torch.nn.Module:
    num_classes_path = "roi_head.bbox_head" if arch == "faster_rcnn" else "bbox_head"
    config = load_config(REPO / f"configs/_base_/models/{arch}_tiny.yaml",
                         [f"model.{num_classes_path}.num_classes={NUM_CLASSES}", *overrides])
    torch.manual_seed(seed)
    return build_model(config)


def meta(height: int, width: int, pad: tuple[int, int], scale: float = 1.0, flip: bool = False) -> dict:
    return {"ori_shape": (round(height / scale), round(width / scale)), "img_shape": (height, width), "pad_shape": pad,
            "scale_factor": [scale] * 4, "flip": flip, "flip_direction": "horizontal" if flip else None, "image_id": 0}


def batch_of_two(seed: int = 0):
    """A 2-image batch (the second image smaller, padded) with one image's boxes empty."""
    generator = torch.Generator().manual_seed(seed)
    img = torch.randn(2, 3, 160, 192, generator=generator)
    img[1, :, 128:, :] = 0
    img[1, :, :, 160:] = 0
    metas = [meta(160, 192, (160, 192)), meta(128, 160, (160, 192))]
    gt_bboxes = [torch.tensor([[10.0, 20.0, 90.0, 100.0], [100.0, 30.0, 180.0, 150.0]]), torch.zeros(0, 4)]
    gt_labels = [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.int64)]
    return img, metas, gt_bboxes, gt_labels


@pytest.mark.timeout(60)
@pytest.mark.parametrize("arch", ARCHS)
def test_train_step_gives_the_named_losses_and_gradients_everywhere(arch):
    model = tiny_detector(arch).train()
    losses = model(*batch_of_two())
    assert {k for k in losses if "loss" in k} == LOSSES[arch]
    assert all(torch.isfinite(v) for v in losses.values())
    sum(v for k, v in losses.items() if "loss" in k).backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_grad == []  # DDP needs a gradient for every parameter


@pytest.mark.timeout(60)
@pytest.mark.parametrize("arch", ARCHS)
def test_a_batch_without_any_object_trains_without_nan(arch):
    model = tiny_detector(arch).train()
    img, metas, _, _ = batch_of_two()
    losses = model(img, metas, [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.int64)] * 2)
    total = sum(v for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total) and float(total.detach()) > 0  # the background still teaches the classifier
    total.backward()
    assert any(p.grad is not None for p in model.parameters())  # the background's loss reached the model
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("arch", ARCHS)
def test_simple_test_output_and_rescaling(arch):
    model = tiny_detector(arch, f"model.{HEAD[arch]}.score_thr=0.0").eval()
    img, metas, _, _ = batch_of_two()
    metas = [dict(m, scale_factor=[0.5, 0.25, 0.5, 0.25], ori_shape=(m["img_shape"][0] * 4, m["img_shape"][1] * 2))
             for m in metas]
    with torch.no_grad():
        resized = model.simple_test(img, metas, rescale=False)
        original = model.simple_test(img, metas, rescale=True)
        dispatched = model(img, metas, return_loss=False)
    for result, rescaled, via_forward, m in zip(resized, original, dispatched, metas, strict=True):
        assert set(result) == {"boxes", "scores", "labels"}
        assert len(result["boxes"]) > 0 and result["labels"].dtype == torch.int64
        assert (result["labels"] >= 0).all() and (result["labels"] < NUM_CLASSES).all()
        assert (result["boxes"][:, 2] <= m["img_shape"][1]).all() and (result["boxes"][:, 3] <= m["img_shape"][0]).all()
        torch.testing.assert_close(rescaled["boxes"], result["boxes"] / torch.tensor([0.5, 0.25, 0.5, 0.25]))
        torch.testing.assert_close(via_forward["boxes"], rescaled["boxes"])


def test_boxes_to_original_undoes_flip_then_scale():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    flipped = meta(100, 200, (128, 224), scale=2.0, flip=True)
    assert boxes_to_original(boxes, flipped).tolist() == [[85.0, 10.0, 95.0, 20.0]]
    assert boxes_to_original(boxes, meta(100, 200, (128, 224), scale=2.0)).tolist() == [[5.0, 10.0, 15.0, 20.0]]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_flip_meta_maps_boxes_back(arch):
    model = tiny_detector(arch, f"model.{HEAD[arch]}.score_thr=0.0").eval()
    img = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        plain = model.simple_test(img, [meta(128, 160, (128, 160))])[0]
        unflipped = model.simple_test(img, [meta(128, 160, (128, 160), flip=True)])[0]
    expected = torch.stack([160 - plain["boxes"][:, 2], plain["boxes"][:, 1], 160 - plain["boxes"][:, 0],
                            plain["boxes"][:, 3]], dim=1)
    torch.testing.assert_close(unflipped["boxes"], expected)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("arch", ARCHS)
def test_aug_test_merges_augmentations(arch):
    model = tiny_detector(arch, f"model.{HEAD[arch]}.score_thr=0.0").eval()
    if arch == "fcos":  # untrained, it predicts zero distances (empty boxes, which NMS cannot compare)
        torch.nn.init.constant_(model.bbox_head.conv_reg.bias, 1.0)
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(1, 3, 128, 160, generator=generator)
    flipped = image.flip(-1)
    small = torch.nn.functional.interpolate(image, scale_factor=0.5, mode="bilinear")
    with torch.no_grad():
        single = model.simple_test(image, [meta(128, 160, (128, 160))])[0]
        same_twice = model.aug_test([image, image], [[meta(128, 160, (128, 160))]] * 2)[0]
        merged = model.aug_test([image, flipped, small], [[meta(128, 160, (128, 160))],
                                                          [meta(128, 160, (128, 160), flip=True)],
                                                          [meta(64, 80, (64, 96), scale=0.5)]])[0]
        flipped_alone = model.simple_test(flipped, [meta(128, 160, (128, 160), flip=True)])[0]
    # a duplicate augmentation is removed by the merging NMS
    assert len(same_twice["boxes"]) == len(single["boxes"])
    torch.testing.assert_close(same_twice["scores"], single["scores"])
    # the merged set holds the best detection of each augmentation, in original-image pixels
    assert len(merged["boxes"]) <= model.final_head.max_per_img
    assert (merged["boxes"][:, 2] <= 160 + 1e-3).all() and (merged["boxes"][:, 3] <= 128 + 1e-3).all()
    for result in (single, flipped_alone):
        best = result["boxes"][result["scores"].argmax()]
        assert box_iou(best[None], merged["boxes"]).max() > 0.99


@pytest.mark.timeout(120)
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_detector_learns_two_images(arch):
    """A few dozen steps on two images: the losses fall and the objects are found."""
    model = tiny_detector(arch).train()
    img, metas, gt_bboxes, gt_labels = batch_of_two(seed=5)
    img[0, :, 20:100, 10:90] += 2.0  # make the objects visible
    img[0, :, 30:150, 100:180] -= 2.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        losses = model(img, metas, gt_bboxes, gt_labels)
        total = sum(v for k, v in losses.items() if "loss" in k)
        first = float(total.detach()) if first is None else first
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert float(total.detach()) < 0.5 * first
    model.eval()
    with torch.no_grad():
        result = model.simple_test(img[:1], metas[:1])[0]
    for box, label in zip(gt_bboxes[0], gt_labels[0]):
        same_class = result["boxes"][result["labels"] == label]
        assert len(same_class) and box_iou(box[None], same_class).max() > 0.5, (arch, box, result)
