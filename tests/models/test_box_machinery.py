"""Anchors, coders, assigners, samplers, RoI extraction and losses against torchvision's or hand-computed values."""
from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign, box_iou, sigmoid_focal_loss

from raydet.models.losses import CrossEntropyLoss, FocalLoss, GIoULoss, IoULoss, L1Loss, SmoothL1Loss
from raydet.models.roi_heads import SingleRoIExtractor
from raydet.models.task_utils import (
    IGNORED,
    NEGATIVE,
    AnchorGenerator,
    CenterSamplingAssigner,
    DeltaXYWHBBoxCoder,
    DistancePointBBoxCoder,
    MaxIoUAssigner,
    RandomSampler,
)

pytestmark = pytest.mark.timeout(60)


def random_boxes(n: int, size: float = 200.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    top_left = torch.rand(n, 2, generator=generator) * size
    return torch.cat([top_left, top_left + 4 + torch.rand(n, 2, generator=generator) * size / 2], dim=1)


def test_anchors_equal_torchvisions_where_strides_are_exact():
    sizes = [[32, 40, 50], [64, 80, 101], [128, 161, 203]]
    ours = AnchorGenerator(strides=[8, 16, 32], sizes=sizes, aspect_ratios=[0.5, 1.0, 2.0])
    theirs = TorchvisionAnchorGenerator(tuple(map(tuple, sizes)), ((0.5, 1.0, 2.0),) * 3)
    feature_sizes = [(16, 24), (8, 12), (4, 6)]
    images = ImageList(torch.zeros(1, 3, 128, 192), [(128, 192)])
    expected = theirs(images, [torch.zeros(1, 1, h, w) for h, w in feature_sizes])[0]
    actual = torch.cat(ours.grid_anchors(feature_sizes, torch.device("cpu")))
    assert ours.num_base_anchors == 9
    assert torch.equal(actual, expected)


def test_anchor_offset_and_rounding_are_options():
    generator = AnchorGenerator(strides=[8], sizes=[[8.0]], aspect_ratios=[1.0], center_offset=0.5,
                                round_base_anchors=False)
    anchors = generator.grid_anchors([(2, 3)], torch.device("cpu"))[0]
    assert anchors.shape == (6, 4)
    assert anchors[0].tolist() == [0.0, 0.0, 8.0, 8.0]  # cell (0, 0) centred at (4, 4)
    assert anchors[4].tolist() == [8.0, 8.0, 16.0, 16.0]  # cell (1, 1): row-major order
    unrounded = AnchorGenerator(strides=[8], sizes=[[32.0]], aspect_ratios=[0.5], round_base_anchors=False)
    assert unrounded.base_anchors[0][0, 0] == pytest.approx(-16 * math.sqrt(2))
    assert AnchorGenerator(strides=[8], sizes=[[32.0]], aspect_ratios=[0.5]).base_anchors[0][0, 0] == -23


def test_delta_coder_matches_torchvision_and_round_trips():
    anchors, targets = random_boxes(50, seed=1), random_boxes(50, seed=2)
    coder = DeltaXYWHBBoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    reference = tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = coder.encode(anchors, targets)
    assert torch.equal(deltas, reference.encode_single(targets, anchors))
    assert torch.equal(coder.decode(anchors, deltas), reference.decode_single(deltas, anchors))
    torch.testing.assert_close(coder.decode(anchors, deltas), targets, rtol=0, atol=1e-3)
    class_deltas = torch.randn(50, 12)  # three classes: each class's four deltas decode on their own
    per_class = torch.cat([coder.decode(anchors, class_deltas[:, 4 * k:4 * k + 4]) for k in range(3)], dim=1)
    torch.testing.assert_close(coder.decode(anchors, class_deltas), per_class, rtol=0, atol=0)
    huge = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    assert torch.isfinite(coder.decode(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), huge)).all()  # log-scale clamp


def test_distance_coder_round_trips_and_matches_torchvision():
    points = torch.tensor([[0.0, 0.0, 8.0, 8.0], [16.0, 16.0, 32.0, 32.0]])
    boxes = torch.tensor([[-10.0, -5.0, 20.0, 30.0], [0.0, 10.0, 60.0, 40.0]])
    coder = DistancePointBBoxCoder()
    reference = tv_utils.BoxLinearCoder(normalize_by_size=True)
    distances = coder.encode(points, boxes)
    assert distances[0].tolist() == [14 / 8, 9 / 8, 16 / 8, 26 / 8]
    assert torch.equal(distances, reference.encode(points, boxes))
    torch.testing.assert_close(coder.decode(points, distances), boxes)


@pytest.mark.parametrize("low_quality", [True, False])
def test_max_iou_assigner_matches_torchvisions_matcher(low_quality):
    gt, boxes = random_boxes(6, seed=3), random_boxes(400, seed=4)
    ours = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, match_low_quality=low_quality).assign(gt, boxes)
    theirs = tv_utils.Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)(box_iou(gt, boxes))
    assert torch.equal(ours, theirs)
    assert {NEGATIVE, IGNORED} < set(ours.tolist()) and (ours >= 0).any()


def test_max_iou_assigner_without_ground_truth_makes_everything_negative():
    assigned = MaxIoUAssigner(0.7, 0.3).assign(torch.zeros(0, 4), random_boxes(10))
    assert assigned.tolist() == [NEGATIVE] * 10


def test_random_sampler_draws_like_torchvision():
    assigned = torch.full((1000,), NEGATIVE)
    assigned[::7] = 2
    assigned[1::13] = IGNORED
    sampler = RandomSampler(num=256, pos_fraction=0.25)
    torch.manual_seed(0)
    pos, neg = sampler.sample(assigned)
    torch.manual_seed(0)
    labels = torch.where(assigned >= 0, 1, torch.where(assigned == NEGATIVE, 0, -1))
    tv_pos, tv_neg = tv_utils.BalancedPositiveNegativeSampler(256, 0.25)([labels])
    assert torch.equal(pos, tv_pos[0].bool()) and torch.equal(neg, tv_neg[0].bool())
    assert int(pos.sum()) == 64 and int(neg.sum()) == 192
    assert not (pos & (assigned < 0)).any() and not (neg & (assigned != NEGATIVE)).any()


def test_center_sampling_assigner_rules():
    generator = AnchorGenerator(strides=[8, 16], sizes=[[8.0], [16.0]], aspect_ratios=[1.0])
    priors = generator.grid_anchors([(8, 8), (4, 4)], torch.device("cpu"))
    assigner = CenterSamplingAssigner(regress_ranges=[(0, 32), (32, math.inf)], center_sampling_radius=1.5)
    small, large = [8.0, 8.0, 40.0, 40.0], [0.0, 0.0, 64.0, 64.0]
    assigned = assigner.assign(torch.tensor([small, large]), torch.cat(priors), [64, 16])
    level0, level1 = assigned[:64].view(8, 8), assigned[64:].view(4, 4)
    # the small box (centre 24, 24): level-0 points within 1.5 strides (12 px) of the centre, inside it
    assert level0[3, 3] == 0 and level0[2, 2] == 0 and level0[1, 1] == NEGATIVE
    # the large box is too large for level 0; on level 1 (radius 24 px, range open at 32) its centre
    # point is out (largest distance exactly 32), points off-centre are in, the corner is not inside
    assert level1[1, 1] == 1 and level1[1, 2] == 1 and level1[2, 2] == NEGATIVE and level1[0, 0] == NEGATIVE
    assert (level0 == 1).sum() == 0
    none = assigner.assign(torch.zeros(0, 4), torch.cat(priors), [64, 16])
    assert (none == NEGATIVE).all()


def test_single_roi_extractor_matches_multiscale_roi_align():
    generator = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 8, 64 // 2 ** i, 64 // 2 ** i, generator=generator) for i in range(4)]
    boxes = [random_boxes(30, size=500, seed=5), random_boxes(20, size=120, seed=6)]
    reference = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    expected = reference(OrderedDict((str(i), f) for i, f in enumerate(feats)), boxes, [(256, 256), (256, 256)])
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    extractor = SingleRoIExtractor(featmap_strides=[4, 8, 16, 32])
    assert len(extractor.map_levels(rois).unique()) > 1
    assert torch.equal(extractor(feats, rois), expected)


def test_single_roi_extractor_pools_from_the_nearest_of_non_consecutive_strides():
    feats = [torch.full((1, 1, 64, 64), 8.0), torch.full((1, 1, 16, 16), 32.0)]  # strides 8 and 32 of a 512 image
    sides = [100.0, 224.0, 500.0]  # FPN levels 2, 4, 5: nearest available 3, 3 (tie: the finer), 5
    rois = torch.tensor([[0.0, 0.0, 0.0, side, side] for side in sides])
    extractor = SingleRoIExtractor(featmap_strides=[8, 32], output_size=2)
    assert extractor.map_levels(rois).tolist() == [0, 0, 1]
    assert extractor(feats, rois).amin(dim=(1, 2, 3)).tolist() == [8.0, 8.0, 32.0]  # each RoI pooled from one level


@pytest.mark.parametrize("strides", [[8, 24], [16, 8], [8, 8], [], [0, 8]])
def test_single_roi_extractor_rejects_strides_that_are_not_increasing_powers_of_two(strides):
    with pytest.raises(ValueError, match=r"featmap_strides must be increasing powers of two"):
        SingleRoIExtractor(featmap_strides=strides)


def test_losses_against_hand_computations():
    logits, targets = torch.randn(20, 3), (torch.rand(20, 3) > 0.7).float()
    torch.testing.assert_close(FocalLoss()(logits, targets, avg_factor=4),
                               sigmoid_focal_loss(logits, targets, reduction="sum") / 4)
    pred, target = torch.tensor([[0.0, 0.5]]), torch.tensor([[0.05, 2.5]])
    assert float(SmoothL1Loss(beta=0.1)(pred, target, avg_factor=1)) == pytest.approx(0.5 * 0.05 ** 2 / 0.1 + 2 - 0.05)
    assert float(L1Loss(loss_weight=2.0)(pred, target)) == pytest.approx(2.0 * (0.05 + 2.0) / 2)
    class_logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    expected_ce = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert float(CrossEntropyLoss()(class_logits, torch.tensor([0, 1]))) == pytest.approx(expected_ce)
    bce = CrossEntropyLoss(use_sigmoid=True)(torch.tensor([0.0]), torch.tensor([1.0]), avg_factor=2)
    assert float(bce) == pytest.approx(math.log(2) / 2)
    box, half = torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 10.0, 5.0]])
    assert float(IoULoss(mode="linear")(box, half)) == pytest.approx(0.5)
    assert float(IoULoss()(box, half)) == pytest.approx(math.log(2))
    apart = torch.tensor([[20.0, 0.0, 30.0, 10.0]])  # IoU 0, enclosing box 30x10, union 200
    assert float(GIoULoss()(box, apart)) == pytest.approx(1 + (300 - 200) / 300)
