"""The transform protocol: ``transform(sample, rng) -> sample``."""
from __future__ import annotations

import abc
import inspect

import numpy as np

from ...registry import TRANSFORMS
from ..sample import Sample


@TRANSFORMS.declare_base
class Transform(abc.ABC):
    """A box-aware step of a data pipeline (registered in ``TRANSFORMS``).

    ``__call__`` receives a ``Sample`` and a ``numpy.random.Generator`` and returns
    the sample (it may change it in place).  All randomness comes from ``rng``,
    which the pipeline seeds per sample from ``(seed, epoch, position)``, so a run
    is reproducible whichever process decodes which image.
    """

    @abc.abstractmethod
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        ...

    def __repr__(self) -> str:
        params = inspect.signature(type(self).__init__).parameters
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in params if name != "self" and hasattr(self, name))
        return f"{type(self).__name__}({args})"


class Compose:
    """Transforms applied in order."""

    def __init__(self, transforms: list[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"
