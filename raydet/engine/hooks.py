"""What the worker loop does around the Ray-free ``Trainer``, as hooks (detectron2's ``HookBase``, mmengine's ``Hook``).

The loop (``raydet.engine.train_loop``) runs epochs; each hook adds one job at
three points: ``before_epoch``, ``after_step`` (after every batch) and
``after_epoch`` (once the epoch's state is counted).  Hooks run in the order
given.  None of them imports Ray: what crosses a Ray edge (asking about
preemption, reporting to Ray Train) is a callable handed in, so each hook is
tested with plain Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch

from .distributed import mean_over_workers
from .progress import ProgressLog
from .stopwatch import Stopwatch
from .trainer import StepResult

#: The reported value Ray Train ranks checkpoints by: the epoch's ``evaluation.save_best`` metric, -1 without one.
CHECKPOINT_SCORE = "checkpoint_score"


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # finished epochs
    iteration: int = 0  # finished iterations, over all epochs (``StepResult.iteration``)
    epoch_step: int = 0  # finished optimizer steps of epoch ``epoch`` (a checkpoint taken mid-epoch)
    metrics: dict[str, float] = field(default_factory=dict)  # the latest evaluation
    images_seen: int = 0  # images trained on by all workers, over the run, as of the last report
    resizes: list[dict] = field(default_factory=list)  # {"iteration", "images_seen", "workers", "reason"} each


@dataclass(frozen=True)
class EpochPlan:
    """The epoch about to run: ``epoch`` (0-based), its optimizer steps in all (``num_steps``), of which the
    first ``first_step`` were done before (a run resumed mid-epoch)."""

    epoch: int
    num_steps: int
    first_step: int = 0


class Hook:
    """A job of the worker loop; every method does nothing unless a hook overrides it.  ``after_step`` comes
    after every optimizer step, on every rank at once (so a hook may call a collective there)."""

    def before_epoch(self, plan: EpochPlan) -> None:
        pass

    def after_step(self, step: StepResult) -> None:
        pass

    def after_epoch(self, state: TrainState) -> None:
        """``state`` counts the epoch just finished (``state.epoch`` is its 1-based number)."""


class Hooks(Hook):
    """Several hooks called in order."""

    def __init__(self, hooks: Iterable[Hook]):
        self.hooks = list(hooks)

    def before_epoch(self, plan: EpochPlan) -> None:
        for hook in self.hooks:
            hook.before_epoch(plan)

    def after_step(self, step: StepResult) -> None:
        for hook in self.hooks:
            hook.after_step(step)

    def after_epoch(self, state: TrainState) -> None:
        for hook in self.hooks:
            hook.after_epoch(state)


class StartupTiming(Hook):
    """Marks when the first epoch started and when its first batch and step came; sends the marks once."""

    def __init__(self, stopwatch: Stopwatch, send: Callable[[dict[str, float]], None] | None):
        self.stopwatch = stopwatch
        self.send = send

    def before_epoch(self, plan: EpochPlan) -> None:
        self.stopwatch.mark("epoch_started")

    def after_step(self, step: StepResult) -> None:
        if "first_iteration" in self.stopwatch:
            return
        self.stopwatch.mark("first_batch", at=self.stopwatch["epoch_started"] + step.data_time)
        self.stopwatch.mark("first_iteration")
        if self.send is not None:
            self.send(self.stopwatch.marks)


class ProgressLogging(Hook):
    """Log lines and metrics (``ProgressLog``) every ``interval`` steps and at each epoch's last."""

    def __init__(self, progress: ProgressLog, interval: int):
        self.progress = progress
        self.interval = interval

    def before_epoch(self, plan: EpochPlan) -> None:
        self.progress.start_epoch(plan.epoch, plan.num_steps, plan.first_step)

    def after_step(self, step: StepResult) -> None:
        self.progress.step(step.losses, step.num_images, step.data_time, step.lr, step.iteration,
                           log_now=step.last_of_epoch or (step.index + 1) % self.interval == 0)


class ImageCount(Hook):
    """Images this worker trained on since the last report; ``settle`` adds every worker's to ``state.images_seen``
    (a collective: call it where every rank reports).  What a restart redoes is counted once: the count
    restored with a checkpoint is the one settled when it was taken."""

    def __init__(self, sum_over_workers: Callable[[int], int]):
        self.sum_over_workers = sum_over_workers
        self.pending = 0

    def after_step(self, step: StepResult) -> None:
        self.pending += step.num_images

    def settle(self, state: TrainState) -> None:
        state.images_seen += self.sum_over_workers(self.pending)
        self.pending = 0


class EpochLoss(Hook):
    """The epoch's mean training loss (the sum of its ``loss*`` terms), averaged over this worker's steps."""

    def __init__(self, device: torch.device):
        self.device = device
        self.total = torch.zeros((), device=device)
        self.steps = 0

    def before_epoch(self, plan: EpochPlan) -> None:
        self.total, self.steps = torch.zeros((), device=self.device), 0

    def after_step(self, step: StepResult) -> None:
        self.total = self.total + sum(value.float() for key, value in step.losses.items() if "loss" in key)
        self.steps += 1

    def mean(self) -> torch.Tensor:
        return self.total / max(self.steps, 1)


@dataclass(frozen=True)
class WorkerInfo:
    """The worker a ``StepHook`` runs on.

    Attributes:
        rank, world_size: this worker's place in the worker group.
        work_dir: the run's work directory.
        flush_records: returns once every progress line and metric recorded so far is
            written (on rank 0; a no-op elsewhere).
    """

    rank: int
    world_size: int
    work_dir: Path
    flush_records: Callable[[], None]


class StepHook(Protocol):
    """Called on every worker after every training step, once the step's progress is recorded
    (e.g. a test that kills a worker at a given iteration).  Step hooks travel to the workers
    with the run, so they must pickle."""

    def __call__(self, step: StepResult, worker: WorkerInfo) -> None: ...


class CallStepHooks(Hook):
    """The run's ``StepHook``s, each called after every step with this worker's ``WorkerInfo``."""

    def __init__(self, step_hooks: Sequence[StepHook], worker: WorkerInfo):
        self.step_hooks = list(step_hooks)
        self.worker = worker

    def after_step(self, step: StepResult) -> None:
        for hook in self.step_hooks:
            hook(step, self.worker)


class PreemptionCheckpoint(Hook):
    """Every ``check_every`` steps, ask whether a node of the workers' is about to be preempted (a spot
    reclaim drained by the autoscaler); the first time one is, checkpoint at this step, once.

    Args:
        check_every: optimizer steps between questions; the epoch's last step is never asked about (its
            checkpoint follows).
        ask: the notice, the same on every rank (``ray.train.get_preemption_info``), or None.
        checkpoint: ``(state, notice)``: save and report ``state`` (``epoch_step`` steps into its epoch).
        state: the loop's ``TrainState``; set to this step before ``checkpoint`` is called.
    """

    def __init__(self, check_every: int, ask: Callable[[], Any], checkpoint: Callable[[TrainState, Any], None],
                 state: TrainState):
        self.check_every = check_every
        self.ask = ask
        self.checkpoint = checkpoint
        self.state = state
        self.answered = False

    def after_step(self, step: StepResult) -> None:
        if self.answered or step.last_of_epoch or (step.index + 1) % self.check_every:
            return
        notice = self.ask()
        if notice is not None:
            self.answered = True
            self.state.iteration, self.state.epoch_step = step.iteration, step.index + 1
            self.checkpoint(self.state, notice)


class IntervalCheckpoint(Hook):
    """A checkpoint within the epoch whenever the iteration count passes a multiple of ``interval``
    (``checkpoint_config.interval_iters``; 0: never): what a restart — a lost node, an elastic resize —
    goes back to, so it redoes fewer than ``interval`` iterations.  The epoch's last step is left to
    ``ReportAndCheckpoint``.

    Args:
        checkpoint: ``state``: save and report ``state`` (``epoch_step`` steps into its epoch).
        state: the loop's ``TrainState`` (its ``iteration`` is where the worker starts counting).
    """

    def __init__(self, interval: int, checkpoint: Callable[[TrainState], None], state: TrainState):
        self.interval = interval
        self.checkpoint = checkpoint
        self.state = state
        self.previous = state.iteration

    def after_step(self, step: StepResult) -> None:
        due = self.interval > 0 and step.iteration // self.interval > self.previous // self.interval
        self.previous = step.iteration
        taken = (self.state.iteration, self.state.epoch_step) == (step.iteration, step.index + 1)  # at a notice
        if due and not step.last_of_epoch and not taken:
            self.state.iteration, self.state.epoch_step = step.iteration, step.index + 1
            self.checkpoint(self.state)


class Evaluation(Hook):
    """Every ``interval`` epochs and after the last, predict ``data.val`` (every rank its share) and score it
    on rank 0.  ``metrics`` holds the epoch's result ({} when it was not evaluated).

    Args:
        evaluate: ``() -> metrics`` (the collector run over the val batches; rank 0's metrics, {} elsewhere).
        progress: logs rank 0's metrics and the pycocotools summary.
        summary: ``() -> str``: the last evaluation's summary.
    """

    def __init__(self, evaluate: Callable[[], dict[str, float]], interval: int, max_epochs: int, rank: int,
                 progress: ProgressLog, summary: Callable[[], str]):
        self.evaluate = evaluate
        self.interval = interval
        self.max_epochs = max_epochs
        self.rank = rank
        self.progress = progress
        self.summary = summary
        self.metrics: dict[str, float] = {}
        self.evaluated = False

    def after_epoch(self, state: TrainState) -> None:
        self.evaluated = state.epoch == self.max_epochs or state.epoch % self.interval == 0
        self.metrics = self.evaluate() if self.evaluated else {}
        if self.evaluated and self.rank == 0:
            state.metrics = self.metrics
            self.progress.evaluation(self.metrics, self.summary(), state.iteration)


class PrefetchNextEpoch(Hook):
    """Start decoding the next epoch's first batches (during the report and checkpoint that follow)."""

    def __init__(self, start: Callable[[int], None], max_epochs: int):
        self.start = start
        self.max_epochs = max_epochs

    def after_epoch(self, state: TrainState) -> None:
        if state.epoch < self.max_epochs:
            self.start(state.epoch)


class ReportAndCheckpoint(Hook):
    """After an evaluated epoch, and every ``interval`` epochs (and the last) with a checkpoint, every rank
    reports the epoch, the iteration, the epoch's mean loss over the workers and its metrics.

    Args:
        report: ``(state, reported metrics, with_checkpoint)``: the Ray edge (``ray.train.report``; rank 0
            attaches the checkpoint).
        evaluation: the run's ``Evaluation`` (None without ``data.val``).
        save_best: the metric a checkpoint is ranked by (``CHECKPOINT_SCORE`` in rank 0's report, -1 when the
            epoch was not evaluated); None: checkpoints are not ranked (no ``data.val``).
        rank: only rank 0's report carries the score.
    """

    def __init__(self, report: Callable[[TrainState, dict[str, float], bool], None], interval: int, max_epochs: int,
                 evaluation: Evaluation | None, loss: EpochLoss, save_best: str | None, rank: int):
        self.report = report
        self.interval = interval
        self.max_epochs = max_epochs
        self.evaluation = evaluation
        self.loss = loss
        self.save_best = save_best
        self.rank = rank

    def after_epoch(self, state: TrainState) -> None:
        evaluated = self.evaluation is not None and self.evaluation.evaluated
        metrics = self.evaluation.metrics if self.evaluation is not None else {}
        checkpointed = state.epoch == self.max_epochs or state.epoch % self.interval == 0
        if not (evaluated or checkpointed):
            return
        reported = {"epoch": state.epoch, "iteration": state.iteration, "loss": mean_over_workers(self.loss.mean()),
                    **metrics}
        if checkpointed and self.save_best is not None and self.rank == 0:
            reported[CHECKPOINT_SCORE] = metrics.get(self.save_best, -1.0)
        self.report(state, reported, checkpointed)
