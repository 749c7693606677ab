"""Progress on rank 0: mmdetection-style log lines (stdout, ``train.log``) and MLflow metrics.

Every rank calls ``step`` after every batch; at a log step the loss averages
are all-reduced over the workers (a collective: every rank logs at the same
iterations), and rank 0 prints (one line, wrapped here)::

    Epoch [1/12][50/500]  lr 2.000e-02  eta 0:10:02  31.5 img/s  time 0.254 s/it (data 0.012)
        loss_cls 0.5123  loss_bbox 0.3010  loss 0.8133
"""
from __future__ import annotations

import datetime
import sys
import time
from typing import Protocol

import torch
import torch.distributed as dist

from .distributed import is_distributed


class RecordSink(Protocol):
    """Where rank 0's lines and metrics go (the run's ``train.log`` and MLflow run)."""

    def line(self, text: str) -> None: ...

    def metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def flush(self) -> None: ...


class ProgressLog:
    """Args:
        sink: rank 0's records (None on other ranks: they only take part in the all-reduces).
        world_size: number of workers (images/s counts all of them).
        total_iterations: iterations over the whole run (for the ETA).
        max_epochs: for the ``Epoch [e/E]`` prefix.
        start_iteration: the iterations done before this worker started (a resumed run).
    """

    def __init__(self, sink: RecordSink | None, world_size: int, total_iterations: int, max_epochs: int,
                 start_iteration: int = 0):
        self.sink = sink
        self.world_size = world_size
        self.total_iterations = total_iterations
        self.max_epochs = max_epochs
        self.epoch = 0
        self.steps_in_epoch = 0
        self.index_in_epoch = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._window_images = 0
        self._window_batches = 0
        self._window_data_time = 0.0
        self._window_start = time.perf_counter()
        self._run_start = time.perf_counter()
        self._start_iteration = start_iteration

    def say(self, text: str) -> None:
        """Rank 0: a line on stdout (what ``ray job logs`` shows) and in ``train.log``."""
        if self.sink is None:
            return
        sys.stdout.write(text + "\n")  # not print(): Ray Train's patched print would echo it twice
        sys.stdout.flush()
        self.sink.line(text)

    def flush(self) -> None:
        """Rank 0: return once every line and metric sent so far is recorded."""
        if self.sink is not None:
            self.sink.flush()

    def start_epoch(self, epoch: int, num_steps: int, first_step: int = 0) -> None:
        """A new epoch of ``num_steps`` optimizer steps, of which ``first_step`` were done before a resume."""
        self.epoch, self.steps_in_epoch, self.index_in_epoch = epoch, num_steps, first_step

    def step(self, losses: dict[str, torch.Tensor], num_images: int, data_time: float, lr: float, iteration: int,
             log_now: bool) -> None:
        """Account one optimizer step; at ``log_now`` all-reduce and (rank 0) print + log to MLflow."""
        for key, value in losses.items():
            value = value.detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value
        self.index_in_epoch += 1
        self._window_images += num_images
        self._window_batches += 1
        self._window_data_time += data_time
        if log_now:
            self._flush(lr, iteration)

    def _flush(self, lr: float, iteration: int) -> None:
        keys = sorted(self._sums)
        values = torch.stack([self._sums[k] for k in keys]) / self._window_batches
        if is_distributed():
            values = values.to(self._device())
            dist.all_reduce(values)
            values /= dist.get_world_size()
        means = dict(zip(keys, values.cpu().tolist()))
        means["loss"] = sum(v for k, v in means.items() if "loss" in k)
        elapsed = time.perf_counter() - self._window_start
        seconds_per_iteration = elapsed / self._window_batches
        images_per_second = self._window_images * self.world_size / max(elapsed, 1e-9)
        run_rate = (time.perf_counter() - self._run_start) / max(iteration - self._start_iteration, 1)
        eta = datetime.timedelta(seconds=round(run_rate * (self.total_iterations - iteration)))
        parts = "  ".join(f"{k} {v:.4f}" for k, v in means.items())
        self.say(f"Epoch [{self.epoch + 1}/{self.max_epochs}][{self.index_in_epoch}/{self.steps_in_epoch}]  "
                 f"lr {lr:.3e}  eta {eta}  {images_per_second:.1f} img/s  time {seconds_per_iteration:.3f} s/it "
                 f"(data {self._window_data_time / self._window_batches:.3f})  {parts}")
        if self.sink is not None:
            self.sink.metrics({**{f"train/{k}": v for k, v in means.items()}, "train/lr": lr,
                                      "train/images_per_second": images_per_second,
                                      "train/data_time": self._window_data_time / self._window_batches,
                                      "train/time": seconds_per_iteration}, step=iteration)
        self._sums.clear()
        self._window_images = self._window_batches = 0
        self._window_data_time = 0.0
        self._window_start = time.perf_counter()

    def _device(self) -> torch.device:
        return (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
                else torch.device("cpu"))

    def evaluation(self, metrics: dict[str, float], summary: str, iteration: int) -> None:
        self.say(f"Epoch [{self.epoch + 1}/{self.max_epochs}] evaluation: "
                 + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if summary:
            self.say(summary)
        if self.sink is not None:
            self.sink.metrics({f"val/{k}": v for k, v in metrics.items()}, step=iteration)
