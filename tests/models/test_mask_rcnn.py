"""Mask R-CNN's parts and the Detector API with masks: targets, loss, head shapes, pasting into the
original image (flips of every direction undone), TTA, a detector without masks unchanged, refused batches."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from raydet.builder import build_model, check_config
from raydet.config import ConfigError, load_config
from raydet.models.detectors import detections_to_original
from raydet.models.losses import CrossEntropyLoss
from raydet.models.roi_heads import FCNMaskHead
from tests.helpers import REPO

NUM_CLASSES = 3
CLASSES = (f"model.roi_head.bbox_head.num_classes={NUM_CLASSES}", f"model.roi_head.mask_head.num_classes={NUM_CLASSES}")
DIRECTIONS = ["horizontal", "vertical", "diagonal"]


def tiny(name: str, *overrides: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(load_config(REPO / f"configs/_base_/models/{name}_tiny.yaml", list(overrides)))


def tiny_mask_rcnn(*overrides: str, seed: int = 0) -> torch.nn.Module:
    return tiny("mask_rcnn", *CLASSES, *overrides, seed=seed)


def meta(height: int, width: int, scale: float = 1.0, direction: str | None = None) -> dict:
    return {"ori_shape": (round(height / scale), round(width / scale)), "img_shape": (height, width),
            "pad_shape": (height, width), "scale_factor": [scale] * 4, "flip": direction is not None,
            "flip_direction": direction, "image_id": 0}


def mask_head(**kwargs) -> FCNMaskHead:
    return FCNMaskHead(num_classes=NUM_CLASSES, loss_mask=CrossEntropyLoss(use_sigmoid=True), **kwargs)


def batch_with_masks(seed: int = 0):
    """Two images (the second smaller and empty), a square and a disc in the first, visible in the pixels."""
    generator = torch.Generator().manual_seed(seed)
    img = torch.randn(2, 3, 160, 192, generator=generator)
    metas = [meta(160, 192), meta(128, 160)]
    gt_bboxes = [torch.tensor([[10.0, 20.0, 90.0, 100.0], [100.0, 30.0, 180.0, 150.0]]), torch.zeros(0, 4)]
    gt_labels = [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.int64)]
    masks = torch.zeros(2, 160, 192, dtype=torch.uint8)
    masks[0, 20:100, 10:90] = 1
    ys, xs = torch.meshgrid(torch.arange(160) + 0.5, torch.arange(192) + 0.5, indexing="ij")
    masks[1] = ((xs - 140) ** 2 + (ys - 90) ** 2 <= 40 ** 2).to(torch.uint8)  # the disc inscribed in box 2
    img[0, :, masks[0].bool()] += 2.0
    img[0, :, masks[1].bool()] -= 2.0
    gt_masks = [masks, torch.zeros(0, 128, 160, dtype=torch.uint8)]
    return img, metas, gt_bboxes, gt_labels, gt_masks


# --- the mask head ----------------------------------------------------------------------------------------

def test_fcn_mask_head_output_shapes():
    head = mask_head()
    assert head(torch.randn(5, 256, 14, 14)).shape == (5, NUM_CLASSES, 28, 28)
    assert head(torch.randn(0, 256, 14, 14)).shape == (0, NUM_CLASSES, 28, 28)
    agnostic = mask_head(class_agnostic=True, num_convs=2, in_channels=64, conv_out_channels=32, roi_feat_size=7)
    assert agnostic(torch.randn(3, 64, 7, 7)).shape == (3, 1, 14, 14)
    assert agnostic.mask_size == 14 and len(agnostic.convs) == 2
    with torch.no_grad():
        probs = head.mask_probs(head(torch.randn(4, 256, 14, 14)), torch.tensor([0, 2, 1, 2]))
    assert probs.shape == (4, 28, 28) and float(probs.min()) >= 0 and float(probs.max()) <= 1


def test_mask_targets_of_a_known_square():
    """A 60x60 square at pixels 20..79: a box inside it is all foreground; a box over its top-left
    corner is background where the samples lie left of / above the square and foreground where they
    lie inside it (RoIAlign samples pixel values at integer coordinates)."""
    head = mask_head()
    gt_masks = torch.zeros(2, 100, 100, dtype=torch.uint8)
    gt_masks[1, 20:80, 20:80] = 1
    boxes = torch.tensor([[30.0, 30.0, 60.0, 60.0], [0.0, 0.0, 40.0, 40.0], [30.0, 30.0, 60.0, 60.0]])
    targets = head.mask_targets(boxes, torch.tensor([1, 1, 0]), gt_masks)
    assert targets.shape == (3, 28, 28) and targets.dtype == torch.float32
    assert torch.equal(targets[0], torch.ones(28, 28))
    assert torch.equal(targets[2], torch.zeros(28, 28))  # assigned to the empty mask 0
    corner = targets[1]  # bin i covers [i, i + 1) * 40 / 28 px
    assert torch.equal(corner[14:, 14:], torch.ones(14, 14))
    assert float(corner[:13].abs().max()) == 0 and float(corner[:, :13].abs().max()) == 0
    assert 0 < float(corner[13, 20]) < 1  # the edge bin is part inside: a soft target
    assert head.mask_targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), gt_masks).shape == (0, 28, 28)


def test_mask_loss_is_the_bce_of_each_rois_class_channel_and_falls_for_a_perfect_prediction():
    head = mask_head()
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(4, 28, 28, generator=generator) > 0.5).float()
    labels = torch.tensor([0, 2, 1, 2])
    undecided = torch.zeros(4, NUM_CLASSES, 28, 28)
    perfect = undecided.clone()
    perfect[torch.arange(4), labels] = 20.0 * (2 * targets - 1)
    wrong_channel = undecided.clone()
    wrong_channel[torch.arange(4), (labels + 1) % NUM_CLASSES] = 20.0 * (2 * targets - 1)
    torch.testing.assert_close(head.loss(undecided, targets, labels)["loss_mask"], torch.log(torch.tensor(2.0)))
    assert float(head.loss(perfect, targets, labels)["loss_mask"]) < 1e-6
    torch.testing.assert_close(head.loss(wrong_channel, targets, labels)["loss_mask"], torch.log(torch.tensor(2.0)))
    agnostic = mask_head(class_agnostic=True)
    assert float(agnostic.loss(perfect[torch.arange(4), labels][:, None], targets, labels)["loss_mask"]) < 1e-6


def test_mask_loss_without_positives_is_zero_and_reaches_every_parameter():
    head = mask_head()
    loss = head.loss(head(torch.randn(0, 256, 14, 14)), torch.zeros(0, 28, 28), torch.zeros(0, dtype=torch.int64))
    assert float(loss["loss_mask"].detach()) == 0
    loss["loss_mask"].backward()
    assert all(p.grad is not None and float(p.grad.abs().max()) == 0 for p in head.parameters())


# --- configs and the mask branch's wiring ----------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["mask_rcnn_r50_fpn", "mask_rcnn_tiny"])
def test_mask_rcnn_configs_build_with_the_mask_branch(name):
    config = load_config(REPO / f"configs/_base_/models/{name}.yaml")
    line, accel = check_config(config).lines
    assert line.startswith("model: MaskRCNN built (")
    assert accel == "accel: AccelSettings(winograd=4, fold_norm=True, gather_roi_align=True, channels_last=True)"
    model = build_model(config)
    head = model.final_head
    assert head is model.roi_head and head.with_mask and head.mask_thr_binary == 0.5
    assert head.mask_roi_extractor.output_size == 14 and head.mask_head.mask_size == 28
    assert head.mask_head.num_classes == head.num_classes == 80
    if name == "mask_rcnn_tiny":
        assert sum(p.numel() for p in model.parameters()) < 2_000_000
        assert type(model.backbone).__name__ == "TinyConvNet"


@pytest.mark.timeout(60)
def test_mask_rcnn_coco_config_checks():
    lines = check_config(load_config(REPO / "configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.yaml")).lines
    assert lines[0].startswith("model: MaskRCNN built (")
    assert any(line.startswith("data.train: CocoDataset") for line in lines)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overrides,message", [
    (["model.roi_head.mask_head=null", "model.roi_head.mask_roi_extractor=null"],
     "MaskRCNN needs a roi_head with a mask branch"),
    (["model.roi_head.mask_roi_extractor=null"], "a mask branch needs both mask_roi_extractor and mask_head"),
    (["model.roi_head.mask_head.num_classes=3"], r"mask_head.num_classes \(3\) must be bbox_head.num_classes \(80\)"),
    (["model.roi_head.mask_thr_binary=1.5"], r"mask_thr_binary must be in \[0, 1\], got 1.5"),
])
def test_a_miswired_mask_branch_is_refused_when_built(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(REPO / "configs/_base_/models/mask_rcnn_tiny.yaml", overrides))


@pytest.mark.timeout(60)
def test_faster_rcnn_has_no_mask_branch_and_gives_no_masks():
    model = tiny("faster_rcnn", "model.roi_head.score_thr=0.0").eval()
    assert not model.final_head.with_mask and model.roi_head.mask_head is None
    with torch.no_grad():
        [result] = model.simple_test(torch.randn(1, 3, 128, 160), [meta(128, 160)])
    assert set(result) == {"boxes", "scores", "labels"} and len(result["boxes"]) > 0


@pytest.mark.timeout(60)
def test_the_mask_branch_leaves_the_box_branch_as_faster_rcnn_has_it():
    """A Faster R-CNN holding Mask R-CNN's weights (but the mask head's) gives the same boxes and the same
    box and proposal losses: the mask branch draws no random numbers and changes nothing upstream."""
    masked = tiny_mask_rcnn("model.roi_head.score_thr=0.0")
    faster = tiny("faster_rcnn", f"model.roi_head.bbox_head.num_classes={NUM_CLASSES}", "model.roi_head.score_thr=0.0")
    faster.load_state_dict({k: v for k, v in masked.state_dict().items() if ".mask_" not in k}, strict=True)
    img, metas, gt_bboxes, gt_labels, gt_masks = batch_with_masks()
    for model in (masked, faster):
        model.eval()
    with torch.no_grad():
        with_masks, without = masked.simple_test(img, metas), faster.simple_test(img, metas)
    assert len(with_masks) == len(without) == len(metas)
    for a, b in zip(with_masks, without):
        assert set(a) - set(b) == {"masks"} and len(b["boxes"]) > 0
        for key in b:
            torch.testing.assert_close(a[key], b[key])
    losses = {}
    for model, masks in ((masked, gt_masks), (faster, None)):
        model.train()
        torch.manual_seed(7)
        with torch.no_grad():
            losses[model] = model(img, metas, gt_bboxes, gt_labels, gt_masks=masks)
    assert set(losses[masked]) - set(losses[faster]) == {"loss_mask"}
    for name, value in losses[faster].items():
        torch.testing.assert_close(losses[masked][name], value, msg=name)


# --- training ----------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_mask_rcnn_train_step_gives_loss_mask_and_gradients_everywhere():
    model = tiny_mask_rcnn().train()
    losses = model(*batch_with_masks()[:4], gt_masks=batch_with_masks()[4])
    assert {k for k in losses if "loss" in k} == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"}
    assert float(losses["loss_mask"]) > 0.1
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


@pytest.mark.timeout(60)
def test_a_batch_without_any_object_trains_the_mask_head_without_nan():
    model = tiny_mask_rcnn().train()
    img, metas, _, _, _ = batch_with_masks()
    empty_masks = [torch.zeros(0, *m["img_shape"], dtype=torch.uint8) for m in metas]
    losses = model(img, metas, [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.int64)] * 2, gt_masks=empty_masks)
    assert float(losses["loss_mask"]) == 0
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.roi_head.mask_head.conv_logits.weight.grad is not None  # DDP: every parameter gets a gradient


@pytest.mark.timeout(60)
def test_masks_must_fit_the_detector():
    img, metas, gt_bboxes, gt_labels, gt_masks = batch_with_masks()
    for name in ("faster_rcnn", "retinanet"):
        with pytest.raises(ValueError, match=r"has no mask head, but the batch has gt_masks: drop with_mask"):
            tiny(name).train()(img, metas, gt_bboxes, gt_labels, gt_masks=gt_masks)
    with pytest.raises(ValueError, match=r"MaskRCNN trains a mask head and needs gt_masks .* set with_mask: true"):
        tiny_mask_rcnn().train()(img, metas, gt_bboxes, gt_labels)


@pytest.mark.timeout(180)
def test_tiny_mask_rcnn_learns_the_masks_of_two_objects():
    """A few dozen steps on one batch: loss_mask falls and the detections of the square and the disc
    carry masks that cover them."""
    model = tiny_mask_rcnn().train()
    img, metas, gt_bboxes, gt_labels, gt_masks = batch_with_masks(seed=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        losses = model(img, metas, gt_bboxes, gt_labels, gt_masks=gt_masks)
        first = float(losses["loss_mask"].detach()) if first is None else first
        optimizer.zero_grad()
        sum(v for k, v in losses.items() if "loss" in k).backward()
        optimizer.step()
    assert float(losses["loss_mask"].detach()) < 0.5 * first
    model.eval()
    with torch.no_grad():
        [result] = model.simple_test(img[:1], metas[:1])
    for box, label, mask in zip(gt_bboxes[0], gt_labels[0], gt_masks[0].bool()):
        same_class = torch.where(result["labels"] == label)[0]
        assert len(same_class), (label, result)
        best = same_class[box_iou(box[None], result["boxes"][same_class])[0].argmax()]
        predicted = result["masks"][best]
        assert float((predicted & mask).sum() / (predicted | mask).sum()) > 0.7


# --- masks in the original image -----------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_simple_test_pastes_masks_in_the_original_or_the_resized_image():
    model = tiny_mask_rcnn("model.roi_head.score_thr=0.0").eval()
    img, _, _, _, _ = batch_with_masks()
    metas = [meta(160, 192, scale=0.5), meta(128, 160, scale=2.0)]
    with torch.no_grad():
        original = model.simple_test(img, metas, rescale=True)
        resized = model.simple_test(img, metas, rescale=False)
        dispatched = model(img, metas, return_loss=False)
    for rescaled, plain, via_forward, m in zip(original, resized, dispatched, metas, strict=True):
        assert set(rescaled) == {"boxes", "scores", "labels", "masks"} and len(rescaled["boxes"]) > 0
        assert rescaled["masks"].dtype == torch.bool
        assert rescaled["masks"].shape == (len(rescaled["boxes"]), *m["ori_shape"])
        assert plain["masks"].shape == (len(plain["boxes"]), *m["img_shape"])
        assert torch.equal(via_forward["masks"], rescaled["masks"])
        assert rescaled["masks"].flatten(1).any(1).float().mean() > 0.5
        # every mask lies in its box (pasting pads the grid by a cell: a pixel of slack)
        for boxes, masks in ((rescaled["boxes"], rescaled["masks"]), (plain["boxes"], plain["masks"])):
            ys, xs = torch.meshgrid(torch.arange(masks.shape[1]), torch.arange(masks.shape[2]), indexing="ij")
            inside = ((xs >= boxes[:, 0, None, None].floor() - 1) & (xs <= boxes[:, 2, None, None] + 1)
                      & (ys >= boxes[:, 1, None, None].floor() - 1) & (ys <= boxes[:, 3, None, None] + 1))
            assert not (masks & ~inside).any()


def flip_pixels(masks: torch.Tensor, direction: str) -> torch.Tensor:
    return masks.flip({"horizontal": (-1,), "vertical": (-2,), "diagonal": (-2, -1)}[direction])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_masks_of_a_flipped_input_are_unflipped(direction, monkeypatch):
    """A detection in the flipped input frame, with a grid that is foreground in its top-left quarter
    only: in the original image it is the flipped picture of what the input frame shows, box and mask."""
    model = tiny_mask_rcnn().eval()
    grid = torch.zeros(1, 28, 28)
    grid[0, :14, :14] = 1.0
    detection = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 40.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1]), "mask_probs": grid}
    monkeypatch.setattr(model, "detect", lambda img, img_metas: [dict(detection)])
    flipped = meta(64, 96, direction=direction)
    [in_input_frame] = model.simple_test(torch.zeros(1, 3, 64, 96), [flipped], rescale=False)
    [in_original] = model.simple_test(torch.zeros(1, 3, 64, 96), [flipped], rescale=True)
    assert in_input_frame["masks"][0, 25, 15] and not in_input_frame["masks"][0, 35, 45]  # top-left quarter
    assert torch.equal(in_original["masks"], flip_pixels(in_input_frame["masks"], direction))
    x1, y1, x2, y2 = in_original["boxes"][0].tolist()
    expected = {"horizontal": [46, 20, 86, 40], "vertical": [10, 24, 50, 44], "diagonal": [46, 24, 86, 44]}
    assert [x1, y1, x2, y2] == expected[direction]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_detections_to_original_unflips_grids_and_boxes_together(direction):
    grids = torch.rand(2, 28, 28)
    result = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 60.0, 30.0]]), "scores": torch.ones(2),
              "labels": torch.zeros(2, dtype=torch.int64), "mask_probs": grids}
    original = detections_to_original(result, meta(64, 96, scale=0.5, direction=direction))
    assert torch.equal(original["mask_probs"], flip_pixels(grids, direction))
    assert torch.equal(detections_to_original(result, meta(64, 96, scale=0.5))["mask_probs"], grids)
    assert original["boxes"].shape == (2, 4) and float(original["boxes"].max()) <= 192


@pytest.mark.timeout(60)
def test_aug_test_merges_masks_in_the_original_image():
    model = tiny_mask_rcnn("model.roi_head.score_thr=0.0").eval()
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(1, 3, 128, 160, generator=generator)
    small = torch.nn.functional.interpolate(image, scale_factor=0.5, mode="bilinear")
    views = [image, image.flip(-1), image.flip(-2), image.flip((-2, -1)), small]
    view_metas = [[meta(128, 160)], [meta(128, 160, direction="horizontal")], [meta(128, 160, direction="vertical")],
                  [meta(128, 160, direction="diagonal")], [meta(64, 80, scale=0.5)]]
    with torch.no_grad():
        alone = [model.simple_test(view, metas)[0] for view, metas in zip(views, view_metas)]
        [same_twice] = model.aug_test([image, image], [view_metas[0]] * 2)
        [merged] = model.aug_test(views, view_metas)
        [merged_resized] = model.aug_test([small, image], [view_metas[-1], view_metas[0]], rescale=False)
    # a duplicate view is removed by the merging NMS, masks included
    assert torch.equal(same_twice["masks"], alone[0]["masks"]) and torch.equal(same_twice["boxes"], alone[0]["boxes"])
    assert merged["masks"].shape == (len(merged["boxes"]), 128, 160) and merged["masks"].dtype == torch.bool
    assert merged_resized["masks"].shape == (len(merged_resized["boxes"]), 64, 80)
    # every merged detection is one view's, with that view's mask in the original image
    sources = set()
    for box, score, mask in zip(merged["boxes"], merged["scores"], merged["masks"]):
        found = [(v, i) for v, result in enumerate(alone) for i in range(len(result["boxes"]))
                 if float(result["scores"][i]) == float(score) and torch.equal(result["boxes"][i], box)]
        assert found and any(torch.equal(alone[v]["masks"][i], mask) for v, i in found)
        sources.update(v for v, _ in found)
    assert {1, 2, 3} <= sources  # the flipped views contribute
