"""Path Aggregation Network neck (PANet, arXiv 1803.01534): FPN plus a bottom-up path."""
from __future__ import annotations

from torch import Tensor, nn

from ...registry import MODELS
from .fpn import FPN, ExtraConvSource


@MODELS.register()
class PAFPN(FPN):
    """FPN, then PANet's bottom-up path augmentation.

    After the FPN outputs ``P_i``, ``N_0 = P_0`` and ``N_{i+1} = conv3x3(P_{i+1} +
    conv3x3_stride2(N_i))``; extra levels are made from the ``N`` maps exactly as
    ``FPN`` makes them (``on_output`` uses the last ``N``).  Takes FPN's arguments,
    so ``model.neck.type: PAFPN`` is the only change a config needs.  (As in the
    paper, the path carries each ``N_i`` after its conv; mmdetection's PAFPN
    carries the sum before it.)
    """

    def __init__(self, in_channels: list[int], out_channels: int, num_outs: int, start_level: int = 0,
                 add_extra_convs: ExtraConvSource = False, relu_before_extra_convs: bool = False):
        super().__init__(in_channels, out_channels, num_outs, start_level, add_extra_convs, relu_before_extra_convs)
        num_inputs = len(in_channels) - start_level
        self.downsample_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(num_inputs - 1))
        self.pafpn_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(num_inputs - 1))
        for conv in [*self.downsample_convs, *self.pafpn_convs]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        """Backbone maps (finest first) -> ``num_outs`` maps ``[B, out_channels, H_l, W_l]``, finest first."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"PAFPN expects {len(self.in_channels)} inputs, got {len(inputs)}")
        merged = self.top_down(inputs)
        fpn_outs = [conv(x) for conv, x in zip(self.fpn_convs, merged)]
        outs = [fpn_outs[0]]
        for index, (downsample, conv) in enumerate(zip(self.downsample_convs, self.pafpn_convs)):
            outs.append(conv(fpn_outs[index + 1] + downsample(outs[-1])))
        return self.extra_levels(outs, inputs, merged)
