"""``python -m raydet.test CFG CHECKPOINT [--split test] [--aug-test] [--out results.json] [--set k=v ...]``.

COCO metrics of a checkpoint on ``data.<split>``, decoded by Ray Data on a local
Ray (or the cluster in ``RAY_ADDRESS``).  ``CHECKPOINT`` is a ``checkpoint.pt``
(e.g. ``best_checkpoint`` of ``final_metrics.json``) or its folder, a local
path or a URI (``s3://…``, ``gs://…``).

``--aug-test``: test-time augmentation — every ``--tta-scales`` scale of the
split's ``Resize``, each also flipped horizontally; the model's ``aug_test``
maps each view's detections back to the original image and merges them by NMS.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

from . import storage
from .cli import add_config_arguments, config_from_args
from .config import Config, ConfigError
from .errors import report_user_errors


def tta_configs(config: Config, split: str, scales: list[list[int]]) -> list[Config]:
    """One config per test-time view: each scale, unflipped and flipped (``Resize`` and ``RandomFlip`` replaced)."""
    pipeline = config["data"][split].get("pipeline") or []
    kinds = [step.get("type") for step in pipeline]
    if "Resize" not in kinds:
        raise ConfigError(f"{config.where(f'data.{split}.pipeline')}: --aug-test needs a Resize step to vary")
    views = []
    for scale in scales:
        for flip in (False, True):
            view = copy.deepcopy(dict(config))
            steps = view["data"][split]["pipeline"] = [dict(step) for step in pipeline]
            steps[kinds.index("Resize")].update(img_scale=scale, multiscale_mode="range")
            flip_step = {"type": "RandomFlip", "flip_ratio": 1.0 if flip else 0.0, "direction": "horizontal"}
            if "RandomFlip" in kinds:
                steps[kinds.index("RandomFlip")] = flip_step
            else:
                steps.insert(kinds.index("Resize") + 1, flip_step)
            views.append(Config(view, config.filename, config.sources))
    return views


def evaluate_checkpoint(config: Config, checkpoint: str, split: str,
                        scales: list[list[int]] | None) -> tuple[dict, str]:
    """``(metrics, pycocotools summary)`` of ``checkpoint`` on ``data.<split>``."""
    import ray
    import torch

    from .builder import batch_recipe, build_datasets, build_model, check_num_classes, with_absolute_paths
    from .data.ray_stream import eval_stream
    from .engine.checkpoint import load_checkpoint
    from .engine.evaluation import DetectionCollector
    from .engine.launcher import connect_ray

    config = with_absolute_paths(config)
    datasets = build_datasets(config, (split,))
    if split not in datasets:
        raise ConfigError(f"{config.filename}: data.{split} is missing: there is nothing to evaluate")
    dataset = datasets[split]
    check_num_classes(config, dataset.classes, split)
    model = build_model(config)
    try:
        model.load_state_dict(load_checkpoint(checkpoint)["model"])
    except FileNotFoundError:
        raise ConfigError(f"checkpoint not found: {checkpoint}") from None
    except Exception as err:
        raise ConfigError(f"{checkpoint}: not a checkpoint of this config's model ({type(err).__name__}: "
                          f"{str(err).splitlines()[0]})") from None
    model.eval()
    connect_ray(0)
    collector = DetectionCollector(dataset, rank=0)
    records = ray.put(dataset.table())
    if scales is None:
        metrics = collector.evaluate(model, eval_stream(batch_recipe(config, split), records), torch.device("cpu"))
        return metrics, collector.summary
    views = [eval_stream(batch_recipe(view, split), records) for view in tta_configs(config, split, scales)]
    batches = ({"img": [b["img"] for b in view_batches], "img_metas": [b["img_metas"] for b in view_batches]}
               for view_batches in zip(*views))  # the views of the same images (the plan ignores the pipeline)
    return collector.evaluate(model, batches, torch.device("cpu")), collector.summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raydet.test", description="COCO metrics of a checkpoint.")
    add_config_arguments(parser)
    parser.add_argument("checkpoint", help="checkpoint.pt or its folder: a path or a URI (s3://…, gs://…)")
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--aug-test", action="store_true", help="multi-scale + flip test-time augmentation")
    parser.add_argument("--tta-scales", default="1333x800,1666x1000",
                        help="scales for --aug-test, LONGxSHORT separated by commas")
    parser.add_argument("--out", help="write the metrics as JSON here (a path or a URI)")
    args = parser.parse_args(argv)

    def body() -> None:
        config = config_from_args(args)
        if not storage.exists(args.checkpoint):
            raise ConfigError(f"checkpoint not found: {args.checkpoint}")
        scales = None
        if args.aug_test:
            try:
                scales = [[int(v) for v in scale.split("x")] for scale in args.tta_scales.split(",")]
            except ValueError:
                raise ConfigError(f"--tta-scales: expected LONGxSHORT[,LONGxSHORT...], "
                                  f"got {args.tta_scales!r}") from None
        metrics, summary = evaluate_checkpoint(config, args.checkpoint, args.split, scales)
        print(summary)
        print(json.dumps(metrics))
        if args.out:
            storage.write_text(args.out, json.dumps(metrics, indent=2) + "\n")

    return report_user_errors(body)


if __name__ == "__main__":
    sys.exit(main())
