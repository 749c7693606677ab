"""Box-aware transforms, registered in ``TRANSFORMS`` (``type: Resize`` in a pipeline)."""
from .base import Compose, Transform
from .box_mapping import boxes_to_original
from .crop import RandomCrop
from .flip import RandomFlip
from .normalize import Normalize
from .pad import Pad
from .photometric import PhotoMetricDistortion
from .resize import Resize
from .rotate import RandomRotate90

__all__ = ["Compose", "Transform", "Normalize", "Pad", "PhotoMetricDistortion", "RandomCrop", "RandomFlip",
           "RandomRotate90", "Resize", "boxes_to_original"]
