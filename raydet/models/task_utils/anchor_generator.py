"""Anchors for dense heads: one set of boxes per feature-map cell, tiled over every level."""
from __future__ import annotations

import torch
from torch import Tensor

from ...registry import TASK_UTILS


@TASK_UTILS.register()
class AnchorGenerator:
    """Anchors ``[H*W*A, 4] x1y1x2y2`` per feature level, tiled the way torchvision tiles them.

    A level with stride ``s`` and an ``H x W`` map gets, at cell ``(i, j)``, the
    level's base anchors shifted to ``((j + center_offset) * s, (i + center_offset) * s)``.
    Base anchors are centred on 0, one per (aspect ratio, size) pair, ratio-major
    (``ratio_0/size_0, ratio_0/size_1, …``); an aspect ratio is ``h / w`` and
    keeps the area ``size**2``.  Anchors are ordered ``(i, j, anchor)`` — the
    order in which dense heads flatten their ``[B, A*C, H, W]`` outputs.

    Args:
        strides: the stride of each feature level in input pixels (``[8, 16, 32, 64, 128]``).
        sizes: the anchor sizes (square-root of the area, in pixels) of each level.
        aspect_ratios: the ``h / w`` ratios used at every level.
        center_offset: where in a cell anchors are centred, as a fraction of the
            stride; torchvision (and mmdetection's anchor heads) use 0, mmdetection's
            point-based heads 0.5.
        round_base_anchors: round the base anchors to whole pixels, as torchvision does
            (mmdetection does not).

    FCOS uses one square anchor per cell whose side is the stride: ``sizes: [[8], [16], …]``
    with ``aspect_ratios: [1.0]`` — its "points" are the anchor centres.

    torchvision infers a level's stride as ``padded_size // feature_size``; that is
    the true stride only when the padded image size is a multiple of it (e.g. of 128
    for P7).  raydet uses the configured strides, so on other sizes the P6/P7 anchors
    of a converted torchvision model sit where the network's cells really are.
    """

    def __init__(self, strides: list[int], sizes: list[list[float]], aspect_ratios: list[float],
                 center_offset: float = 0.0, round_base_anchors: bool = True):
        if len(strides) != len(sizes):
            raise ValueError(f"strides has {len(strides)} levels but sizes has {len(sizes)}")
        if len({len(level_sizes) for level_sizes in sizes}) != 1:
            raise ValueError("every level needs the same number of sizes (the head is shared across levels)")
        self.strides = list(strides)
        self.sizes = [list(level_sizes) for level_sizes in sizes]
        self.aspect_ratios = list(aspect_ratios)
        self.center_offset = center_offset
        self.round_base_anchors = round_base_anchors
        self.base_anchors = [self._base_anchors(level_sizes) for level_sizes in self.sizes]
        self._cache: dict[tuple, list[Tensor]] = {}

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_anchors(self) -> int:
        """Anchors per feature-map cell (the same at every level)."""
        return len(self.sizes[0]) * len(self.aspect_ratios)

    def _base_anchors(self, sizes: list[float]) -> Tensor:
        """``[A, 4]`` anchors centred on 0 (computed in float32 like torchvision)."""
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        ratios = torch.as_tensor(self.aspect_ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        widths = (w_ratios[:, None] * scales[None, :]).view(-1)
        heights = (h_ratios[:, None] * scales[None, :]).view(-1)
        anchors = torch.stack([-widths, -heights, widths, heights], dim=1) / 2
        return anchors.round() if self.round_base_anchors else anchors

    def grid_anchors(self, featmap_sizes: list[tuple[int, int]], device: torch.device) -> list[Tensor]:
        """Anchors of every level, ``[H_l * W_l * A, 4]`` float32 each; cached per sizes and device."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"{len(featmap_sizes)} feature maps for an anchor generator with {self.num_levels} levels")
        key = (tuple(tuple(size) for size in featmap_sizes), str(device))
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = [self._level_anchors(base, stride, size, device)
                       for base, stride, size in zip(self.base_anchors, self.strides, featmap_sizes)]
            if len(self._cache) > 64:  # many image sizes (multi-scale training): keep memory bounded
                self._cache.clear()
            self._cache[key] = anchors
        return anchors

    def _level_anchors(self, base_anchors: Tensor, stride: int, featmap_size: tuple[int, int],
                       device: torch.device) -> Tensor:
        height, width = featmap_size
        offset = self.center_offset * stride
        shifts_x = torch.arange(width, dtype=torch.float32, device=device) * stride + offset
        shifts_y = torch.arange(height, dtype=torch.float32, device=device) * stride + offset
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        anchors = shifts.view(-1, 1, 4) + base_anchors.to(device).view(1, -1, 4)
        return anchors.reshape(-1, 4)

    def __repr__(self) -> str:
        return (f"AnchorGenerator(strides={self.strides}, sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, "
                f"center_offset={self.center_offset}, round_base_anchors={self.round_base_anchors})")

