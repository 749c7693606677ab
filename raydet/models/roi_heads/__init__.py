"""RoI heads: the second stage of two-stage detectors."""
from .shared_2fc_bbox_head import Shared2FCBBoxHead
from .single_roi_extractor import SingleRoIExtractor
from .standard_roi_head import StandardRoIHead

__all__ = ["Shared2FCBBoxHead", "SingleRoIExtractor", "StandardRoIHead"]
