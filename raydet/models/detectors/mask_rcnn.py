"""Mask R-CNN (arXiv 1703.06870): Faster R-CNN whose RoI head also segments every detection."""
from torch import nn

from ...registry import MODELS
from ..dense_heads import BaseProposalHead
from ..pretrained import Pretrained
from ..roi_heads import BaseRoIHead
from .two_stage import TwoStageDetector


@MODELS.register()
class MaskRCNN(TwoStageDetector):
    """``TwoStageDetector`` whose ``roi_head`` has a mask branch (``StandardRoIHead`` with
    ``mask_roi_extractor`` and ``mask_head``); its weights convert from torchvision's
    ``maskrcnn_resnet50_fpn``.  Detections carry ``masks`` (see ``BaseDetector``)."""

    torchvision_arch = "maskrcnn"

    def __init__(self, backbone: nn.Module, rpn_head: BaseProposalHead, roi_head: BaseRoIHead,
                 neck: nn.Module | None = None, init_cfg: Pretrained | None = None):
        if not roi_head.with_mask:
            raise ValueError("MaskRCNN needs a roi_head with a mask branch (mask_roi_extractor and mask_head)")
        super().__init__(backbone, rpn_head, roi_head, neck, init_cfg)
