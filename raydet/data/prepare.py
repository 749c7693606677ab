"""``python -m raydet.data.prepare {shapes,neon_trees,photos} --out DIR``: write a built-in dataset + COCO json.

    python -m raydet.data.prepare shapes --out data/shapes [--seed 0 --num-train 240 --num-val 60]
    python -m raydet.data.prepare neon_trees --out data/neon_trees [--source DIR]
    python -m raydet.data.prepare photos --out data/photos [--source DIR --seed 0 --num-train 240 --num-val 60]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from .. import storage
from ..errors import report_user_errors
from .neon_trees import prepare_neon_trees
from .photos import prepare_photos
from .shapes import generate_shapes


def _describe(written: dict) -> None:
    for split, path in written.items():
        data = json.loads(storage.read_bytes(path))
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} boxes -> {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raydet.data.prepare", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="dataset", required=True)
    shapes = commands.add_parser("shapes", help="synthetic shapes (seconds; the demo's and the tests' dataset)")
    shapes.add_argument("--out", required=True, help="output folder")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--num-train", type=int, default=240)
    shapes.add_argument("--num-val", type=int, default=60)
    neon = commands.add_parser("neon_trees", help="NEON aerial tree crowns (DeepForest sample data, MIT licence)")
    neon.add_argument("--out", required=True, help="output folder")
    neon.add_argument("--source", help="folder with the DeepForest files "
                                       "(default: ../shared/data/neon_trees, else download)")
    photos = commands.add_parser("photos", help="COCO-like JPEG photographs (mostly 640x480) cut from the NEON "
                                                "orthophoto, in COCO's layout: for measuring the data pipeline")
    photos.add_argument("--out", required=True, help="output folder")
    photos.add_argument("--source", help="folder with the DeepForest files (as for neon_trees)")
    photos.add_argument("--seed", type=int, default=0)
    photos.add_argument("--num-train", type=int, default=240)
    photos.add_argument("--num-val", type=int, default=60)
    args = parser.parse_args(argv)

    def body() -> None:
        start = time.perf_counter()
        if args.dataset == "shapes":
            written = generate_shapes(args.out, seed=args.seed, num_train=args.num_train, num_val=args.num_val)
        elif args.dataset == "photos":
            written = prepare_photos(args.out, source=args.source, num_train=args.num_train, num_val=args.num_val,
                                     seed=args.seed)
        else:
            written = prepare_neon_trees(args.out, source=args.source)
        _describe(written)
        print(f"{args.dataset} written to {args.out} in {time.perf_counter() - start:.1f} s")

    return report_user_errors(body)


if __name__ == "__main__":
    sys.exit(main())
