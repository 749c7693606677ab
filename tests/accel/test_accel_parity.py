"""With the r50 configs' speed paths applied (``accel:``), RetinaNet and FCOS give torchvision's detections and
losses where Winograd F(4x4, 3x3) runs (``tests/models/test_parity.py`` compares the models as built)."""
from __future__ import annotations

import pytest
import torch

from raydet.accel import apply_accel, winograd_conv
from raydet.config import load_config
from raydet.config.parsed import parse_config
from tests.accel.accel_helpers import record_calls
from tests.torchvision_reference import (
    ARCHS,
    GT_BOXES,
    GT_LABELS,
    IMAGE_SIZES,
    REPO,
    TORCHVISION_LOSS_NAMES,
    assert_same_detections,
    converted_pair,
    preprocess,
)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("arch", ["retinanet", "fcos"])
def test_with_winograd_f4_detections_and_losses_equal_torchvisions(arch, monkeypatch):
    """At 256x512 Winograd F(4x4, 3x3) runs the P3 convolutions (FPN output, head towers), F(2x2, 3x3)
    those of P4 (at 128x256 only F(2x2, 3x3) would): the same detections and losses as torchvision."""
    winograd_calls = record_calls(monkeypatch, winograd_conv, "winograd_conv2d")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference, model = converted_pair(arch, 256, 512)
        accel = parse_config(load_config(REPO / "configs/_base_/models" / ARCHS[arch][1])).accel
        assert accel.winograd == 4 and accel.fold_norm and accel.channels_last
        apply_accel(model, accel)
        generator = torch.Generator().manual_seed(1)
        images = [torch.rand(3, h, w, generator=generator) for h, w in IMAGE_SIZES]
        batch, metas, gt_bboxes = preprocess(images, 256, 512, GT_BOXES)
        reference.eval()
        model.eval()
        with torch.no_grad():
            expected, actual = reference(images), model.simple_test(batch, metas, rescale=True)
        assert {call[3] for call in winograd_calls} == {2, 4}
        for want, got in zip(expected, actual):
            assert len(want["boxes"]) >= 50 and len(want["labels"].unique()) > 1
            assert_same_detections(want, got)
        reference.train()
        model.train()
        winograd_calls.clear()
        with torch.no_grad():
            targets = [{"boxes": boxes, "labels": labels} for boxes, labels in zip(GT_BOXES, GT_LABELS)]
            expected = reference(images, targets)
            actual = model(batch, metas, gt_bboxes, GT_LABELS)
        assert winograd_calls
        for name, value in expected.items():
            torch.testing.assert_close(actual[TORCHVISION_LOSS_NAMES[arch][name]], value, rtol=1e-5, atol=1e-6)
    finally:
        torch.set_num_threads(threads)
