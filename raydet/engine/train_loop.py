"""The per-worker training loop: Ray Train runs ``train_loop_per_worker`` once on every worker.

Each worker builds its own model (same seed, so the same initial weights;
``prepare_model`` wraps it in DistributedDataParallel, which broadcasts rank
0's parameters once and all-reduces gradients after every backward pass),
its own optimizer, and takes its share of the data (``raydet.data.ray_stream``).
Everything it builds from comes in a ``TrainingSpec`` the launcher made on the
driver: typed settings, the splits' batch recipes and two factories; the loop
never reads the config.
The optimisation itself — accumulation, AMP, clipping, LR steps, the non-finite
loss check — is the Ray-free ``raydet.engine.trainer.Trainer``, one epoch at a
time; this loop adds the Ray edges around it: the worker's rank, the data
stream, buffer broadcast, evaluation, checkpoints and progress records.
Every ``evaluation.interval`` epochs all workers predict their share of
``data.val``; rank 0 gathers the detections and computes COCO metrics.
After every evaluation and every checkpoint epoch the workers call
``ray.train.report`` with the epoch, the epoch's mean training loss and that
epoch's metrics (what a Tune sweep's scheduler compares); checkpoints ride on
those reports.  After a failure Ray Train restarts the workers and
``ray.train.get_checkpoint()`` hands back the latest one.  When Ray announces
that a node of theirs is about to be preempted (``ray.train.get_preemption_info``,
asked every log interval), the workers checkpoint mid-epoch at once; a restart
continues from that batch of the epoch's plan.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from .. import storage
from ..accel import apply_accel
from ..data.ray_stream import iter_eval_batches, iter_train_batches, start_stream_runner
from .checkpoint import load_checkpoint, save_checkpoint, unwrap
from .distributed import broadcast_buffers, gather_to_rank_zero, mean_over_workers
from .evaluation import DetectionCollector
from .lr_schedule import build_lr_scheduler
from .progress import ProgressLog
from .recorder import RecorderSink
from .spec import TrainingSpec
from .trainer import NonFiniteLossError, StepResult, Trainer

#: The reported value Ray Train ranks checkpoints by: the epoch's ``evaluation.save_best`` metric, -1 without one.
CHECKPOINT_SCORE = "checkpoint_score"


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
    (e.g. a test that kills a worker at a given iteration).  Hooks travel to the workers in
    ``loop_config["step_hooks"]``, so they must pickle."""

    def __call__(self, step: StepResult, worker: WorkerInfo) -> None: ...


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # finished epochs
    iteration: int = 0  # finished batches, over all epochs
    epoch_step: int = 0  # finished batches of epoch ``epoch`` (a checkpoint taken mid-epoch, on a preemption notice)
    metrics: dict[str, float] = field(default_factory=dict)  # the latest evaluation


def seed_everything(*key: int) -> None:
    """Seed Python, NumPy and torch from ``key`` (e.g. ``(seed,)``, or ``(seed, epoch, rank)``)."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def replica_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's and buffer's bytes, in order: equal digests = bitwise identical replicas."""
    digest = hashlib.sha256()
    module = unwrap(model)
    for tensor in [*module.parameters(), *module.buffers()]:
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: The one key of ``train_loop_per_worker``'s config: a reference to the run's settings in Ray's object store.
LOOP_CONFIG = "run"


def train_loop_per_worker(loop_config: dict) -> dict | None:
    """Ray Train entry point.  ``loop_config[LOOP_CONFIG]``: a reference to the run's settings: ``spec``
    (its ``TrainingSpec``), ``work_dir``,
    ``recorder`` (the run's ``RunRecorder``), ``resume_from`` (a checkpoint path or None),
    ``checkpoint_dir`` (where to keep checkpoints when the loop runs in the driver, num_workers 0),
    ``stream_runners`` (the driver's data stream runners, one per rank, or none) and ``step_hooks``
    (a list of ``StepHook``, called after every step; tests kill workers with them).

    Returns (on rank 0) what the driver writes to ``final_metrics.json``, or ``{"non_finite_loss":
    NonFiniteLossError}`` when a NaN/inf loss stopped the run (returned, not raised: Ray Train would
    restart the workers from the last checkpoint, only to meet the same loss again).
    """
    marks = {"worker_started": time.time()}  # rank 0's start-up, for final_metrics.json's startup_s
    loop_config = ray.get(loop_config[LOOP_CONFIG])
    spec: TrainingSpec = loop_config["spec"]
    work_dir = Path(loop_config["work_dir"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    runner, evaluation = spec.runner, spec.evaluation

    # The first batches decode while the model is built: start the stream's runner and its first pass now.
    runners = loop_config.get("stream_runners") or []
    start_stream_runner(runners[rank] if rank < len(runners) else None)
    saved = _saved_checkpoint(loop_config.get("resume_from"))
    state = TrainState(epoch=saved["epoch"], epoch_step=saved.get("epoch_step", 0)) if saved else TrainState()
    next_batches = iter_train_batches(spec.train, state.epoch, start=state.epoch_step)
    if state.epoch < runner.max_epochs:
        next_batches.start()

    seed_everything(spec.seed)  # the same initial weights on every worker
    model = spec.build_model()
    if hasattr(model, "init_weights"):
        model.init_weights()
    model = apply_accel(model, spec.accel)
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    optimizer = spec.build_optimizer(unwrap(model))
    batches_per_epoch = len(iter_train_batches(spec.train, 0))
    steps_per_epoch = math.ceil(batches_per_epoch / spec.optim.accumulate)
    scheduler = build_lr_scheduler(optimizer, spec.lr, steps_per_epoch, runner.max_epochs)
    trainer = Trainer(model, optimizer, scheduler, spec.optim, device)
    if saved:
        state = _restore(saved, trainer)
    marks["model_ready"] = time.time()

    sink = RecorderSink(loop_config["recorder"]) if rank == 0 else None
    progress = ProgressLog(sink, world_size, total_iterations=batches_per_epoch * runner.max_epochs,
                           max_epochs=runner.max_epochs)
    if state.iteration:
        within = f" (batch {state.epoch_step} of epoch {state.epoch + 1})" if state.epoch_step else ""
        progress.say(f"resumed at epoch {state.epoch}, iteration {state.iteration}{within}")
    has_val = spec.val is not None
    collector = DetectionCollector(spec.val_dataset, rank, spec.num_pictures) if has_val else None
    decode_problems: dict[str, int] = {}  # images found unusable while decoding (this worker, since its start)
    worker = WorkerInfo(rank, world_size, work_dir, progress.flush)
    step_hooks: list[StepHook] = loop_config.get("step_hooks") or []
    # Every log interval (rounded up to whole accumulation groups) the workers ask Ray, together, whether a
    # node of theirs is about to be preempted (a spot reclaim drained by the autoscaler); the first time one
    # is, they checkpoint where they are, and a restart continues from that batch.
    check_every = spec.optim.accumulate * math.ceil(spec.logging.interval / spec.optim.accumulate)
    preemption_answered = False

    def after_step(step: StepResult) -> None:
        nonlocal loss_sum, loss_steps, preemption_answered
        if "first_iteration" not in marks:
            marks["first_batch"] = marks["epoch_started"] + step.data_time
            marks["first_iteration"] = time.time()
            if sink is not None:
                sink.startup(marks)
        loss_sum = loss_sum + sum(value.float() for key, value in step.losses.items() if "loss" in key)
        loss_steps += 1
        progress.step(step.losses, step.batch_size, step.data_time, step.lr, step.iteration,
                      log_now=step.last_of_epoch or (step.index + 1) % spec.logging.interval == 0)
        for hook in step_hooks:
            hook(step, worker)
        if preemption_answered or step.last_of_epoch or (step.index + 1) % check_every:
            return
        notice = ray.train.get_preemption_info()  # the same answer on every rank
        if notice is not None:
            preemption_answered = True
            state.iteration, state.epoch_step = step.iteration, step.index + 1
            progress.say(f"node {', '.join(notice.preempted_node_ids)} is being preempted: checkpoint at epoch "
                         f"{step.epoch + 1}, iteration {step.iteration}")
            reported = {"epoch": state.epoch, "iteration": state.iteration}  # no metric: a sweep does not see it
            if has_val and rank == 0:
                reported[CHECKPOINT_SCORE] = -1.0
            _report(state, reported, trainer, spec.config_yaml, rank, loop_config.get("checkpoint_dir"),
                    with_checkpoint=True)

    for epoch in range(state.epoch, runner.max_epochs):
        seed_everything(spec.seed, epoch, rank)  # samplers' draws: the same after a resume, different per worker
        first = state.epoch_step if epoch == state.epoch else 0  # batches done before a mid-epoch checkpoint
        batches = next_batches  # begun before the model was built, or while the last epoch was evaluated and saved
        progress.start_epoch(epoch, first + len(batches), first)
        loss_sum, loss_steps = torch.zeros((), device=device), 0  # the epoch's summed loss terms, for its report
        marks.setdefault("epoch_started", time.time())
        try:
            state.iteration = trainer.run_epoch(batches, epoch, state.iteration, after_step, first_index=first)
        except NonFiniteLossError as stop:  # raised on every rank at once: a finished run, not a failure to retry
            if rank != 0:
                return None
            progress.flush()
            return {"non_finite_loss": stop}
        for kind, count in batches.problems.counts.items():
            decode_problems[kind] = decode_problems.get(kind, 0) + count
        state.epoch, state.epoch_step = epoch + 1, 0
        broadcast_buffers(unwrap(model))  # one set of BatchNorm statistics: the one rank 0 checkpoints
        last_epoch = state.epoch == runner.max_epochs
        evaluated = collector is not None and (last_epoch or state.epoch % evaluation.interval == 0)
        metrics: dict[str, float] = {}
        if evaluated:
            metrics = collector.evaluate(unwrap(model), iter_eval_batches(spec.val, "val"), device)
            if rank == 0:
                state.metrics = metrics
                progress.evaluation(metrics, collector.summary, state.iteration)
        if not last_epoch:  # the next epoch's first batches decode during the report and checkpoint
            next_batches = iter_train_batches(spec.train, state.epoch).start()
        checkpointed = last_epoch or state.epoch % spec.checkpointing.interval == 0
        if evaluated or checkpointed:
            reported = {"epoch": state.epoch, "iteration": state.iteration,
                        "loss": mean_over_workers(loss_sum / max(loss_steps, 1)), **metrics}
            if checkpointed and has_val and rank == 0:  # only rank 0's report carries the checkpoint and metrics
                reported[CHECKPOINT_SCORE] = metrics.get(evaluation.save_best, -1.0)
            _report(state, reported, trainer, spec.config_yaml, rank, loop_config.get("checkpoint_dir"),
                    with_checkpoint=checkpointed)

    # One gather, in rank order: the replicas' digests (DDP's promise, checked), decode problems, each rank's node.
    digests, problems_per_rank, nodes = zip(*gather_to_rank_zero(
        [(replica_digest(model), decode_problems, ray.get_runtime_context().get_node_id())]))
    if rank != 0:
        return None
    if collector is not None and collector.pictured:
        sink.artifact("predictions.png", collector.picture_png())
    sink.flush()
    total_problems: dict[str, int] = {}
    for counts in problems_per_rank:
        for kind, count in counts.items():
            total_problems[kind] = total_problems.get(kind, 0) + count
    return {"metrics": state.metrics, "iters": state.iteration, "epochs": state.epoch,
            "replicas_identical": len(set(digests)) == 1, "decode_problems": total_problems,
            "worker_nodes": list(nodes)}


def _saved_checkpoint(resume_from: str | None) -> dict | None:
    """The checkpoint this worker continues from: Ray Train's latest (a restarted or resumed run),
    else ``--resume PATH``'s, else None."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            return load_checkpoint(directory)
    return load_checkpoint(resume_from) if resume_from else None


def _restore(saved: dict, trainer: Trainer) -> TrainState:
    unwrap(trainer.model).load_state_dict(saved["model"])
    trainer.optimizer.load_state_dict(saved["optimizer"])
    trainer.scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        trainer.scaler.load_state_dict(saved["scaler"])
    return TrainState(epoch=saved["epoch"], iteration=saved["iteration"], metrics=dict(saved.get("metrics") or {}),
                      epoch_step=saved.get("epoch_step", 0))


def _report(state: TrainState, metrics: dict[str, float], trainer: Trainer, config_yaml: str, rank: int,
            checkpoint_dir: str | None, with_checkpoint: bool) -> None:
    """Every rank reports ``metrics`` (a barrier); rank 0 attaches the checkpoint when ``with_checkpoint``.
    Without a worker group (``checkpoint_dir`` set) Ray keeps no copy, so the checkpoint is written
    there to stay."""
    if rank != 0 or not with_checkpoint:
        ray.train.report(metrics)
        return
    with contextlib.ExitStack() as stack:
        if checkpoint_dir:  # a local folder or a URI
            directory = storage.join(checkpoint_dir, f"checkpoint_epoch_{state.epoch:04d}")
        else:
            directory = stack.enter_context(tempfile.TemporaryDirectory())
        save_checkpoint(directory, model=trainer.model, optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                        scaler=trainer.scaler, epoch=state.epoch, iteration=state.iteration,
                        config_yaml=config_yaml, metrics=state.metrics, epoch_step=state.epoch_step)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint(directory))
