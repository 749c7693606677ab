"""Winograd convolution F(m x m, 3x3) for the 3x3 stride-1 convolutions of a detector on the CPU.

Per ``m x m`` output tile, ``y = A^T [(G g G^T) * (B^T d B)] A`` (Lavin & Gray, arXiv
1509.09308): a 3x3 convolution becomes ``(m + 2)**2`` matrix products over the
channels, with ``(m + 2)**2 / (9 m**2)`` of a direct convolution's multiplications
(``m = 2``: 0.44, ``m = 4``: 0.25).  The tile transforms are small strided
convolutions and matrix products (Kronecker products of ``B^T``, ``A^T``, ``G``); they
run one image and one band of tile rows at a time, so that the transformed tiles stay
in cache.  The forward pass, the input gradient (the same convolution with the
flipped, transposed weights) and the weight gradient (the adjoint of the forward map)
are all computed this way.

It is the convolution's function, computed with other roundings: against a float64
reference, F(2x2, 3x3) (transforms of 0, +-1, +-1/2) is as accurate as oneDNN's direct
convolution or more; F(4x4, 3x3), the usual choice of Winograd libraries, has about
3x its error (about 1e-5 relative on a ResNet's activations).

On a CPU core oneDNN's direct 3x3 convolution is compute-bound; this one is faster
from about 24x24 maps with 128 or more input channels (``output_tile``), which is where
a ResNet-50 + FPN detector spends most of its time (FPN outputs, RPN conv, the
RetinaNet / FCOS towers); F(4x4, 3x3) is about 1.5-2x as fast there (forward and
backward).  It is not used on GPUs, for other dtypes, or under autocast.

``output_tile`` says which calls gain; ``raydet.accel.winograd_conv.WinogradConv2d``
is the module that takes this path for them (``accel.winograd``), keeping the
transformed weights of a weight that needs no gradient.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

OutputTile = Literal[2, 4]
# From how many output pixels per image it beats oneDNN's direct convolution on a CPU core (measured,
# one thread), by input channels.  Small maps gain only when the weights' transform is kept (no gradient):
# there F(2x2, 3x3) is used below LARGE_AREA; while training, every tile needs LARGE_AREA.
MIN_AREA = {128: 24 * 24, 256: 12 * 12}
LARGE_AREA = 24 * 24
_BAND_FLOATS = 2 ** 22  # transformed tiles per band (16 MiB of float32): what stays in the L3 cache

# (B^T, G, A^T) for F(m x m, 3x3): interpolation points 0, +-1 (m = 2); 0, +-1, +-2 (m = 4)
_MATRICES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}
_G = {m: torch.tensor(g, dtype=torch.float64) for m, (_, g, _) in _MATRICES.items()}
# per m, the 2-D transforms as matrices on flattened tiles: input [t*t, t*t], weight [t*t, 9], output [m*m, t*t]
_TRANSFORMS = {m: tuple(torch.kron(a, a) for a in (torch.tensor(b, dtype=torch.float64) for b in matrices))
               for m, matrices in _MATRICES.items()}
# per m, the tile transforms as convolution filters: B^T d B on a padded map [t*t, 1, t, t] (stride m),
# A dy A^T on an output gradient [t*t, 1, m, m] (stride m)
_FILTERS = {m: (_TRANSFORMS[m][0].reshape((m + 2) ** 2, 1, m + 2, m + 2),
                _TRANSFORMS[m][2].t().reshape((m + 2) ** 2, 1, m, m)) for m in _MATRICES}


def _transform(m: int, which: int, like: Tensor) -> Tensor:
    return _TRANSFORMS[m][which].to(dtype=like.dtype, device=like.device)


def _filter(m: int, which: int, like: Tensor) -> Tensor:
    return _FILTERS[m][which].to(dtype=like.dtype, device=like.device)


def _g(m: int, like: Tensor) -> Tensor:
    return _G[m].to(dtype=like.dtype, device=like.device)


def transform_weight(weight: Tensor, m: OutputTile = 4) -> Tensor:
    """``[C_out, C_in, 3, 3]`` -> ``G g G^T`` per channel pair, ``[(m + 2)**2, C_out, C_in]``."""
    out_channels, in_channels = weight.shape[:2]
    g = _g(m, weight)
    rows = torch.mm(g, weight.permute(2, 3, 0, 1).reshape(3, -1)).view(m + 2, 3, -1)  # G along kernel rows
    return torch.matmul(g, rows).view(-1, out_channels, in_channels)  # ... then along kernel columns


def _weight_from_transformed(grad_u: Tensor, m: int) -> Tensor:
    """The adjoint of ``transform_weight``: ``[(m + 2)**2, C_out, C_in]`` -> ``[C_out, C_in, 3, 3]``."""
    t, (out_channels, in_channels) = m + 2, grad_u.shape[1:]
    g = _g(m, grad_u)
    columns = torch.matmul(g.t(), grad_u.view(t, t, -1))  # [t, 3, C_out * C_in]
    grad = torch.mm(g.t(), columns.view(t, -1)).view(3, 3, out_channels, in_channels)
    return grad.permute(2, 3, 0, 1).contiguous()


def _bands(tile_rows: int, tile_cols: int, tile_area: int, channels: int) -> list[tuple[int, int]]:
    """Ranges of tile rows whose transformed tiles (``tile_area * channels * rows * tile_cols``) stay in cache."""
    rows = max(1, _BAND_FLOATS // (tile_area * channels * tile_cols))
    return [(start, min(start + rows, tile_rows)) for start in range(0, tile_rows, rows)]


def _input_tiles(band: Tensor, m: int) -> Tensor:
    """``B^T d B`` of the overlapping ``(m + 2)``-square tiles (stride ``m``) of one image's padded rows
    ``band [C, m * rows + 2, m * tw + 2]`` -> ``[(m + 2)**2, C, rows * tw]`` (a strided view).

    The transform is a strided convolution of the channels taken as a batch (oneDNN's is
    faster than copying out the overlapping tiles and multiplying them)."""
    t = m + 2
    tiles = F.conv2d(band.unsqueeze(1), _filter(m, 0, band), stride=m)  # [C, t*t, rows, tw]
    return tiles.view(band.shape[0], t * t, -1).transpose(0, 1)


def _forward(x: Tensor, transformed_weight: Tensor, bias: Tensor | None, m: int) -> Tensor:
    """``conv2d(x, weight, bias, padding=1)`` from ``transformed_weight = transform_weight(weight, m)``;
    one image and one band of tile rows at a time, so that the transformed tiles stay in cache."""
    n, in_channels, h, w = x.shape
    out_channels = transformed_weight.shape[1]
    th, tw = -(-h // m), -(-w // m)
    memory_format = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and in_channels > 1 \
        else torch.contiguous_format  # the output's layout is the input's, as with conv2d
    padded = F.pad(x.contiguous(), (1, 1 + m * tw - w, 1, 1 + m * th - h))
    output_transform = _transform(m, 2, x)
    y = torch.empty((n, out_channels, m * th, m * tw), dtype=x.dtype, device=x.device, memory_format=memory_format)
    tiles_of_y = y.view(n, out_channels, th, m, tw, m)
    for image in range(n):
        for start, stop in _bands(th, tw, (m + 2) ** 2, max(in_channels, out_channels)):
            products = torch.bmm(transformed_weight, _input_tiles(padded[image, :, m * start:m * stop + 2], m))
            out = torch.mm(output_transform, products.view(products.shape[0], -1))  # A^T m A: [m*m, C_out*P]
            out = out.view(m, m, out_channels, stop - start, tw)
            tiles_of_y[image, :, start:stop].copy_(out.permute(2, 3, 0, 4, 1))
    if bias is not None:
        y += bias[:, None, None]
    return y if (m * th, m * tw) == (h, w) else y[:, :, :h, :w].contiguous(memory_format=memory_format)


def _weight_grad(x: Tensor, grad: Tensor, m: int) -> Tensor:
    """The weight gradient ``[C_out, C_in, 3, 3]`` of the convolution of ``x`` for ``grad [N, C_out, H, W]``:
    the adjoint of ``_forward`` (and of ``transform_weight``), band by band."""
    n, in_channels, h, w = x.shape
    out_channels = grad.shape[1]
    th, tw = -(-h // m), -(-w // m)
    padded = F.pad(x.contiguous(), (1, 1 + m * tw - w, 1, 1 + m * th - h))
    padded_grad = F.pad(grad, (0, m * tw - w, 0, m * th - h))
    output_adjoint = _filter(m, 1, x)
    grad_u = None
    for image in range(n):
        for start, stop in _bands(th, tw, (m + 2) ** 2, max(in_channels, out_channels)):
            grad_band = padded_grad[image, :, m * start:m * stop].unsqueeze(1)  # [C_out, 1, m * rows, m * tw]
            grad_products = F.conv2d(grad_band, output_adjoint, stride=m).flatten(2).transpose(0, 1)  # A dy A^T
            tiles = _input_tiles(padded[image, :, m * start:m * stop + 2], m).transpose(1, 2)
            if grad_u is None:
                grad_u = torch.bmm(grad_products, tiles)
            else:
                grad_u.baddbmm_(grad_products, tiles)
    return _weight_from_transformed(grad_u, m)


class _WinogradConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, transformed: Tensor | None, m: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.m = bias is not None, m
        return _forward(x, transform_weight(weight, m) if transformed is None else transformed, bias, m)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad = grad.contiguous()
        grad_input = grad_weight = grad_bias = None
        if need_input:  # the transposed convolution of stride 1, padding 1 is a 3x3 "same" convolution
            flipped = weight.transpose(0, 1).flip((2, 3))
            grad_input = _forward(grad, transform_weight(flipped, ctx.m), None, ctx.m)
        if need_weight:
            grad_weight = _weight_grad(x, grad, ctx.m)
        if need_bias and ctx.has_bias:
            grad_bias = grad.sum((0, 2, 3))
        return grad_input, grad_weight, grad_bias, None, None


def winograd_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, m: OutputTile = 4,
                    transformed_weight: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, stride=1, padding=1)`` for ``weight [C_out, C_in, 3, 3]`` by F(m x m, 3x3).

    ``transformed_weight``: ``transform_weight(weight, m)`` kept by the caller for a weight that needs no
    gradient (``[(m + 2)**2, C_out, C_in]``); None: transformed here."""
    if m not in _MATRICES:
        raise ValueError(f"Winograd output tiles offered: {sorted(_MATRICES)}, got {m}")
    return _WinogradConv2d.apply(x, weight, bias, transformed_weight, m)


def _is_one(value) -> bool:
    return all(v == 1 for v in value) if isinstance(value, (tuple, list)) else value == 1


def output_tile(x: Tensor, weight: Tensor, stride=1, padding=0, dilation=1, groups: int = 1,
                largest: OutputTile = 4) -> int | None:
    """The Winograd output tile (2 or 4, at most ``largest``) for ``F.conv2d(x, weight, …)``; ``None``
    unless it is a float32 CPU 3x3 "same" convolution on a map large enough to gain (``MIN_AREA``)."""
    if not (isinstance(x, Tensor) and isinstance(weight, Tensor) and x.dim() == 4 and weight.dim() == 4
            and tuple(weight.shape[2:]) == (3, 3) and groups == 1
            and _is_one(stride) and _is_one(dilation) and _is_one(padding)
            and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.layout == torch.strided and weight.layout == torch.strided and x.shape[0] > 0
            and not torch.is_autocast_enabled("cpu")):
        return None
    area = x.shape[2] * x.shape[3]
    if area < min((a for channels, a in MIN_AREA.items() if weight.shape[1] >= channels), default=float("inf")):
        return None
    if area >= LARGE_AREA:
        return largest
    return None if weight.requires_grad and torch.is_grad_enabled() else 2
