"""The detection model zoo; importing it registers every component in ``MODELS`` (modules) and
``TASK_UTILS`` (anchor generators, box coders, assigners, samplers, ``Pretrained``)."""
from . import backbones, dense_heads, detectors, losses, necks, roi_heads, task_utils
from .detection_head import DetectionHead
from .pretrained import Pretrained
from .torchvision_weights import convert_torchvision_state_dict, load_torchvision_detector

__all__ = ["backbones", "dense_heads", "detectors", "losses", "necks", "roi_heads", "task_utils", "DetectionHead",
           "Pretrained", "convert_torchvision_state_dict", "load_torchvision_detector"]
