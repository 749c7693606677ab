"""Hostile image files, made in the test: what users' folders hold and what an attacker sends."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, bit_depth: int = 8, data: bytes = b"\x00" * 10) -> bytes:
    """An RGB PNG whose header declares ``width x height`` and whose data is ``data`` compressed (too little for
    a large declared size: libpng's "Not enough image data")."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(data))
            + _chunk(b"IEND", b""))


def png16_rgb(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of ``[H, W, 3]`` uint16 ``pixels`` (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    return png_declaring(width, height, 16, rows)


def encoded(pixels: np.ndarray, fmt: str, mode: str | None = None, **save) -> bytes:
    """``[H, W, 3]`` uint8 ``pixels`` encoded by Pillow as ``fmt`` (``mode``: converted first, e.g. ``"CMYK"``)."""
    from PIL import Image

    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) is rewritten to declare ``width x height``."""
    data = bytearray(encoded(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def mutated(data: bytes, rng: np.random.Generator, max_flips: int = 8) -> bytes:
    """``data`` with 1..``max_flips`` random bytes replaced, or cut short (one case in four)."""
    if rng.random() < 0.25:
        return data[: int(rng.integers(1, len(data)))]
    out = bytearray(data)
    for _ in range(int(rng.integers(1, max_flips + 1))):
        out[int(rng.integers(len(out)))] = int(rng.integers(256))
    return bytes(out)
