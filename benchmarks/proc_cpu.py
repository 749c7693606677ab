"""Every process's CPU time, from ``/proc`` (Linux): what the benchmarks that count CPU-seconds read."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessCpu(NamedTuple):
    cpu_s: float  # user + system CPU seconds so far
    parent: int
    command: str


def cpu_by_process() -> dict[int, ProcessCpu]:
    """pid -> its CPU seconds, parent pid and command line, for every process now running."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline") as cmdline:
                fields, command = _stat_fields(stat.read()), cmdline.read().replace("\0", " ").strip()
        except OSError:  # ended meanwhile
            continue
        found[int(entry)] = ProcessCpu(_cpu_seconds(fields), int(fields[1]), command)
    return found


def _stat_fields(stat: str) -> list[str]:
    """The fields of a ``/proc/…/stat`` line after "(command name)", which may hold spaces: state, ppid, …"""
    return stat.rsplit(")", 1)[1].split()


def _cpu_seconds(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def process_kind(command: str) -> str:
    """The kind a process's CPU is charged to, from its command line (``cmdline``, NULs as spaces): a Ray worker
    by its title's actor class or task (``ray::TrainController.run`` -> ``ray::TrainController``), a Python
    process by its module or script (``raydet.train``, ``log_monitor.py``, ``dashboard/agent.py``), anything
    else by its executable (``raylet``, ``gcs_server``)."""
    words = command.split()
    if not words:
        return "kernel or exited"
    if words[0].startswith("ray::"):
        return words[0].split(".")[0]
    program = Path(words[0]).name
    arguments = [word for word in words[1:] if not word.startswith("-") or word in ("-m", "-c")]  # not -u, -X…
    if not program.startswith("python") or not arguments:
        return program
    if arguments[0] == "-m" and len(arguments) > 1:
        return arguments[1]
    if arguments[0] == "-c":
        return "python -c"
    script = Path(arguments[0])
    return "/".join(script.parts[-2:]) if script.name in {"agent.py", "main.py", "dashboard.py"} else script.name


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds of process ``root`` (this one by default) and every live descendant: a DataLoader's workers,
    or a local Ray's GCS, raylet and worker processes."""
    processes = cpu_by_process()
    tree = {root or os.getpid()}
    for pid in processes:  # a child's pid is not always larger than its parent's: walk up from each
        chain, ancestor = [], pid
        while ancestor not in tree and ancestor in processes and ancestor not in chain:
            chain.append(ancestor)
            ancestor = processes[ancestor].parent
        if ancestor in tree:
            tree.update(chain)
    return sum(processes[pid].cpu_s for pid in tree if pid in processes)


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """Thread id -> its CPU seconds so far, for each thread of process ``pid`` (``{}`` once it ended)."""
    threads = {}
    try:
        for entry in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{entry}/stat") as stat:
                threads[int(entry)] = _cpu_seconds(_stat_fields(stat.read()))
    except OSError:  # the process or a thread ended meanwhile
        pass
    return threads


def dataloader_worker_pids() -> list[int]:
    """The processes of this machine that are a torch DataLoader's workers (torch names their threads)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() == "pt_data_worker":
                        found.append(int(entry))
            except OSError:
                continue
    return found
