"""``accel.gather_roi_align``: RoIAlign as a weighted gather is ``torchvision.ops.roi_align``'s function,
forward and backward; an RoI extractor given it pools torchvision's features, and the tests see it did."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

from raydet.accel import gather_roi_align as gather_module
from raydet.accel.gather_roi_align import GatherRoIExtractor, gather_in_roi_extractors, gather_roi_align
from raydet.models.roi_heads import SingleRoIExtractor
from tests.accel.accel_helpers import assert_same_function, gradients, record_calls

pytestmark = pytest.mark.timeout(120)


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


def rois_on_every_level() -> tuple[list[torch.Tensor], torch.Tensor]:
    """Feature maps ``[2, 8, 64 / s, 64 / s]`` of strides 4..32 and 60 RoIs ``[60, 5]`` of 4 .. 1100 px."""
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, 64 // s, 64 // s, requires_grad=True) for s in (4, 8, 16, 32)]
    boxes = torch.rand(60, 2) * 40
    sizes = torch.exp(torch.empty(60, 2).uniform_(1.5, 7.0))
    return feats, torch.cat([torch.randint(0, 2, (60, 1)).float(), boxes, boxes + sizes], dim=1)


def test_roi_extractor_gathers_torchvisions_features(monkeypatch):
    gathered = record_calls(monkeypatch, gather_module, "gather_roi_align")
    feats, rois = rois_on_every_level()
    plain = SingleRoIExtractor([4, 8, 16, 32])
    extractors = nn.ModuleList([SingleRoIExtractor([4, 8, 16, 32]), nn.Linear(1, 1)])
    assert gather_in_roi_extractors(extractors) == 1 and type(extractors[0]) is GatherRoIExtractor
    assert_same_function(extractors[0](feats, rois), plain(feats, rois), feats, atol=1e-5, rtol=1e-5)
    assert len(gathered) == 4  # one gather per level


def test_roi_extractor_keeps_torchvisions_kernel_for_adaptive_sampling(monkeypatch):
    gathered = record_calls(monkeypatch, gather_module, "gather_roi_align")
    feats, rois = rois_on_every_level()
    extractor = SingleRoIExtractor([4, 8, 16, 32], sampling_ratio=0)
    expected = extractor(feats, rois)
    gather_in_roi_extractors(extractor)
    assert torch.equal(extractor(feats, rois), expected) and gathered == []
