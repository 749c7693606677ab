"""Detectors: the Detector API (``forward_train``, ``simple_test``, ``aug_test``) over their parts."""
from .base import BaseDetector
from .faster_rcnn import FasterRCNN
from .fcos import FCOS
from .mask_rcnn import MaskRCNN
from .original_frame import boxes_to_original, detections_to_original
from .retinanet import RetinaNet
from .single_stage import SingleStageDetector
from .two_stage import TwoStageDetector

__all__ = ["BaseDetector", "boxes_to_original", "detections_to_original", "FasterRCNN", "FCOS", "MaskRCNN",
           "RetinaNet", "SingleStageDetector", "TwoStageDetector"]
