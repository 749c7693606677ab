"""One-stage detectors: backbone -> neck -> one dense head."""
from __future__ import annotations

from torch import Tensor, nn

from ...registry import MODELS
from ..dense_heads import BaseDenseHead
from ..pretrained import Pretrained
from .base import BaseDetector


@MODELS.register()
class SingleStageDetector(BaseDetector):
    """``bbox_head`` (a ``BaseDenseHead``: ``RetinaHead``, ``FCOSHead``) predicts boxes at every feature-map cell."""

    def __init__(self, backbone: nn.Module, bbox_head: BaseDenseHead, neck: nn.Module | None = None,
                 init_cfg: Pretrained | None = None):
        super().__init__(backbone, neck, init_cfg)
        self.bbox_head = bbox_head

    @property
    def final_head(self) -> BaseDenseHead:
        return self.bbox_head

    def forward_train(self, img: Tensor, img_metas: list[dict], gt_bboxes: list[Tensor],
                      gt_labels: list[Tensor], gt_masks: list[Tensor] | None = None) -> dict[str, Tensor]:
        self.check_gt_masks(gt_masks)
        return self.bbox_head.forward_train(self.extract_feat(img), img_metas, gt_bboxes, gt_labels)

    def detect(self, img: Tensor, img_metas: list[dict]) -> list[dict[str, Tensor]]:
        return self.bbox_head.simple_test(self.extract_feat(img), img_metas)
