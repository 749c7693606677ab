"""Parity with torchvision: same weights, same images -> same detections and the same training losses."""
from __future__ import annotations

import pytest
import torch

from tests.torchvision_reference import (
    GT_BOXES,
    GT_LABELS,
    IMAGE_SIZES,
    TORCHVISION_LOSS_NAMES,
    assert_same_detections,
    converted_pair,
    preprocess,
)

# IMAGE_SIZES are resized to 128x256 and 128x160 and padded to 128x256: torchvision infers each
# level's anchor stride as padded size // feature size, which is the real stride
# (as raydet uses) only when the padded size is a multiple of 128 (P7).
MIN_SIZE, MAX_SIZE = 128, 256
# raydet as built (no speed path of raydet.accel applied: torchvision's kernels).  These comparisons hold
# raydet to torchvision within about 4e-6 of a box's size (1e-3 px), which only the same kernels meet on
# Faster R-CNN: any other rounding moves its random-weight detections by up to 3e-3 px, torchvision's own
# included (1 vs 2 threads: 1.7e-3 px; channels_last: 3.9e-3 px), and flips a sampled RoI in training.
# tests/accel checks that the speed paths change the detectors' outputs only by rounding.


@pytest.fixture(scope="module", params=["retinanet", "fcos", "fasterrcnn"])
def pair(request):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the kernels' rounding depends on the thread count (RetinaNet: a near-tie)
    reference, model = converted_pair(request.param, MIN_SIZE, MAX_SIZE)
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, h, w, generator=generator) for h, w in IMAGE_SIZES]
    yield request.param, reference, model, images
    torch.set_num_threads(threads)


@pytest.mark.timeout(120)
def test_simple_test_gives_torchvisions_detections(pair):
    arch, reference, model, images = pair
    batch, metas, _ = preprocess(images, MIN_SIZE, MAX_SIZE)
    assert batch.shape[-2:] == (128, 256) and metas[1]["img_shape"] == (128, 160)
    reference.eval()
    model.eval()
    with torch.no_grad():
        expected = reference(images)
        actual = model.simple_test(batch, metas, rescale=True)
    for want, got in zip(expected, actual, strict=True):
        assert len(want["boxes"]) >= 50  # enough detections for the comparison to mean something
        assert len(want["labels"].unique()) > 1
        assert_same_detections(want, got, label_offset=1 if arch == "fasterrcnn" else 0)


@pytest.mark.timeout(120)
def test_training_losses_equal_torchvisions(pair):
    """Faster R-CNN's RPN and RoI samplers draw from torch's generator; both models are
    re-seeded where their sampling starts (torchvision first draws a random training
    size per image; raydet's data pipeline does that outside the model)."""
    arch, reference, model, images = pair
    batch, metas, gt_bboxes = preprocess(images, MIN_SIZE, MAX_SIZE, GT_BOXES)
    offset = 1 if arch == "fasterrcnn" else 0
    targets = [{"boxes": boxes, "labels": labels + offset} for boxes, labels in zip(GT_BOXES, GT_LABELS)]
    reference.train()
    model.train()
    seed = 123

    def reseed(*_) -> None:
        torch.manual_seed(seed)

    hook = reference.rpn.register_forward_pre_hook(reseed) if arch == "fasterrcnn" else None
    with torch.no_grad():  # the losses, not their gradients, are compared
        expected = reference(images, targets)
        reseed()
        actual = model(batch, metas, gt_bboxes, GT_LABELS)
    if hook is not None:
        hook.remove()
    assert {k for k in actual if "loss" in k} == set(TORCHVISION_LOSS_NAMES[arch].values())
    assert set(expected) == set(TORCHVISION_LOSS_NAMES[arch])  # each loss compared below
    for name, value in expected.items():
        ours = actual[TORCHVISION_LOSS_NAMES[arch][name]]
        assert float(value) > 1e-3
        torch.testing.assert_close(ours, value, rtol=1e-5, atol=1e-6, msg=f"{name}: {float(ours)} vs {float(value)}")
    if arch == "fasterrcnn":  # the comparison can fail: another seed samples other anchors and RoIs
        torch.manual_seed(seed + 1)
        with torch.no_grad():
            reseeded = model(batch, metas, gt_bboxes, GT_LABELS)
        assert float(reseeded["loss_cls"]) != float(actual["loss_cls"])
