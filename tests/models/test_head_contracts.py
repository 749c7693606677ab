"""The typed head contracts: every head declares what its detector relies on, a half-implemented head
cannot be made, and a final head's settings are checked when it is built."""
from __future__ import annotations

import pytest
from torch import Tensor

from raydet.builder import build_model, check_config
from raydet.config import ConfigError, load_config
from raydet.models import DetectionHead
from raydet.models.dense_heads import BaseDenseHead, BaseProposalHead
from raydet.models.roi_heads import BaseRoIHead
from tests.helpers import REPO


def tiny(name: str, *overrides: str):
    return build_model(load_config(REPO / f"configs/_base_/models/{name}_tiny.yaml", list(overrides)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["retinanet", "fcos"])
def test_single_stage_final_head_is_its_dense_head_with_the_configured_settings(name):
    model = tiny(name, "model.bbox_head.num_classes=5", "model.bbox_head.nms_iou_thr=0.4",
                 "model.bbox_head.max_per_img=7")
    assert isinstance(model.bbox_head, BaseDenseHead) and model.final_head is model.bbox_head
    assert (model.final_head.num_classes, model.final_head.nms_iou_thr, model.final_head.max_per_img) == (5, 0.4, 7)


@pytest.mark.timeout(60)
def test_two_stage_final_head_is_its_roi_head_with_the_box_heads_classes():
    model = tiny("faster_rcnn", "model.roi_head.bbox_head.num_classes=5", "model.roi_head.max_per_img=7")
    assert isinstance(model.rpn_head, BaseProposalHead) and not isinstance(model.rpn_head, DetectionHead)
    assert isinstance(model.roi_head, BaseRoIHead) and model.final_head is model.roi_head
    assert (model.final_head.num_classes, model.final_head.max_per_img) == (5, 7)


def test_a_head_that_implements_half_its_contract_cannot_be_made():
    class TrainOnlyHead(BaseDenseHead):
        def forward_train(self, feats: list[Tensor], img_metas: list[dict], gt_bboxes: list[Tensor],
                          gt_labels: list[Tensor]) -> dict[str, Tensor]:
            return {}

    with pytest.raises(TypeError, match="abstract .*simple_test"):
        TrainOnlyHead(num_classes=1, nms_iou_thr=0.5, max_per_img=10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("override,message", [
    ("model.bbox_head.num_classes=0", "num_classes must be at least 1, got 0"),
    ("model.bbox_head.nms_iou_thr=1.5", "nms_iou_thr must be in (0, 1], got 1.5"),
    ("model.bbox_head.max_per_img=0", "max_per_img must be at least 1, got 0"),
])
def test_final_head_settings_are_checked_when_built(override, message):
    config = load_config(REPO / "configs/_base_/models/retinanet_tiny.yaml", [override])
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert str(err.value).endswith(f"model.bbox_head: RetinaHead rejected its arguments: ValueError: {message}")
