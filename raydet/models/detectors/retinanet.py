"""RetinaNet (arXiv 1708.02002): a single-stage detector with a ``RetinaHead``."""
from ...registry import MODELS
from .single_stage import SingleStageDetector


@MODELS.register()
class RetinaNet(SingleStageDetector):
    """``SingleStageDetector`` whose weights convert from torchvision's ``retinanet_resnet50_fpn``."""

    torchvision_arch = "retinanet"
