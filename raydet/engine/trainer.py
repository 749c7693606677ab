"""One training epoch, Ray-free: gradient accumulation, AMP, clipping, LR steps, the non-finite loss check.

In the spirit of detectron2's ``SimpleTrainer.run_step``: the ``Trainer`` drives
an optimizer over any ``len()``-able iterable of Batches (the worker's Ray
``BatchStream``, or a plain list in a test) and reports every step to a
callback, so it knows nothing about Ray, logging or checkpoints.  One optimizer step is, for each
of this rank's batches of the step::

    forward (autocast) -> losses dict -> non-finite check -> backward of sum(loss terms) × scale
    -> after the step's last batch: unscale + clip, optimizer step, zero grads, LR step

where ``scale`` makes the step follow the mean gradient of its batches over all ranks
(``raydet.data.sampling.RankSteps``: an elastic group of fewer workers takes more batches each).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sized

import torch
import torch.distributed as dist

from ..config.schema import OptimizerConfig
from ..data.collate import to_device
from ..data.sampling import RankSteps
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
    """One finished optimizer step, as the ``after_step`` callback sees it (on every rank at once).

    Attributes:
        iteration: iterations finished at this step's end, over all epochs (an iteration is one batch per
            worker of the run's reference size: ``raydet.data.sampling.RankSteps``).
        epoch: 0-based epoch.
        index: 0-based position of the step in its epoch; ``num_steps`` steps in all.
        losses: the model's loss dict (scalar tensors, detached from the graph), including any non-loss
            entries it returns (e.g. accuracies), averaged over this rank's batches of the step.
        num_images: images this rank trained on in the step.
        data_time: seconds spent waiting for the step's batches.
        lr: the first param group's learning rate the step used.
    """

    iteration: int
    epoch: int
    index: int
    num_steps: int
    losses: dict[str, torch.Tensor]
    num_images: int
    data_time: float
    lr: float

    @property
    def last_of_epoch(self) -> bool:
        return self.index + 1 == self.num_steps


class StepCallback(Protocol):
    """Called after every training step (on every worker)."""

    def __call__(self, step: StepResult) -> None: ...


class SizedIterable(Sized, Iterable[dict], Protocol):
    """Batches with a known count up front (a list, or the Ray ``BatchStream``)."""


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
                  after_step: StepCallback | None = None, steps: RankSteps | None = None) -> int:
        """Train on every batch of ``batches`` (``raydet.data.collate.Batch`` dicts: the model's forward arguments).

        ``steps`` says which optimizer step each batch joins (the worker's plan: ``BatchStream.steps``);
        without it, every rank has as many batches as this one and steps every ``accumulate`` of them (the
        last group may be shorter).  Each batch's loss is scaled so that every step follows the mean
        gradient of its batches over all ranks, however many each rank holds.  Under DDP only a step's last
        batch all-reduces the gradients (the others run under ``no_sync``), so ranks holding different
        numbers of batches of a step still all-reduce once per step.

        Args:
            batches: this epoch's batches (from the step ``steps.first_step`` on: a run resumed mid-epoch).
            epoch: the 0-based epoch (for the step results and error messages).
            iteration: iterations finished before ``batches``, over all epochs.
            after_step: called after every optimizer step with its ``StepResult``.

        Returns:
            The iterations finished after this epoch, over all epochs.

        Raises:
            NonFiniteLossError: a loss term was NaN or inf (checked before any backward pass of its step).
        """
        if steps is None:
            world_size = dist.get_world_size() if is_distributed() else 1
            steps = RankSteps.grouped(len(batches), self.settings.accumulate, world_size)
        self.model.train()
        epoch_start = iteration - steps.iterations_through(steps.first_step - 1)
        pending = _PendingStep()
        data_start = time.perf_counter()
        for position, batch in enumerate(batches):
            pending.data_time += time.perf_counter() - data_start
            step = int(steps.step_of_batch[position])
            last_of_step = position + 1 == len(steps.step_of_batch) or steps.step_of_batch[position + 1] != step
            iteration = epoch_start + steps.iterations_through(step)
            if not pending.losses:
                pending.lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses
            pending.losses.append(self._forward_backward(to_device(batch, self.device), steps.loss_scale(step),
                                                         last_of_step, pending, iteration, epoch))
            pending.images += len(batch["img_metas"])
            if last_of_step:
                self._optimizer_step()
                if after_step is not None:
                    after_step(pending.result(iteration, epoch, step, steps.num_steps))
                pending = _PendingStep()
            data_start = time.perf_counter()
        return epoch_start + steps.iterations_through(steps.num_steps - 1)

    def _forward_backward(self, batch: dict, loss_scale: float, last_of_step: bool, pending: "_PendingStep",
                          iteration: int, epoch: int) -> dict[str, torch.Tensor]:
        """Accumulate ``∇(loss × loss_scale)`` into the gradients; all-reduce them (DDP) only at ``last_of_step``.

        A non-finite loss stops the backward passes of the rest of its step on this rank; the step's last
        batch asks every rank (one all-reduce) before its own backward, so all ranks stop at the same step
        and no gradient of it reaches the weights."""
        skip_sync = not last_of_step and is_distributed()
        with self.model.no_sync() if skip_sync else contextlib.nullcontext():
            with torch.autocast(self.device.type, enabled=self.use_amp):
                losses = self.model(**batch, return_loss=True)
            loss_terms = {key: value for key, value in losses.items() if "loss" in key}
            pending.bad_terms = pending.bad_terms or non_finite_terms(loss_terms)
            if last_of_step and not all_finite_over_workers(not pending.bad_terms):
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(iteration, epoch, pending.bad_terms)
            if not pending.bad_terms and loss_terms:
                self.scaler.scale(sum(loss_terms.values()) * loss_scale).backward()
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


@dataclass
class _PendingStep:
    """What the batches of the optimizer step in progress have added up on this rank."""

    losses: list[dict[str, torch.Tensor]] = field(default_factory=list)
    images: int = 0
    data_time: float = 0.0
    lr: float = 0.0
    bad_terms: dict[str, float] = field(default_factory=dict)

    def result(self, iteration: int, epoch: int, index: int, num_steps: int) -> StepResult:
        means = {key: torch.stack([losses[key].float() for losses in self.losses]).mean() for key in self.losses[0]}
        return StepResult(iteration, epoch, index, num_steps, means, self.images, self.data_time, self.lr)


def non_finite_terms(loss_terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """``{name: value}`` of the terms of ``loss_terms`` (scalar tensors) that are NaN or inf (one host sync)."""
    if not loss_terms:
        return {}
    values = torch.stack([value.detach().float().reshape(()) for value in loss_terms.values()]).tolist()
    return {key: value for key, value in zip(loss_terms, values) if not math.isfinite(value)}


def all_finite_over_workers(finite_here: bool) -> bool:
    """Whether every rank's losses were finite: one scalar all-reduce under DDP, so every rank stops at the same
    step (instead of the others waiting in the next gradient all-reduce for one that stopped)."""
    verdict = torch.tensor(int(finite_here), dtype=torch.int32)
    if is_distributed():
        if dist.get_backend() == "nccl":
            verdict = verdict.cuda()
        dist.all_reduce(verdict, op=dist.ReduceOp.MIN)
    return bool(verdict.item())
