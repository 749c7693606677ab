"""Faster R-CNN (arXiv 1506.01497): RPN proposals refined by a ``StandardRoIHead``."""
from ...registry import MODELS
from .two_stage import TwoStageDetector


@MODELS.register()
class FasterRCNN(TwoStageDetector):
    """``TwoStageDetector`` whose weights convert from torchvision's ``fasterrcnn_resnet50_fpn``."""

    torchvision_arch = "fasterrcnn"
