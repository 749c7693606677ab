"""Where a command's CPU goes, by kind of process: ``python benchmarks/suite_cpu.py -- make test``.

Runs the command and, every ``--interval-s``, reads every process's CPU time from ``/proc`` (the whole machine:
Ray's daemons and the nodes ``ray start`` leaves running are not always the command's descendants, so run it
on an otherwise quiet machine).  Each process's CPU is counted from its first sample to its last (a process that
lives less than one interval is missed; one that ends loses at most one interval) and charged to its kind:

* a Ray worker process by the actor class or task in the title Ray gives it (``ray::RayTrainWorker``, a Ray
  Data task's operator name ...); an idle pooled worker's time goes to the last task or actor it ran;
* a Python process by its module or script (``pytest``, ``raydet.train``, Ray's ``dashboard/agent.py`` ...);
* anything else by its executable (``raylet``, ``gcs_server``, ``pip`` ...): ``proc_cpu.process_kind``.

Prints one JSON line: the command's wall time and exit code, the CPU-seconds of the machine over that time and
their share of its cores, and the kinds in order of CPU-seconds.  This sampler's own CPU is left out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict

from proc_cpu import cpu_by_process, process_kind


def sample(interval_s: float, process: subprocess.Popen) -> tuple[dict[str, float], float]:
    """CPU-seconds by kind until ``process`` ends; and this sampler's own CPU-seconds, left out of them."""
    me = os.getpid()
    last: dict[int, float] = {}  # pid -> its CPU-seconds when last read
    charged_to: dict[int, str] = {}
    by_kind: dict[str, float] = defaultdict(float)
    already_running = True  # the first read: what ran before the command is counted from now on
    while True:
        ended = process.poll() is not None
        for pid, seen in cpu_by_process().items():
            if pid == me:
                continue
            if pid in last and seen.cpu_s < last[pid]:  # the pid of a process that ended, given to a new one
                del last[pid], charged_to[pid]
            kind = process_kind(seen.command)
            if kind != "ray::IDLE" or pid not in charged_to:
                charged_to[pid] = kind
            if already_running:
                last[pid] = seen.cpu_s
            by_kind[charged_to[pid]] += seen.cpu_s - last.get(pid, 0.0)
            last[pid] = seen.cpu_s
        already_running = False
        if ended:
            break
        time.sleep(interval_s)
    own = cpu_by_process().get(me)
    return dict(by_kind), own.cpu_s if own else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval-s", type=float, default=1.0, help="seconds between two reads of /proc")
    parser.add_argument("--top", type=int, default=30, help="kinds listed (the rest are summed as 'other')")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    started = time.perf_counter()
    process = subprocess.Popen(command)
    by_kind, own_cpu_s = sample(args.interval_s, process)
    wall_s = time.perf_counter() - started
    ranked = sorted(by_kind.items(), key=lambda item: -item[1])
    listed = {kind: round(cpu_s, 1) for kind, cpu_s in ranked[:args.top] if cpu_s >= 0.05}
    listed["other"] = round(sum(cpu_s for _, cpu_s in ranked[args.top:]), 1)
    total = sum(by_kind.values())
    print(json.dumps({
        "benchmark": "suite_cpu", "command": " ".join(command), "exit_code": process.returncode,
        "wall_s": round(wall_s, 1), "cpu_s": round(total, 1),
        "busy_share_of_cores": round(total / (wall_s * (os.cpu_count() or 1)), 3),
        "sampler_cpu_s": round(own_cpu_s, 1), "cpu_s_by_kind": listed,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }))
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()
