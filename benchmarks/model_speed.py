"""raydet vs torchvision on the same detector, weights and inputs: train step and inference speed.

For each detector, torchvision's ``<arch>_resnet50_fpn`` (seeded random weights)
and the raydet detector built from ``configs/_base_/models/<arch>_r50_fpn.yaml``
holding the converted weights are timed alternately in one process:

- train step: forward + backward of a batch (``--batch`` images of ``--size``²);
- inference: ``eval()`` forward of one image under ``torch.inference_mode``.

torchvision receives the images as its users give them (a list of 0..1 images,
``min_size = max_size = --size`` so its resize keeps the size) and normalises,
"resizes" and pads inside the model; raydet receives the Batch its data pipeline
produces (normalised, padded, stacked).  The time torchvision spends in that
transform is reported separately (``torchvision_transform_s``).

Prints one JSON line: per detector the median seconds of both and ``ratio``, the
median over rounds of raydet's time / torchvision's (below 1: raydet is faster).

    python benchmarks/model_speed.py [--size 512] [--batch 2] [--repeats 5] [--detectors retinanet fcos fasterrcnn]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from raydet.builder import build_model  # noqa: E402
from raydet.config import load_config  # noqa: E402
from raydet.models.detectors import BaseDetector  # noqa: E402
from raydet.models.torchvision_weights import convert_torchvision_state_dict  # noqa: E402

NUM_CLASSES = 80
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DETECTORS = {  # arch: (torchvision builder, raydet config, key path of num_classes, torchvision adds a background)
    "retinanet": (torchvision.models.detection.retinanet_resnet50_fpn, "retinanet_r50_fpn.yaml", "bbox_head", False),
    "fcos": (torchvision.models.detection.fcos_resnet50_fpn, "fcos_r50_fpn.yaml", "bbox_head", False),
    "fasterrcnn": (torchvision.models.detection.fasterrcnn_resnet50_fpn, "faster_rcnn_r50_fpn.yaml",
                   "roi_head.bbox_head", True),
}


def build_pair(arch: str, size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """torchvision's model (weights=None, seeded) and raydet's with the same weights.

    Single-stage class logits get a wider init (std 0.05, bias 0) so that, as with a
    trained model, many anchors pass the score threshold and post-processing has work.
    """
    builder, config_name, head_path, background = DETECTORS[arch]
    torch.manual_seed(0)
    reference = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + background,
                        min_size=size, max_size=size)
    if not background:
        torch.nn.init.normal_(reference.head.classification_head.cls_logits.weight, std=0.05)
        torch.nn.init.zeros_(reference.head.classification_head.cls_logits.bias)
    config = load_config(REPO / "configs/_base_/models" / config_name, [
        f"model.{head_path}.num_classes={NUM_CLASSES}", "model.backbone.init_cfg=null", "model.backbone.norm=BN",
        "model.backbone.norm_eval=false", "model.backbone.frozen_stages=-1"])  # torchvision's weights=None backbone
    model = build_model(config)
    model.load_state_dict(convert_torchvision_state_dict(reference.state_dict(), arch), strict=True)
    return reference, model


def make_inputs(batch: int, size: int):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=generator) for _ in range(batch)]
    boxes = []
    for _ in range(batch):
        top_left = torch.rand(4, 2, generator=generator) * size * 0.6
        boxes.append(torch.cat([top_left, top_left + 16 + torch.rand(4, 2, generator=generator) * size * 0.35], dim=1))
    labels = [torch.randint(0, NUM_CLASSES, (4,), generator=generator) for _ in range(batch)]
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    img = torch.stack([(image - mean) / std for image in images])
    metas = [{"ori_shape": (size, size), "img_shape": (size, size), "pad_shape": (size, size),
              "scale_factor": [1.0] * 4, "flip": False, "flip_direction": None, "image_id": i} for i in range(batch)]
    return images, boxes, labels, img, metas


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_step(model, call) -> None:
    """Forward + backward; the objective is what each library's trainer sums: raydet's ``loss*``
    entries, all of torchvision's (its single-stage losses are named ``classification`` etc.)."""
    model.zero_grad(set_to_none=True)
    losses = call()
    sum(v for k, v in losses.items() if "loss" in k or not isinstance(model, BaseDetector)).backward()


def benchmark(arch: str, size: int, batch: int, repeats: int) -> dict:
    reference, model = build_pair(arch, size)
    images, boxes, labels, img, metas = make_inputs(batch, size)
    background = DETECTORS[arch][3]
    targets = [{"boxes": image_boxes, "labels": image_labels + background}
               for image_boxes, image_labels in zip(boxes, labels)]
    runs = {
        "train_step_s": (
            lambda: train_step(reference, lambda: reference(images, targets)),
            lambda: train_step(model, lambda: model(img, metas, boxes, labels)),
        ),
        "inference_per_image_s": (
            lambda: reference(images[:1]),
            lambda: model.simple_test(img[:1], metas[:1]),
        ),
    }
    result = {}
    for name, (torchvision_run, raydet_run) in runs.items():
        training = name.startswith("train")
        reference.train(training)
        model.train(training)
        times = {"torchvision": [], "raydet": []}
        with torch.inference_mode(not training):
            for repeat in range(repeats + 1):  # the first round warms up, alternating who goes first
                order = [("torchvision", torchvision_run), ("raydet", raydet_run)]
                for who, run in order if repeat % 2 == 0 else order[::-1]:
                    elapsed = seconds(run)
                    if repeat:
                        times[who].append(elapsed)
            transform = [seconds(lambda training=training: reference.transform(images if training else images[:1],
                                                                               targets if training else None))
                         for _ in range(repeats)]
        # the ratio of each round (run back to back) is robust to the machine's load drifting
        ratios = [ours / theirs for ours, theirs in zip(times["raydet"], times["torchvision"])]
        result[name] = {"raydet": round(statistics.median(times["raydet"]), 4),
                        "torchvision": round(statistics.median(times["torchvision"]), 4),
                        "ratio": round(statistics.median(ratios), 3),
                        "torchvision_transform_s": round(statistics.median(transform), 4)}
    return result


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "gpu": None, "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="square image side (pixels)")
    parser.add_argument("--batch", type=int, default=2, help="images per train step")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--detectors", nargs="+", choices=list(DETECTORS), default=list(DETECTORS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for arch in args.detectors:
        results[arch] = benchmark(arch, args.size, args.batch, args.repeats)
        print(f"{arch}: {results[arch]}", file=sys.stderr, flush=True)  # progress; stdout stays one JSON line
    print(json.dumps({"benchmark": "model_speed", "machine": machine(), "image_size": args.size,
                      "batch": args.batch, "repeats": args.repeats, "detectors": results}))


if __name__ == "__main__":
    main()
