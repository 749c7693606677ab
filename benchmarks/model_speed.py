"""raydet vs torchvision on the same detector, weights and inputs: train step and inference speed.

For each detector, torchvision's ``<arch>_resnet50_fpn`` (seeded random weights)
and the raydet detector built from ``configs/_base_/models/<arch>_r50_fpn.yaml``
holding the converted weights are timed alternately in one process:

- train step: forward + backward of a batch (``--batch`` images of ``--size``²);
  Mask R-CNN's ground-truth masks are the ellipses inscribed in the boxes;
- inference: ``eval()`` forward of one image under ``torch.inference_mode``
  (Mask R-CNN: masks pasted into the image, torchvision's as probabilities,
  raydet's thresholded).

torchvision receives the images as its users give them (a list of 0..1 images,
``min_size = max_size = --size`` so its resize keeps the size) and normalises,
"resizes" and pads inside the model; raydet receives the Batch its data pipeline
produces (normalised, padded, stacked).  The time torchvision spends in that
transform is reported separately (``torchvision_transform_s``).

Prints one JSON line: per detector the median seconds of both and ``ratio``, the
median over rounds of raydet's time / torchvision's (below 1: raydet is faster).

raydet's speed paths (``raydet.accel``, the config's ``accel:`` section: ``fold_norm``,
``winograd``, ``gather_roi_align``, ``channels_last``; ``OPTIMISATIONS``) are applied to
``raydet`` as the configs set them.  The same weights are also timed, in the same
rounds, with none applied (``all_off``: the model zoo computing what torchvision
computes, op for op) and with each one left out in turn (``without``); ``share`` is
how much each adds to the ratio when it is left out (ratio without it - ratio with
all on).

``--backbone trainable`` (default) is torchvision's ``weights=None`` model (BatchNorm
in train mode, every layer trained); ``--backbone frozen`` is the set-up of the
configs and of torchvision with a pretrained backbone: ``FrozenBatchNorm2d`` (its
statistics taken from the benchmark's images), stem and ``layer1`` frozen.

    python benchmarks/model_speed.py [--size 512] [--batch 2] [--repeats 5] [--threads 1]
        [--detectors retinanet fcos fasterrcnn maskrcnn] [--backbone trainable|frozen]
"""
from __future__ import annotations

import argparse
import dataclasses
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

from raydet.accel import AccelSettings, apply_accel  # noqa: E402
from raydet.builder import build_model  # noqa: E402
from raydet.config import load_config  # noqa: E402
from raydet.config.parsed import parse_config  # noqa: E402
from raydet.models.detectors import BaseDetector  # noqa: E402
from raydet.models.torchvision_weights import convert_torchvision_state_dict  # noqa: E402

NUM_CLASSES = 80
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DETECTORS = {  # arch: (torchvision builder, raydet config, key paths of num_classes, torchvision adds a background)
    "retinanet": (torchvision.models.detection.retinanet_resnet50_fpn, "retinanet_r50_fpn.yaml", ("bbox_head",),
                  False),
    "fcos": (torchvision.models.detection.fcos_resnet50_fpn, "fcos_r50_fpn.yaml", ("bbox_head",), False),
    "fasterrcnn": (torchvision.models.detection.fasterrcnn_resnet50_fpn, "faster_rcnn_r50_fpn.yaml",
                   ("roi_head.bbox_head",), True),
    "maskrcnn": (torchvision.models.detection.maskrcnn_resnet50_fpn, "mask_rcnn_r50_fpn.yaml",
                 ("roi_head.bbox_head", "roi_head.mask_head"), True),
}
ALL = tuple(DETECTORS)
# raydet's speed paths (fields of AccelSettings) -> the detectors that have what they change
OPTIMISATIONS = {
    "fold_norm": ALL,
    "winograd": ALL,
    "gather_roi_align": ("fasterrcnn", "maskrcnn"),  # both RoI extractors of Mask R-CNN
    "channels_last": ALL,  # eval mode only
}


def optimisations(arch: str, configured: AccelSettings) -> dict[str, AccelSettings]:
    """The speed paths ``arch`` has on in its config (``configured``): name -> the settings without it."""
    default = AccelSettings()
    return {name: dataclasses.replace(configured, **{name: getattr(default, name)})
            for name, archs in OPTIMISATIONS.items() if arch in archs and getattr(configured, name)}


def freeze_like_pretrained(reference: torch.nn.Module, images: list[torch.Tensor]) -> None:
    """torchvision's set-up with a pretrained backbone (``FrozenBatchNorm2d``, 3 trainable layers),
    the frozen statistics measured on ``images`` (random weights would leave them 0 and 1)."""
    body = reference.backbone.body
    norms = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    reference.train()
    with torch.no_grad():
        body(reference.transform(images)[0].tensors)
    for parent in list(body.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                frozen = torchvision.ops.FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key).detach())
                setattr(parent, name, frozen)
    for name, parameter in body.named_parameters():
        if not name.startswith(("layer2.", "layer3.", "layer4.")):
            parameter.requires_grad_(False)


def build_models(arch: str, size: int, backbone: str, images: list[torch.Tensor],
                 ) -> tuple[torch.nn.Module, dict[str, torch.nn.Module]]:
    """torchvision's model (weights=None, seeded) and raydet's with the same weights: ``raydet``
    (the config's speed paths applied), ``all_off`` and one ``without_<option>`` per path.

    Single-stage class logits get a wider init (std 0.05, bias 0) so that, as with a
    trained model, many anchors pass the score threshold and post-processing has work.
    """
    builder, config_name, head_paths, background = DETECTORS[arch]
    torch.manual_seed(0)
    reference = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + background,
                        min_size=size, max_size=size)
    if not background:
        torch.nn.init.normal_(reference.head.classification_head.cls_logits.weight, std=0.05)
        torch.nn.init.zeros_(reference.head.classification_head.cls_logits.bias)
    overrides = [*(f"model.{path}.num_classes={NUM_CLASSES}" for path in head_paths), "model.backbone.init_cfg=null"]
    if backbone == "frozen":
        freeze_like_pretrained(reference, images)  # the configs' own backbone settings
    else:  # torchvision's weights=None backbone
        overrides += ["model.backbone.norm=BN", "model.backbone.norm_eval=false", "model.backbone.frozen_stages=-1"]
    config = load_config(REPO / "configs/_base_/models" / config_name, overrides)
    configured = parse_config(config).accel
    variants = {"raydet": configured, "all_off": AccelSettings(),
                **{f"without_{name}": settings for name, settings in optimisations(arch, configured).items()}}
    state = convert_torchvision_state_dict(reference.state_dict(), arch)
    models = {}
    for name, settings in variants.items():
        models[name] = build_model(config)
        models[name].load_state_dict(state, strict=True)
        apply_accel(models[name], settings)
    return reference, models


def make_inputs(batch: int, size: int):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=generator) for _ in range(batch)]
    boxes = []
    for _ in range(batch):
        top_left = torch.rand(4, 2, generator=generator) * size * 0.6
        boxes.append(torch.cat([top_left, top_left + 16 + torch.rand(4, 2, generator=generator) * size * 0.35], dim=1))
    labels = [torch.randint(0, NUM_CLASSES, (4,), generator=generator) for _ in range(batch)]
    masks = [inscribed_ellipses(image_boxes, size) for image_boxes in boxes]
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    img = torch.stack([(image - mean) / std for image in images])
    metas = [{"ori_shape": (size, size), "img_shape": (size, size), "pad_shape": (size, size),
              "scale_factor": [1.0] * 4, "flip": False, "flip_direction": None, "image_id": i} for i in range(batch)]
    return images, boxes, labels, masks, img, metas


def inscribed_ellipses(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[N, size, size]``: the ellipse inscribed in each of ``boxes [N, 4]``."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    centre, radius = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
    return ((((xs - centre[:, 0, None, None]) / radius[:, 0, None, None]) ** 2
             + ((ys - centre[:, 1, None, None]) / radius[:, 1, None, None]) ** 2) <= 1).to(torch.uint8)


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


def benchmark(arch: str, size: int, batch: int, repeats: int, backbone: str = "trainable") -> dict:
    images, boxes, labels, masks, img, metas = make_inputs(batch, size)
    reference, models = build_models(arch, size, backbone, images)
    options = [name.removeprefix("without_") for name in models if name.startswith("without_")]
    background = DETECTORS[arch][3]
    with_mask = arch == "maskrcnn"
    targets = [{"boxes": image_boxes, "labels": image_labels + background, **({"masks": m} if with_mask else {})}
               for image_boxes, image_labels, m in zip(boxes, labels, masks)]
    gt_masks = masks if with_mask else None

    def raydet_runs(model):
        return (lambda: train_step(model, lambda: model(img, metas, boxes, labels, gt_masks=gt_masks)),
                lambda: model.simple_test(img[:1], metas[:1]))

    runs = {"torchvision": (lambda: train_step(reference, lambda: reference(images, targets)),
                            lambda: reference(images[:1])),
            **{name: raydet_runs(model) for name, model in models.items()}}
    result = {}
    for phase, name in enumerate(("train_step_s", "inference_per_image_s")):
        training = phase == 0
        for module in (reference, *models.values()):
            module.train(training)
        times = {who: [] for who in runs}
        with torch.inference_mode(not training):
            for repeat in range(repeats + 1):  # the first round warms up; each round starts with another one
                order = list(runs)
                order = order[repeat % len(order):] + order[:repeat % len(order)]
                for who in order:
                    elapsed = seconds(runs[who][phase])
                    if repeat:
                        times[who].append(elapsed)
            transform = [seconds(lambda training=training: reference.transform(images if training else images[:1],
                                                                               targets if training else None))
                         for _ in range(repeats)]
        entry = {"raydet": round(statistics.median(times["raydet"]), 4),
                 "torchvision": round(statistics.median(times["torchvision"]), 4),
                 "ratio": median_ratio(times["raydet"], times["torchvision"]),
                 "all_off_ratio": median_ratio(times["all_off"], times["torchvision"]),
                 "torchvision_transform_s": round(statistics.median(transform), 4)}
        entry["share"] = {option: round(median_ratio(times[f"without_{option}"], times["torchvision"])
                                        - entry["ratio"], 3) for option in options}
        result[name] = entry
    return result


def median_ratio(ours: list[float], theirs: list[float]) -> float:
    """The median of the rounds' ratios: each round's pair ran back to back, so this is robust
    to the machine's load drifting between rounds."""
    return round(statistics.median(a / b for a, b in zip(ours, theirs)), 3)


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
    parser.add_argument("--backbone", choices=["trainable", "frozen"], default="trainable",
                        help="torchvision's weights=None BatchNorm backbone, or the configs' FrozenBN one")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for arch in args.detectors:
        results[arch] = benchmark(arch, args.size, args.batch, args.repeats, args.backbone)
        print(f"{arch}: {results[arch]}", file=sys.stderr, flush=True)  # progress; stdout stays one JSON line
    print(json.dumps({"benchmark": "model_speed", "machine": machine(), "image_size": args.size,
                      "batch": args.batch, "repeats": args.repeats, "backbone": args.backbone,
                      "detectors": results}))


if __name__ == "__main__":
    main()
