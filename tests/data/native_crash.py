"""A transform that crashes its process (a segmentation fault, as a native decoder bug would) on images of one
size: for the tests of ``raydet.data.crash_journal``.  Imported by Ray's workers by name."""
from __future__ import annotations

import ctypes

from raydet.data.transforms.base import Transform
from raydet.registry import TRANSFORMS


@TRANSFORMS.register()
class CrashOnSize(Transform):
    """Passes samples on unchanged, except that an original image of ``height x width`` ends the process."""

    def __init__(self, height: int, width: int):
        self.shape = (height, width)

    def __call__(self, sample, rng):
        if tuple(sample.ori_shape) == self.shape:
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        return sample
