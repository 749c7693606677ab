"""Necks: backbone feature maps -> a pyramid of maps with one channel count."""
from .fpn import FPN
from .pafpn import PAFPN

__all__ = ["FPN", "PAFPN"]
