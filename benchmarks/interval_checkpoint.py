"""What a mid-epoch checkpoint (``checkpoint_config.interval_iters``) costs the workers: uploaded at once or while
training goes on.

An elastic run checkpoints every ``interval_iters`` iterations (50 by default), because Ray Train resizes a group
by restarting it from the latest reported checkpoint.  A worker group of ``--workers`` Ray Train workers holds
the model of ``--config`` (RetinaNet R50-FPN by default: weights and SGD momentum, the state a real run saves)
and, in alternating rounds, reports a checkpoint the way raydet's ``Reporter`` does: rank 0 writes
``checkpoint.pt`` and every rank calls ``ray.train.report``, with Ray's ``SYNC`` upload (a preemption notice's
and an epoch's checkpoints) or ``ASYNC`` upload (the interval checkpoints: Ray copies the folder to the run's
storage while the workers go on).  The time to measure is how long the workers are held: from the start of the
save to the return of ``report`` on rank 0.

Prints one JSON line: the checkpoint's size, the median seconds held with each mode and their ``ratio``
(``async_s / sync_s``).  ``--storage`` may be a URI (``s3://…``): uploads then cross the network.

    python benchmarks/interval_checkpoint.py [--config configs/retinanet/retinanet_r50_fpn_1x_coco.yaml]
        [--rounds 5] [--workers 1] [--storage DIR_OR_URI]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def held_seconds(config: dict) -> dict:
    """Ray Train worker: build the model and its optimizer state, then time ``rounds`` checkpoints per mode."""
    import ray.train
    import torch

    from raydet.builder import model_factory, optimizer_factory
    from raydet.config import load_config
    from raydet.config.parsed import parse_config
    from raydet.engine.checkpoint import save_checkpoint

    parsed = parse_config(load_config(config["config"]))
    model = model_factory(parsed)()
    optimizer = optimizer_factory(parsed)(model)
    for parameter in model.parameters():  # momentum buffers: the optimizer state a running job holds
        if parameter.requires_grad:
            optimizer.state[parameter]["momentum_buffer"] = torch.zeros_like(parameter)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    rank = ray.train.get_context().get_world_rank()
    held: dict[str, list[float]] = {"SYNC": [], "ASYNC": []}
    size = 0
    for _ in range(config["rounds"]):
        for mode in ("SYNC", "ASYNC"):
            start = time.perf_counter()
            if rank == 0:
                directory = tempfile.mkdtemp(prefix="bench_checkpoint_")
                path = save_checkpoint(directory, model=model, optimizer=optimizer, scheduler=scheduler, scaler=None,
                                       epoch=0, iteration=0, config_yaml=parsed.yaml)
                size = os.path.getsize(path)
                ray.train.report({"mode": mode}, checkpoint=ray.train.Checkpoint(directory),
                                 checkpoint_upload_mode=getattr(ray.train.CheckpointUploadMode, mode))
            else:
                ray.train.report({"mode": mode})
            held[mode].append(time.perf_counter() - start)
    return {"held": held, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs/retinanet/retinanet_r50_fpn_1x_coco.yaml"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--storage", help="Ray Train's storage_path (default: a temporary folder)")
    args = parser.parse_args()

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    ray.init(num_cpus=max(os.cpu_count() or 1, args.workers + 1))
    with tempfile.TemporaryDirectory() as scratch:
        trainer = TorchTrainer(
            held_seconds, train_loop_config={"config": args.config, "rounds": args.rounds},
            scaling_config=ray.train.ScalingConfig(num_workers=args.workers),
            run_config=ray.train.RunConfig(storage_path=args.storage or scratch, name="interval_checkpoint",
                                           checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)))
        measured = trainer.fit().return_value
    sync_s = statistics.median(measured["held"]["SYNC"])
    async_s = statistics.median(measured["held"]["ASYNC"])
    print(json.dumps({
        "benchmark": "interval_checkpoint", "config": Path(args.config).name, "workers": args.workers,
        "checkpoint_mb": round(measured["bytes"] / 2**20, 1), "storage": args.storage or "local folder",
        "sync_s": round(sync_s, 3), "async_s": round(async_s, 3), "ratio": round(async_s / sync_s, 3),
        "rounds": args.rounds, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }))


if __name__ == "__main__":
    main()
