"""Config fuzzing, counted: ``--cases`` mutated demo, Mask R-CNN and sweep configs (``tests/config_fuzz.py``: a
key made the wrong type, negative, zero, huge, NaN or empty, removed, added, a misspelt ``type``, a ``_base_``
loop, a broken ``--set``) through ``raydet.check`` / ``raydet.tune --check`` in one process, and a sample of the
accepted training configs trained one step.

Prints one JSON line: cases, accepted, one-line errors, broken (tracebacks, other exit codes, checks that never
end: 0 is the target), how many accepted configs trained a step and which did not; the broken cases follow, one
line each.

    python benchmarks/config_fuzz.py [--cases 2000] [--seed 0] [--train-sample 20]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from raydet.data.shapes import generate_shapes  # noqa: E402
from tests.config_fuzz import fuzz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-sample", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_root = Path(folder) / "shapes"
        generate_shapes(data_root, seed=1, num_train=16, num_val=8)
        started = time.time()
        result = fuzz(args.cases, args.seed, data_root, Path(folder) / "cases", args.train_sample)
    summary = {key: value for key, value in result.items() if key != "broken_cases"}
    print(json.dumps({"benchmark": "config_fuzz", **summary, "seed": args.seed,
                      "seconds": round(time.time() - started, 1),
                      "machine": f"{platform.machine()}, {platform.processor() or platform.system()}"}))
    for line in result["broken_cases"]:
        print(line.replace("\n", " | "))


if __name__ == "__main__":
    main()
