"""Every process's CPU time, from ``/proc`` (Linux): what the benchmarks that count CPU-seconds read."""
from __future__ import annotations

import os
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
                # after "(command name)", which may hold spaces: state, ppid, ..., utime (11), stime (12)
                fields, command = stat.read().rsplit(")", 1)[1].split(), cmdline.read().replace("\0", " ").strip()
        except OSError:  # ended meanwhile
            continue
        found[int(entry)] = ProcessCpu((int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[1]), command)
    return found


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
                fields = stat.read().rsplit(")", 1)[1].split()
            threads[int(entry)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
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
