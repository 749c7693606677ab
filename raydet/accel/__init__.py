"""CPU speed paths, applied to a built model by the engine from the config's ``accel:`` section.

The model zoo (``raydet.models``) computes torchvision's functions with torchvision's
kernels; ``apply_accel`` turns on, in a built model, faster ways of computing the
same functions on a CPU (equal up to rounding): Winograd convolutions, conv + norm
folding, RoIAlign as a gather, channels-last feature maps.  Model code never
imports this package.
"""
from ..config.schema import AccelSettings
from .apply import apply_accel

__all__ = ["AccelSettings", "apply_accel"]
