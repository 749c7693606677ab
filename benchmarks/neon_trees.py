"""NEON tree crowns, end to end: train a config from scratch, then score it on val and on another site.

    python benchmarks/neon_trees.py [--config configs/neon_trees/fcos_convnet_fpn_neon.yaml]
                                    [--work-dir DIR] [--checkpoint CKPT] [--set k=v ...]
                                    [--tta-flips none,horizontal,vertical,diagonal --tta-scale 2.0]

What a user would run, in order, each command a fresh process:

1. ``python -m raydet.data.prepare neon_trees --out data/neon_trees`` (when the folder is missing);
2. ``python -m raydet.train CONFIG`` (skipped with ``--checkpoint``), timed from the command's start
   to its exit (``final_metrics.json`` written);
3. ``python -m raydet.test CONFIG CKPT --split val``: COCO AP and AP50, and box precision / recall at
   IoU 0.4 at the score threshold with the best F1 on val;
4. ``python -m raydet.test CONFIG CKPT --set data.test.ann_file=annotations/soap_061.json
   --pr-score-thr T``: the same on SOAP_061 (another NEON site, never trained on), at val's threshold;
5. with ``--tta-flips D,D,…``: steps 3 and 4 again with ``--aug-test --tta-scales S --tta-flips D,D,…``
   (the test pipeline's scale, seen in each flip direction), as ``val_tta`` and ``soap_061_tta``.

``CKPT`` is the run's ``best_checkpoint`` (the evaluation with the highest val AP50).  Prints one
JSON line: ``train_wall_s``, ``val`` and ``soap_061`` metrics, and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data/neon_trees"
KEPT = ("bbox_mAP", "bbox_mAP_50", "box_precision", "box_recall", "box_f1", "box_score_thr", "box_iou_thr")


def run(*args: str) -> str:
    """``python -m ARGS`` from the repository root; its standard output (stderr passes through)."""
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"python -m {' '.join(args)} exited with {done.returncode}")
    return done.stdout


def test_metrics(config: str, checkpoint: str, *extra: str) -> dict:
    """``raydet.test``'s metrics line (its last JSON line), the kept keys."""
    output = run("raydet.test", config, checkpoint, *extra)
    metrics = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    return {key: metrics[key] for key in KEPT}


def machine() -> dict:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": None, "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/neon_trees/fcos_convnet_fpn_neon.yaml")
    parser.add_argument("--work-dir", default=None, help="the training's work dir (default: work_dirs/<config name>)")
    parser.add_argument("--checkpoint", help="score this checkpoint instead of training")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides (training and testing)")
    parser.add_argument("--tta-flips", help="also score with test-time augmentation in these flip directions")
    parser.add_argument("--tta-scale", default="2.0", help="the TTA views' scale (default: the test pipeline's 2x)")
    args = parser.parse_args()
    if not (DATA / "annotations/soap_061.json").is_file():
        run("raydet.data.prepare", "neon_trees", "--out", str(DATA))
    record: dict = {"benchmark": "neon_trees", "config": args.config}
    checkpoint = args.checkpoint
    if checkpoint is None:
        work_dir = Path(args.work_dir or REPO / "work_dirs" / Path(args.config).stem).resolve()
        started = time.perf_counter()
        run("raydet.train", args.config, "--work-dir", str(work_dir), *(["--set", *args.set] if args.set else []))
        record["train_wall_s"] = round(time.perf_counter() - started, 1)
        final = json.loads((work_dir / "final_metrics.json").read_text())
        record["epochs"] = final["epochs"]
        checkpoint = final["best_checkpoint"]
    record["checkpoint"] = checkpoint
    overrides = ["--set", *args.set] if args.set else []
    runs = {"": []}
    if args.tta_flips:
        runs["_tta"] = ["--aug-test", "--tta-scales", args.tta_scale, "--tta-flips", args.tta_flips]
        record["tta"] = {"scale": args.tta_scale, "flips": args.tta_flips}
    for suffix, extra in runs.items():
        val = record[f"val{suffix}"] = test_metrics(args.config, checkpoint, "--split", "val", *extra, *overrides)
        record[f"soap_061{suffix}"] = test_metrics(args.config, checkpoint, *extra, *overrides,
                                                   "--set", "data.test.ann_file=annotations/soap_061.json",
                                                   "--pr-score-thr", str(val["box_score_thr"]))
    record["machine"] = machine()
    print(json.dumps(record))


if __name__ == "__main__":
    main()
