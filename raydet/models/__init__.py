"""The detection model zoo; importing it registers every component in ``MODELS``."""
from . import backbones, dense_heads, detectors, losses, necks, roi_heads, task_utils
from .pretrained import Pretrained
from .torchvision_weights import convert_torchvision_state_dict, load_torchvision_detector

__all__ = ["backbones", "dense_heads", "detectors", "losses", "necks", "roi_heads", "task_utils", "Pretrained",
           "convert_torchvision_state_dict", "load_torchvision_detector"]
