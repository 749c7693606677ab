"""Two-stage detectors: backbone -> neck -> RPN proposals -> RoI head."""
from __future__ import annotations

from torch import Tensor, nn

from ...registry import MODELS
from ..dense_heads import BaseProposalHead
from ..pretrained import Pretrained
from ..roi_heads import BaseRoIHead
from .base import BaseDetector


@MODELS.register()
class TwoStageDetector(BaseDetector):
    """``rpn_head`` (a ``BaseProposalHead``: ``RPNHead``) proposes boxes, ``roi_head`` (a ``BaseRoIHead``:
    ``StandardRoIHead``) classifies and refines them (and, with a mask branch, segments them)."""

    def __init__(self, backbone: nn.Module, rpn_head: BaseProposalHead, roi_head: BaseRoIHead,
                 neck: nn.Module | None = None, init_cfg: Pretrained | None = None):
        super().__init__(backbone, neck, init_cfg)
        self.rpn_head = rpn_head
        self.roi_head = roi_head

    @property
    def final_head(self) -> BaseRoIHead:
        return self.roi_head

    def forward_train(self, img: Tensor, img_metas: list[dict], gt_bboxes: list[Tensor],
                      gt_labels: list[Tensor], gt_masks: list[Tensor] | None = None) -> dict[str, Tensor]:
        self.check_gt_masks(gt_masks)
        feats = self.extract_feat(img)
        losses, proposals = self.rpn_head.forward_train(feats, img_metas, gt_bboxes)
        losses.update(self.roi_head.forward_train(feats, proposals, img_metas, gt_bboxes, gt_labels, gt_masks))
        return losses

    def detect(self, img: Tensor, img_metas: list[dict]) -> list[dict[str, Tensor]]:
        feats = self.extract_feat(img)
        return self.roi_head.simple_test(feats, self.rpn_head.simple_test(feats, img_metas), img_metas)
