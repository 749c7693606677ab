"""Start-up CPU by process: where a run's CPU goes between the command and its first training iteration.

    python benchmarks/startup_cpu.py [--workers 1] [--config CFG] [--set k=v ...]

Runs ``python -m raydet.train`` once (1 epoch, a fresh local Ray, one CPU per
worker), reads every process's CPU time from ``/proc`` (Linux) every 0.25 s,
and prints one JSON line: the seconds to the first iteration
(``final_metrics.json``'s ``startup_s``), and the CPU-seconds each kind of
process used until then (``proc_cpu.process_kind``: Ray actors by class, the raylet, GCS,
dashboard, the command itself), largest first.  On a machine whose cores are all busy while
a run starts, the time to the first iteration is about this total over the
cores, so what raydet's own processes take shows up here first.

With no ``--config``: the demo config on the built-in shapes dataset, generated
into a temporary folder.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proc_cpu import cpu_by_process, process_kind  # benchmarks/, this script's folder

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs/demo/fcos_tiny_shapes.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        overrides = list(args.overrides)
        if Path(args.config).resolve() == DEMO_CONFIG.resolve():
            subprocess.run([sys.executable, "-m", "raydet.data.prepare", "shapes", "--out", f"{tmp}/shapes"],
                           check=True, stdout=subprocess.DEVNULL)
            overrides.append(f"data.data_root={tmp}/shapes")
        work_dir = Path(tmp) / "work"
        command = [sys.executable, "-m", "raydet.train", args.config, "--work-dir", str(work_dir),
                   "--num-workers", str(args.workers), "--set", *overrides, "runner.max_epochs=1",
                   "scaling.resources_per_worker.CPU=1"]
        before, started = cpu_by_process(), time.time()
        run = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        samples = []
        while run.poll() is None:
            samples.append((time.time() - started, cpu_by_process()))
            time.sleep(0.25)
        if run.returncode:
            raise SystemExit(f"{' '.join(command)} exited with {run.returncode}")
        startup = json.loads((work_dir / "final_metrics.json").read_text())["startup_s"]
    first_iteration = startup["to_first_iteration"]
    at_first_iteration = [sample for at, sample in samples if at <= first_iteration][-1]
    by_kind: collections.Counter = collections.Counter()
    for pid, now in at_first_iteration.items():
        earlier = before.get(pid)
        same = earlier is not None and earlier.command == now.command
        by_kind[process_kind(now.command)] += now.cpu_s - (earlier.cpu_s if same else 0.0)
    cpu = {kind: round(seconds, 2) for kind, seconds in by_kind.most_common() if seconds >= 0.05}
    print(json.dumps({
        "benchmark": "startup_cpu", "config": str(Path(args.config).relative_to(REPO)), "workers": args.workers,
        "seconds_to_first_iteration": first_iteration, "startup_s": startup,
        "cpu_s_total": round(sum(cpu.values()), 1), "cpu_s_by_process": cpu,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }))


if __name__ == "__main__":
    main()
