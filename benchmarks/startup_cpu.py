"""Start-up CPU by process: where a run's CPU goes between the command and its first training iteration.

    python benchmarks/startup_cpu.py [--workers 1] [--config CFG] [--set k=v ...]

Runs ``python -m raydet.train`` once (1 epoch, a fresh local Ray, one CPU per
worker), reads every process's CPU time from ``/proc`` (Linux) every 0.25 s,
and prints one JSON line: the seconds from the command's start to the first
iteration (``startup_s``: the command's ``imports``, then the phases of
``final_metrics.json``), and the CPU-seconds each kind of process used until
then (``proc_cpu.process_kind``: Ray actors by class, the raylet, GCS,
dashboard; the command itself as ``the command``), largest first.  A Ray
worker process is charged to the task or actor it ran in most samples.  On a
machine whose cores are all busy while a run starts, the time to the first
iteration is about this total over the cores, so what raydet's own processes
take shows up here first.

The same is measured for Ray's floor first (``train_scaling.py``'s: a fresh
process that starts a local Ray and fits an empty ``TorchTrainer`` with the same
workers, until the training function's first line), and ``above_floor_cpu_s``
gives, per kind of process, the run's CPU-seconds minus the floor's: raydet's
share of the start-up, by whose process spent it.

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
from train_scaling import child_env, floor_command

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs/demo/fcos_tiny_shapes.yaml"


def cpu_until(command: list[str], env: dict[str, str], seconds_after_start) -> tuple[dict[str, float], str]:
    """Run ``command``, reading every process's CPU every 0.25 s; returns the CPU-seconds by kind of process
    from its start until ``seconds_after_start(stdout)`` (called once it has exited), and its stdout."""
    before, started = cpu_by_process(), time.time()
    run = subprocess.Popen(command, env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    samples = []
    while run.poll() is None:
        samples.append((time.time() - started, cpu_by_process()))
        time.sleep(0.25)
    stdout = run.stdout.read()
    if run.returncode:
        raise SystemExit(f"{' '.join(command)} exited with {run.returncode}")
    until = seconds_after_start(stdout)
    samples = [sample for at, sample in samples if at <= until]
    by_kind: collections.Counter = collections.Counter()
    for pid, now in samples[-1].items():
        earlier = before.get(pid)
        same = earlier is not None and earlier.command == now.command
        by_kind["the command" if pid == run.pid else kind_of(pid, samples)] += now.cpu_s - (earlier.cpu_s if same
                                                                                           else 0.0)
    return {kind: round(seconds, 2) for kind, seconds in by_kind.most_common() if seconds >= 0.05}, stdout


def kind_of(pid: int, samples: list[dict]) -> str:
    """A process's kind (``process_kind``) in most of the samples it was in, not counting ``ray::IDLE``: a Ray
    worker process is titled by the task it runs now, and idle between tasks (a decode process between
    batches, a pooled one before its first task)."""
    kinds = collections.Counter(process_kind(sample[pid].command) for sample in samples if pid in sample)
    busy = [kind for kind, _ in kinds.most_common() if kind != "ray::IDLE"]
    return busy[0] if busy else "ray::IDLE"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    args = parser.parse_args()

    floor_cpu, floor_out = cpu_until(floor_command(args.workers), child_env(),
                                     lambda stdout: json.loads(stdout.strip().splitlines()[-1])["total"])
    floor = json.loads(floor_out.strip().splitlines()[-1])
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
        launched = time.time()

        def to_first_iteration(_stdout: str) -> float:
            final = json.loads((work_dir / "final_metrics.json").read_text())
            return final["launched_at"] - launched + final["startup_s"]["to_first_iteration"]

        cpu, _ = cpu_until(command, child_env(), to_first_iteration)
        final = json.loads((work_dir / "final_metrics.json").read_text())
    imports = final["launched_at"] - launched
    above = {kind: round(cpu.get(kind, 0.0) - floor_cpu.get(kind, 0.0), 2) for kind in {*cpu, *floor_cpu}}
    print(json.dumps({
        "benchmark": "startup_cpu", "config": str(Path(args.config).relative_to(REPO)), "workers": args.workers,
        "seconds_to_first_iteration": round(imports + final["startup_s"]["to_first_iteration"], 2),
        "startup_s": {"imports": round(imports, 2), **final["startup_s"]},
        "cpu_s_total": round(sum(cpu.values()), 1), "cpu_s_by_process": cpu,
        "floor": {"seconds_to_first_line": floor["total"], "cpu_s_total": round(sum(floor_cpu.values()), 1),
                  "cpu_s_by_process": floor_cpu},
        "above_floor_cpu_s": dict(sorted(above.items(), key=lambda item: -abs(item[1]))),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }))


if __name__ == "__main__":
    main()
