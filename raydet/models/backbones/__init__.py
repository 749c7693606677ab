"""Backbones: image ``[B, 3, H, W]`` -> list of feature maps, ``out_channels`` per map."""
from .resnet import ResNet
from .tiny_convnet import TinyConvNet

__all__ = ["ResNet", "TinyConvNet"]
