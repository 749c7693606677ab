"""Conv -> optional norm -> optional ReLU: the block heads, necks and the tiny backbone stack."""
from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

Norm = Literal["BN", "GN"]


class ConvModule(nn.Module):
    """``conv`` (``k x k``, "same" padding) then ``norm`` (BatchNorm / GroupNorm) then ReLU.

    ``bias`` defaults to "only without a norm layer"; torchvision's FCOS head keeps
    the bias in front of GroupNorm, so it passes ``bias=True``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 norm: Norm | None = None, num_groups: int = 32, activation: bool = True, bias: bool | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                              bias=norm is None if bias is None else bias)
        if norm == "BN":
            self.norm = nn.BatchNorm2d(out_channels)
        elif norm == "GN":
            self.norm = nn.GroupNorm(num_groups, out_channels)
        else:
            self.norm = None
        self.activation = nn.ReLU(inplace=True) if activation else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
