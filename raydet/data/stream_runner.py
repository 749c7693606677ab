"""The stream runner: a small actor next to each training process that runs its Ray Data executions.

Ray Data's streaming executor is a Python scheduling loop; run inside the
training process it takes the GIL and a share of a core for as long as an
epoch streams (about 10 ms per batch here).  A ``_StreamRunner`` runs it
instead and hands out references to finished blocks, the way Ray Train's
``streaming_split`` coordinator does, but it lives as long as the training
process, so a new epoch starts in a fraction of a second.

On the driver of a single-node Ray, ``start_stream_runners`` starts one per
training worker while Ray Train starts the worker group; each worker takes
its own with ``start_stream_runner``, and ``stop_stream_runners`` ends them
with the run.  ``raydet.data.ray_stream``'s ``BatchStream`` feeds its passes
through this process's runner (``process_stream_runner``).

The runner's process imports no torch: the pipelines it runs name a light task
body (``raydet.data.decode_tasks``), and the ``raydet.data`` package imports
its modules only when they are used.

The runner reads a running Dataset's blocks through ``block_refs``, the one
place where raydet calls a Ray Data developer API (one that may change in a
minor Ray release: ``pyproject.toml`` pins Ray's minor version).
"""
from __future__ import annotations

import importlib
import logging
from typing import Iterator

import numpy as np
import ray
import ray.data
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .decode_tasks import DECODE_MODULES


def block_refs(dataset: ray.data.Dataset) -> Iterator[list[ray.ObjectRef]]:
    """Start executing ``dataset`` now; then, in order, the object refs of its next finished blocks
    (Ray Data's output bundles: usually one block each), without materialising the dataset."""
    bundles = dataset.iter_internal_ref_bundles()  # a DeveloperAPI (see the module docstring)
    return ([entry.ref for entry in bundle.blocks] for bundle in bundles)


@ray.remote(num_cpus=0)
class _StreamRunner:
    """Runs a training process's Ray Data executions in a process of their own (see the module docstring)."""

    def __init__(self):
        self._streams: dict[str, Iterator[list[ray.ObjectRef]]] = {}
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no "execution finished" line per epoch and worker

    def warm_up(self, processes: int) -> None:
        """Run a tiny pipeline of ``processes`` tasks: Ray Data's own actors start, and that many pooled
        worker processes import what a decode task needs, before the first real batch is wanted."""
        dataset = ray.data.range(processes, override_num_blocks=processes).map_batches(_import_only, num_cpus=0)
        dataset.context.enable_progress_bars = False
        dataset.materialize()

    def start(self, key: str, dataset: ray.data.Dataset) -> None:
        self._streams[key] = block_refs(dataset)

    def next_blocks(self, key: str) -> list[ray.ObjectRef]:
        """Refs of the next finished blocks in order; ``[]`` once the stream is done."""
        refs = next(self._streams.get(key, iter(())), None)
        if refs is None:
            self._streams.pop(key, None)
            return []
        return refs

    def stop(self, key: str) -> None:
        """Drop a stream (its executor shuts down when the iterator is collected)."""
        self._streams.pop(key, None)

    def stop_all(self) -> None:
        """Drop every stream: a restarted worker takes over a runner whose streams fed the one that died."""
        self._streams.clear()


def _import_only(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A warm-up task's body: its process imports what a decode task needs (raydet, torch, torchvision)."""
    for module in DECODE_MODULES:
        importlib.import_module(module)
    return rows


_RUNNERS: dict[tuple[str, str], ray.actor.ActorHandle] = {}  # (job id, node id) -> this process's runner


def _runner_key() -> tuple[str, str]:
    """This process's runner's key: its job and its node.  A process that ends its Ray and starts another (a
    benchmark) gets the same job id again, in a cluster where the old runner never was."""
    context = ray.get_runtime_context()
    return context.get_job_id(), context.get_node_id()


def start_stream_runners(count: int) -> list[ray.actor.ActorHandle]:
    """On the driver of a single-node Ray: ``count`` stream runners, one per training worker, started
    and warmed up now, while Ray Train starts the worker group (a runner's process takes seconds to
    start and import).  Hand worker ``rank`` the ``rank``-th (``start_stream_runner``)."""
    runners = [_new_runner() for _ in range(count)]
    for runner in runners:
        runner.warm_up.remote(1)
    return runners


def start_stream_runner(runner: ray.actor.ActorHandle | None = None) -> None:
    """Give this process its ``_StreamRunner``: ``runner`` (one the driver started), else a new one
    started now, without waiting, so that its process starts while the caller builds its model."""
    if runner is not None:
        runner.stop_all.remote()
        _RUNNERS[_runner_key()] = runner
    process_stream_runner()


def stop_stream_runners(runners: list[ray.actor.ActorHandle]) -> None:
    """End a finished run's stream runners (``runners``, and this process's own, when the loop ran here)
    once their queued calls have run: their processes go with the run, not whenever Ray collects the
    handles (a sweep runs many runs in one process)."""
    own = _RUNNERS.pop(_runner_key(), None)
    for runner in [*runners, *([own] if own is not None else [])]:
        runner.__ray_terminate__.remote()


def process_stream_runner() -> ray.actor.ActorHandle:
    """This process's ``_StreamRunner`` (one per training process and Ray job), started on first use."""
    key = _runner_key()
    if key not in _RUNNERS:
        _RUNNERS[key] = _new_runner()
    return _RUNNERS[key]


def _new_runner() -> ray.actor.ActorHandle:
    """A ``_StreamRunner`` started now, on this node if it has room."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return _StreamRunner.options(scheduling_strategy=here).remote()
