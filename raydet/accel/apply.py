"""``apply_accel``: the config's ``accel:`` speed paths, applied by the engine to a built model."""
from __future__ import annotations

from torch import nn

from ..config.schema import AccelSettings
from .channels_last import channels_last_backbone_input
from .folded_norm import fold_conv_norm_pairs
from .gather_roi_align import gather_in_roi_extractors
from .winograd_conv import use_winograd


def apply_accel(model: nn.Module, settings: AccelSettings) -> nn.Module:
    """Turn on ``settings``' CPU speed paths in the built ``model``, in place; returns ``model``.

    Each computes the same function up to rounding and keeps the parameters, buffers and
    state_dict keys, so weights load and checkpoints save as without it.  A path changes
    what it finds (a model without a ResNet has no norm to fold, one without an RoI
    extractor no RoIAlign) and leaves the rest as it is.  Apply it once, after building
    (and loading weights, if you like: caches notice changed tensors), before wrapping
    the model in DistributedDataParallel and building its optimizer.

    - ``fold_norm``: each conv + BatchNorm pair of a ResNet as one convolution while the
      norm normalises with constants (``raydet.accel.folded_norm``);
    - ``winograd`` (2 or 4): 3x3 stride-1 convolutions as Winograd F(m x m, 3x3) where they
      gain, folded ones included (``raydet.accel.winograd_conv``);
    - ``gather_roi_align``: the RoI extractors' RoIAlign as a weighted gather
      (``raydet.accel.gather_roi_align``);
    - ``channels_last``: channels-last feature maps in eval mode (``raydet.accel.channels_last``).
    """
    if settings.fold_norm:  # before Winograd: a folding convolution then becomes a Winograd one too
        fold_conv_norm_pairs(model)
    if settings.winograd:
        use_winograd(model, settings.winograd)
    if settings.gather_roi_align:
        gather_in_roi_extractors(model)
    if settings.channels_last:
        channels_last_backbone_input(model)
    return model
