"""Where pretrained weights come from: a local file or URI (``s3://…``), an http(s) URL or ``torchvision://NAME``."""
from __future__ import annotations

import io

import torch
from torch import Tensor

from .. import storage
from ..registry import TASK_UTILS

TORCHVISION_PREFIX = "torchvision://"


@TASK_UTILS.register()
class Pretrained:
    """A checkpoint to initialise a module from (mmdetection's ``init_cfg: {type: Pretrained}``).

    Args:
        checkpoint: a local path or a storage URI (``s3://…``, ``gs://…``); an
            ``http(s)://`` URL (downloaded once into torch's hub cache, ``$TORCH_HOME``);
            or ``torchvision://NAME[.WEIGHTS]`` for a torchvision model's published weights —
            ``torchvision://resnet50`` is ``ResNet50_Weights.IMAGENET1K_V1``, ``torchvision://retinanet_resnet50_fpn``
            its ``COCO_V1`` weights.
        prefix: keep only the keys under this prefix, without it
            (``prefix: backbone.`` takes a backbone out of a whole detector).

    Nothing is read when the config is built: ``init_weights()`` of the module
    that holds it reads the weights.
    """

    def __init__(self, checkpoint: str, prefix: str | None = None):
        self.checkpoint = checkpoint
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Pretrained(checkpoint={self.checkpoint!r}, prefix={self.prefix!r})"

    def url(self) -> str | None:
        """The URL the weights are downloaded from, or None for a local file."""
        if self.checkpoint.startswith(TORCHVISION_PREFIX):
            return torchvision_weights_url(self.checkpoint[len(TORCHVISION_PREFIX):])
        if self.checkpoint.startswith(("http://", "https://")):
            return self.checkpoint
        return None

    def load_state_dict(self) -> dict[str, Tensor]:
        """The checkpoint's tensors (on the CPU), unwrapped from ``{"state_dict": …}`` / ``{"model": …}``."""
        url = self.url()
        if url is not None:
            state = torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True)
        else:
            path = storage.absolute(self.checkpoint)
            try:
                data = storage.read_bytes(path)
            except FileNotFoundError:
                raise FileNotFoundError(f"pretrained checkpoint not found: {path}") from None
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        if self.prefix:
            state = {k[len(self.prefix):]: v for k, v in state.items() if k.startswith(self.prefix)}
            if not state:
                raise KeyError(f"{self.checkpoint} has no keys under the prefix {self.prefix!r}")
        return dict(state)


def torchvision_weights_url(spec: str) -> str:
    """URL of ``NAME[.WEIGHTS]`` (``resnet50``, ``resnet50.IMAGENET1K_V2``, ``fcos_resnet50_fpn``)."""
    from torchvision.models import get_model_weights

    name, _, weights_name = spec.partition(".")
    try:
        weights_enum = get_model_weights(name)
    except (KeyError, ValueError):
        raise ValueError(f"torchvision has no model {name!r} (in {TORCHVISION_PREFIX}{spec})") from None
    members = weights_enum.__members__
    if not weights_name:
        weights_name = next((w for w in ("IMAGENET1K_V1", "COCO_V1") if w in members), "DEFAULT")
    if weights_name not in members:
        raise ValueError(f"{name} has no weights {weights_name!r}; it has {', '.join(members)}")
    return members[weights_name].url
