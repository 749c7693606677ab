"""Dense heads: predictions at every feature-map cell (anchors or points)."""
from .fcos_head import FCOSHead
from .retina_head import RetinaHead
from .rpn_head import RPNHead

__all__ = ["FCOSHead", "RetinaHead", "RPNHead"]
