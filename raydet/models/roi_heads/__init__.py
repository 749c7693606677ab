"""RoI heads: the second stage of two-stage detectors (``BaseRoIHead`` is its contract)."""
from .base_roi_head import BaseRoIHead
from .fcn_mask_head import FCNMaskHead
from .shared_2fc_bbox_head import Shared2FCBBoxHead
from .single_roi_extractor import SingleRoIExtractor
from .standard_roi_head import StandardRoIHead

__all__ = ["BaseRoIHead", "FCNMaskHead", "Shared2FCBBoxHead", "SingleRoIExtractor", "StandardRoIHead"]
