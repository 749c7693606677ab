"""Bytes per training batch with instance masks: boxes only vs masks as compressed RLE vs dense bitmaps.

    python benchmarks/mask_batch_bytes.py [--images 96] [--batch 4] [--img-scale 640 480]

Generates the built-in shapes dataset (with its instance masks) into a
temporary folder, then decodes and collates training batches Ray-free, exactly
as a Ray Data decode task does (``raydet.data.decode.decode_planned_batch`` on
the records table, the epoch plan's batches and seeds), with the pipeline
``Resize`` (keep ratio, ``--img-scale``) + ``RandomFlip`` + ``Normalize`` +
``Pad`` (32).  For each batch it counts the bytes of the numpy columns that
``pack_batch`` makes — what one batch puts in Ray's object store:

- ``boxes_only``: the batch without masks (image, metas, boxes, labels);
- ``with_rle_masks``: the same batch with its masks as compressed RLE (how they travel);
- ``with_dense_masks``: the same batch if its masks travelled as uint8 bitmaps
  (``N_i x H_i x W_i`` bytes per image).

Prints one JSON line: bytes per batch (mean), the masks' own bytes, the ratios
between them, RLE bytes per instance, the milliseconds per batch that encoding
(in the decode task) and decoding (in the training process) the RLE cost, and
the records table's bytes (what every worker holds) without and with masks.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from raydet.data import CocoDataset  # noqa: E402
from raydet.data.collate import pack_batch, pack_masks, unpack_masks  # noqa: E402
from raydet.data.decode import decode_planned_batch  # noqa: E402
from raydet.data.records import records_to_table  # noqa: E402
from raydet.data.sampling import aspect_groups, augment_seeds, plan_train_epoch  # noqa: E402
from raydet.data.shapes import generate_shapes  # noqa: E402
from raydet.data.transforms import Compose, Normalize, Pad, RandomFlip, Resize  # noqa: E402


def training_pipeline(img_scale: list[int]) -> Compose:
    return Compose([Resize(img_scale=img_scale, keep_ratio=True), RandomFlip(flip_ratio=0.5),
                    Normalize(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]), Pad(size_divisor=32)])


def packed_bytes(columns: dict[str, np.ndarray]) -> int:
    return sum(int(value.nbytes) for value in columns.values())


def measure_batch(batch: dict) -> dict[str, float]:
    """One collated batch with ``gt_masks`` -> its byte counts and RLE encode / decode milliseconds."""
    boxes_only = packed_bytes(pack_batch({key: value for key, value in batch.items() if key != "gt_masks"}))
    start = time.perf_counter()
    mask_columns = pack_masks(batch["gt_masks"])
    encode_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    decoded = unpack_masks({**mask_columns, "gt_counts": np.array([len(m) for m in batch["gt_masks"]])})
    decode_ms = (time.perf_counter() - start) * 1000
    assert all(torch.equal(a, b) for a, b in zip(decoded, batch["gt_masks"], strict=True))
    rle_bytes = packed_bytes(mask_columns)
    dense_bytes = sum(int(masks.numel()) for masks in batch["gt_masks"])
    return {"boxes_only": boxes_only, "rle": rle_bytes, "dense": dense_bytes,
            "instances": sum(len(masks) for masks in batch["gt_masks"]),
            "rle_counts_bytes": int(mask_columns["gt_mask_rle"].nbytes), "encode_ms": encode_ms, "decode_ms": decode_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="training images generated (one epoch is measured)")
    parser.add_argument("--batch", type=int, default=4, help="images per batch")
    parser.add_argument("--img-scale", type=int, nargs=2, default=[640, 480], metavar=("LONG", "SHORT"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        generate_shapes(folder, seed=args.seed, num_train=args.images, num_val=1)
        dataset = CocoDataset(str(Path(folder) / "annotations/train.json"), str(Path(folder) / "images"),
                              with_mask=True, on_bad_record="error")
        table = dataset.table()
        groups = aspect_groups(table["height"].to_numpy(), table["width"].to_numpy())
        plan = plan_train_epoch(groups, args.batch, 1, args.seed, 0)[0]
        seeds = augment_seeds(args.seed, 0, plan[None].shape)[0]
        pipeline = training_pipeline(args.img_scale)
        batches = []
        for indices, batch_seeds in zip(plan, seeds):
            batch, problems = decode_planned_batch(table, indices, batch_seeds, pipeline, 32, with_gt=True)
            assert not problems, problems.lines()
            batches.append(measure_batch(batch))
        boxes_only_table = records_to_table([{**record, "masks": None} for record in dataset.records])

    mean = {key: statistics.fmean(b[key] for b in batches) for key in batches[0]}
    per_batch = {"boxes_only": round(mean["boxes_only"]), "with_rle_masks": round(mean["boxes_only"] + mean["rle"]),
                 "with_dense_masks": round(mean["boxes_only"] + mean["dense"])}
    print(json.dumps({
        "benchmark": "mask_batch_bytes",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "images": args.images, "batch": args.batch, "img_scale": args.img_scale, "batches": len(batches),
        "instances_per_batch": round(mean["instances"], 2),
        "bytes_per_batch": per_batch,
        "mask_bytes_per_batch": {"rle": round(mean["rle"]), "dense_uint8": round(mean["dense"])},
        "ratios": {
            "with_rle_masks_over_boxes_only": round(per_batch["with_rle_masks"] / per_batch["boxes_only"], 4),
            "with_dense_masks_over_boxes_only": round(per_batch["with_dense_masks"] / per_batch["boxes_only"], 4),
            "dense_masks_over_rle_masks": round(mean["dense"] / mean["rle"], 1),
        },
        "rle_bytes_per_instance": round(mean["rle_counts_bytes"] / mean["instances"], 1),
        "ms_per_batch": {"encode_rle": round(mean["encode_ms"], 3), "decode_rle": round(mean["decode_ms"], 3)},
        "records_table_bytes": {"boxes_only": boxes_only_table.nbytes, "with_masks": table.nbytes},
    }))


if __name__ == "__main__":
    main()
