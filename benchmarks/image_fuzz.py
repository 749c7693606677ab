"""Hostile images, counted: mutated PNG / JPEG / WebP / GIF / BMP files through ``torchvision.io.decode_image``
and through raydet's ``decode_rgb`` (``raydet.data.image_io``), and what each costs on valid images.

Each case is a small image encoded by Pillow with 1-8 bytes replaced, or cut short (one case in four), seeded.
A case either decodes, is refused with an exception, or ends the process (a native crash: the harness notes
the case and starts a new process at the next one).  Side by side, in one run: crashes per format for each
decoder, and the milliseconds to decode a valid 640 x 480 PNG and JPEG with each (``pillow_png_vs_torchvision``:
raydet decodes PNG with Pillow, whose errors are exceptions).

Prints one JSON line.

    python benchmarks/image_fuzz.py [--cases 2000] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

# Decodes cases start.. of the seeded sequence; prints each case's number before decoding it and its outcome
# after, so the parent knows which case a crash ended on.
CHILD = """
import sys
import numpy as np
import torch, torchvision.io
from raydet.data.image_io import ImageError, decode_rgb
from tests.hostile_images import encoded, mutated

decoder, seed, cases, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
pixels = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
sources = {fmt: encoded(pixels, fmt) for fmt in %r}
for case in range(cases):
    fmt = list(sources)[case %% len(sources)]
    data = mutated(sources[fmt], rng)
    if case < start:
        continue
    print("case", case, fmt, flush=True)
    try:
        if decoder == "torchvision":
            torchvision.io.decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                        mode=torchvision.io.ImageReadMode.RGB, apply_exif_orientation=True)
        else:
            decode_rgb(data)
        print("decoded", flush=True)
    except (ImageError, RuntimeError):
        print("refused", flush=True)
""" % (FORMATS,)


def fuzz(decoder: str, seed: int, cases: int) -> dict:
    """Run the cases through ``decoder``; counts of decoded / refused cases and crashes per format."""
    counts = {"decoded": 0, "refused": 0, "crashed": {fmt: 0 for fmt in FORMATS}}
    start = 0
    while start < cases:
        child = subprocess.run([sys.executable, "-c", CHILD, decoder, str(seed), str(cases), str(start)], cwd=REPO,
                               capture_output=True, text=True)
        last_case, last_format = start, None
        for line in child.stdout.splitlines():
            if line.startswith("case "):
                _, number, last_format = line.split()
                last_case = int(number)
            elif line in ("decoded", "refused"):
                counts[line] += 1
                last_format = None
        if child.returncode == 0:
            break
        if last_format is None:
            raise RuntimeError(f"the {decoder} harness failed outside a case: {child.stderr[-2000:]}")
        counts["crashed"][last_format] += 1
        start = last_case + 1
    counts["crashes"] = sum(counts["crashed"].values())
    return counts


def decode_ms() -> dict:
    """Milliseconds per decode of a valid 640 x 480 photo-like image, PNG and JPEG, with each decoder."""
    import numpy as np
    import torch
    import torchvision.io

    sys.path.insert(0, str(REPO))
    from raydet.data.image_io import decode_rgb
    from tests.hostile_images import encoded

    rng = np.random.default_rng(0)
    pixels = np.clip(np.linspace(0, 255, 640)[None, :, None] + rng.normal(0, 20, (480, 640, 3)), 0, 255)
    timings = {}
    for fmt in ("PNG", "JPEG"):
        data = encoded(pixels.astype(np.uint8), fmt)
        for name, decode in (("torchvision", lambda d: torchvision.io.decode_image(
                torch.frombuffer(bytearray(d), dtype=torch.uint8), mode=torchvision.io.ImageReadMode.RGB)),
                             ("raydet", decode_rgb)):
            decode(data)
            begun = time.perf_counter()
            for _ in range(40):
                decode(data)
            timings[f"{fmt.lower()}_{name}_ms"] = round((time.perf_counter() - begun) / 40 * 1e3, 2)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {decoder: fuzz(decoder, args.seed, args.cases) for decoder in ("torchvision", "raydet")}
    timings = decode_ms()
    print(json.dumps({
        "benchmark": "image_fuzz", "cases": args.cases, "seed": args.seed, **results, **timings,
        "pillow_png_vs_torchvision": round(timings["png_raydet_ms"] / timings["png_torchvision_ms"], 3),
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
    }))


if __name__ == "__main__":
    main()
