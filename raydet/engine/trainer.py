"""One training epoch, Ray-free: gradient accumulation, AMP, clipping, LR steps, the non-finite loss check.

In the spirit of detectron2's ``SimpleTrainer.run_step``: the ``Trainer`` drives
an optimizer over any ``len()``-able iterable of Batches (the worker's Ray
``BatchStream``, or a plain list in a test) and reports every step to a
callback, so it knows nothing about Ray, logging or checkpoints.  One step is::

    forward (autocast) -> losses dict -> non-finite check -> backward of sum(loss terms) / group size
    -> on the last batch of an accumulation group: unscale + clip, optimizer step, zero grads, LR step
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sized

import torch
import torch.distributed as dist

from ..config.schema import OptimizerConfig
from ..errors import UserError
from .distributed import is_distributed


class NonFiniteLossError(UserError):
    """A loss term came out NaN or inf (a diverging run); the batch that produced it changed no parameter.

    Attributes:
        iteration: the batch's number over all epochs, 1-based (as in the log).
        epoch: the 0-based epoch it belongs to.
        terms: ``{loss name: value}`` of this worker's terms that were NaN or inf (empty when only
            another worker's were).
    """

    def __init__(self, iteration: int, epoch: int, terms: dict[str, float]):
        self.iteration, self.epoch, self.terms = iteration, epoch, terms
        named = ", ".join(f"{name}={value}" for name, value in terms.items()) or "on another worker"
        super().__init__(
            f"non-finite loss at iteration {iteration} (epoch {epoch + 1}): {named}; training stopped before this "
            "batch changed the weights. Try a lower optimizer.lr or a longer lr_config.warmup_iters, "
            "set optimizer_config.grad_clip (e.g. {max_norm: 35}), or check the data "
            "(degenerate or out-of-image boxes, labels outside 0..num_classes-1)")

    def __reduce__(self) -> tuple:  # Ray pickles a worker's exception back to the driver
        return type(self), (self.iteration, self.epoch, self.terms)


@dataclass(frozen=True)
class StepResult:
    """One finished training step (one batch), as the ``after_step`` callback sees it.

    Attributes:
        iteration: this batch's number over all epochs, 1-based.
        epoch: 0-based epoch.
        index: 0-based position of the batch in its epoch; ``num_batches`` batches in all.
        losses: the model's loss dict (scalar tensors, detached from the graph), including
            any non-loss entries it returns (e.g. accuracies).
        batch_size: images in the batch.
        data_time: seconds spent waiting for the batch.
        lr: the first param group's learning rate this batch's step used.
    """

    iteration: int
    epoch: int
    index: int
    num_batches: int
    losses: dict[str, torch.Tensor]
    batch_size: int
    data_time: float
    lr: float

    @property
    def last_of_epoch(self) -> bool:
        return self.index + 1 == self.num_batches


class StepCallback(Protocol):
    """Called after every training step (on every worker)."""

    def __call__(self, step: StepResult) -> None: ...


class SizedIterable(Sized, Iterable[dict], Protocol):
    """Batches with a known count up front (a list, or the Ray ``BatchStream``)."""


def to_device(batch: dict, device: torch.device) -> dict:
    """Move the tensors of a Batch (and of its per-image lists) to ``device``."""
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, list):
            return [move(v) for v in value]
        return value

    return {key: move(value) for key, value in batch.items()}


class Trainer:
    """Optimises ``model`` one epoch at a time.

    Args:
        model: the detector, possibly wrapped in DistributedDataParallel; called as
            ``model(**batch, return_loss=True) -> {name: scalar tensor}``; the entries whose
            name contains ``loss`` are summed into the loss that is back-propagated.
        optimizer: over the model's parameters.
        scheduler: stepped once after every optimizer step (a per-iteration schedule).
        settings: ``optimizer_config``: ``accumulate`` (batches per optimizer step),
            ``grad_clip`` (global norm clipping before each step), ``amp`` (autocast and
            a ``GradScaler``, on CUDA only).
        device: where the batches go.

    Attributes:
        scaler: the ``GradScaler`` (disabled without AMP); checkpoint and restore it with the optimizer.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, settings: OptimizerConfig, device: torch.device):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.settings = settings
        self.device = device
        self.use_amp = settings.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.use_amp)

    def run_epoch(self, batches: SizedIterable, epoch: int, iteration: int,
                  after_step: StepCallback | None = None, first_index: int = 0) -> int:
        """Train on every batch of ``batches`` (``raydet.data.collate.Batch`` dicts: the model's forward arguments).

        Batches are grouped by ``accumulate`` from the start of the epoch; the last group
        may be shorter, and each batch's loss is divided by the size of its own group, so
        every optimizer step follows the mean gradient of its group.  Under DDP, all but
        the last batch of a group skip the gradient all-reduce (``no_sync``).

        Args:
            batches: this epoch's batches.
            epoch: the 0-based epoch (for the step results and error messages).
            iteration: batches finished before this epoch, over all epochs.
            after_step: called after every batch with its ``StepResult``.
            first_index: the epoch's batches done before ``batches`` (a run resumed mid-epoch, at the
                start of an accumulation group): ``batches`` are the epoch's from that one on.

        Returns:
            The batches finished after this epoch, over all epochs.

        Raises:
            NonFiniteLossError: a loss term was NaN or inf (checked before its backward pass).
        """
        self.model.train()
        num_batches = first_index + len(batches)
        accumulate = self.settings.accumulate
        data_start = time.perf_counter()
        for index, batch in enumerate(batches, start=first_index):
            data_time = time.perf_counter() - data_start
            iteration += 1
            group_start = index - index % accumulate
            group_size = min(accumulate, num_batches - group_start)
            last_of_group = index + 1 == group_start + group_size
            lr = self.optimizer.param_groups[0]["lr"]  # the lr this batch's step uses
            losses = self._forward_backward(to_device(batch, self.device), group_size, last_of_group, iteration, epoch)
            if last_of_group:
                self._optimizer_step()
            if after_step is not None:
                after_step(StepResult(iteration, epoch, index, num_batches, losses, len(batch["img_metas"]),
                                      data_time, lr))
            data_start = time.perf_counter()
        return iteration

    def _forward_backward(self, batch: dict, group_size: int, last_of_group: bool, iteration: int,
                          epoch: int) -> dict[str, torch.Tensor]:
        """Accumulate ``∇(loss / group_size)`` into the gradients; all-reduce them (DDP) only at ``last_of_group``."""
        skip_sync = not last_of_group and is_distributed()
        with self.model.no_sync() if skip_sync else contextlib.nullcontext():
            with torch.autocast(self.device.type, enabled=self.use_amp):
                losses = self.model(**batch, return_loss=True)
            loss_terms = {key: value for key, value in losses.items() if "loss" in key}
            check_finite(loss_terms, iteration, epoch)
            loss = sum(loss_terms.values())
            self.scaler.scale(loss / group_size).backward()
        return {key: value.detach() for key, value in losses.items()}

    def _optimizer_step(self) -> None:
        """Clip (on unscaled gradients), step, clear the gradients, advance the LR schedule."""
        grad_clip = self.settings.grad_clip
        if grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip.max_norm, grad_clip.norm_type)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()


def check_finite(loss_terms: dict[str, torch.Tensor], iteration: int, epoch: int) -> None:
    """Raise ``NonFiniteLossError`` naming the terms of ``loss_terms`` (scalar tensors) that are NaN or inf.

    Under DDP the verdict is all-reduced, so every rank stops at the same iteration (instead of the
    others waiting in the next gradient all-reduce for the one that stopped); a rank whose own terms
    are finite raises naming none.  Costs one host-device synchronisation per call, plus one scalar
    all-reduce under DDP.
    """
    if not loss_terms:
        return
    values = torch.stack([value.detach().float().reshape(()) for value in loss_terms.values()])
    all_finite = torch.isfinite(values).all().to(torch.int32)
    if is_distributed():
        dist.all_reduce(all_finite, op=dist.ReduceOp.MIN)
    if all_finite.item():
        return
    bad = {key: value for key, value in zip(loss_terms, values.tolist()) if not math.isfinite(value)}
    raise NonFiniteLossError(iteration, epoch, bad)
