"""FCOS (arXiv 1904.01355): an anchor-free single-stage detector with an ``FCOSHead``."""
from ...registry import MODELS
from .single_stage import SingleStageDetector


@MODELS.register()
class FCOS(SingleStageDetector):
    """``SingleStageDetector`` whose weights convert from torchvision's ``fcos_resnet50_fpn``."""

    torchvision_arch = "fcos"
