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
time; the jobs around it (progress, evaluation, reports and checkpoints,
preemption, timing) are the Ray-free hooks of ``raydet.engine.hooks``.  This
module is the Ray edge: the worker's rank, the data stream, the reports.
Every ``evaluation.interval`` epochs all workers predict their share of
``data.val``; rank 0 gathers the detections and computes COCO metrics.
After every evaluation and every checkpoint epoch the workers call
``ray.train.report`` with the epoch, the epoch's mean training loss and that
epoch's metrics (what a Tune sweep's scheduler compares); checkpoints ride on
those reports.  After a failure Ray Train restarts the workers and
``ray.train.get_checkpoint()`` hands back the latest one.  When Ray announces
that a node of theirs is about to be preempted (``ray.train.get_preemption_info``,
asked every log interval), the workers checkpoint mid-epoch at once; a restart
continues from that step of the epoch's plan.  With ``checkpoint_config.interval_iters``
they also checkpoint every N iterations within an epoch.

Elastic groups (``scaling.num_workers: [MIN, MAX]``): Ray Train restarts the
group at another size from the latest checkpoint.  The epoch plan is the same
at every size (``raydet.data.sampling.TrainEpoch``: optimizer steps of the
run's global batch), a checkpoint records its position in the epoch in images,
and each worker counts the images it trains on, so a run that changed size
trains on the same images in the same steps as one that did not.  A worker
that starts at another size than its checkpoint's logs the resize and adds it
to the run's ``resizes``.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from .. import storage
from ..accel import apply_accel
from ..data.ray_stream import BatchStream, iter_eval_batches, iter_train_batches, train_epoch_plan
from ..data.sampling import TrainEpoch
from ..data.stream_runner import start_stream_runner
from .checkpoint import CheckpointError, load_checkpoint, load_newest_readable, save_checkpoint, unwrap
from .distributed import broadcast_buffers, gather_to_rank_zero, sum_over_workers
from .evaluation import DetectionCollector
from .hooks import (
    CHECKPOINT_SCORE,
    CallStepHooks,
    EpochLoss,
    EpochPlan,
    Evaluation,
    Hook,
    Hooks,
    ImageCount,
    IntervalCheckpoint,
    PreemptionCheckpoint,
    PrefetchNextEpoch,
    ProgressLogging,
    ReportAndCheckpoint,
    StartupTiming,
    StepHook,
    TrainState,
    WorkerInfo,
)
from .lr_schedule import build_lr_scheduler
from .progress import ProgressLog
from .recorder import RecorderSink
from .spec import TrainingSpec
from .stopwatch import Stopwatch
from .trainer import NonFiniteLossError, Trainer

__all__ = ["CHECKPOINT_SCORE", "LOOP_CONFIG", "LoopConfig", "StepHook", "TrainState", "WorkerInfo",
           "train_loop_per_worker"]

#: The one key of ``train_loop_per_worker``'s config: a reference to the run's ``LoopConfig`` in Ray's object store.
LOOP_CONFIG = "run"


@dataclass(frozen=True)
class LoopConfig:
    """What the launcher hands every worker (through Ray's object store).

    Attributes:
        spec: the run's ``TrainingSpec``.
        work_dir: the run's work directory (absolute).
        recorder: the run's ``RunRecorder`` actor (rank 0's lines, metrics, pictures).
        resume_from: ``--resume PATH``'s checkpoint, or None.
        run_folder: the run's folder in Ray Train's storage (a path or a URI), where its checkpoints are.
        checkpoint_dir: where to keep checkpoints when the loop runs in the driver (``num_workers: 0``).
        step_hooks: ``StepHook``s called after every step (tests kill workers with them).
        stream_runners: the driver's data stream runners, one per rank, or none.
        records: each split's records in the object store (``raydet.data.shared_records``).
    """

    spec: TrainingSpec
    work_dir: str
    recorder: ray.actor.ActorHandle
    resume_from: str | None = None
    run_folder: str | None = None
    checkpoint_dir: str | None = None
    step_hooks: tuple[StepHook, ...] = ()
    stream_runners: tuple[ray.actor.ActorHandle, ...] = ()
    records: dict[str, ray.ObjectRef] = field(default_factory=dict)


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


class EpochBatches:
    """Each epoch's planned batches for this worker, decoding ahead: an epoch is started (its first tasks
    submitted) before the model is built, or while the previous one is evaluated and saved."""

    def __init__(self, spec: TrainingSpec, records: ray.ObjectRef):
        self.recipe = spec.train
        self.records = records
        self.global_batch = spec.global_batch
        self.max_epochs = spec.runner.max_epochs
        self.started: BatchStream | None = None
        self.decode_problems: dict[str, int] = {}  # images found unusable while decoding, since this worker started
        self._plan: TrainEpoch | None = None
        self._plan_epoch = -1

    def plan(self, epoch: int) -> TrainEpoch:
        """``epoch``'s plan over all workers (the latest one asked for is kept)."""
        if epoch != self._plan_epoch:
            self._plan, self._plan_epoch = train_epoch_plan(self.recipe, self.records, epoch, self.global_batch), epoch
        return self._plan

    def start(self, epoch: int, first_step: int = 0) -> None:
        if epoch < self.max_epochs:
            self.started = iter_train_batches(self.recipe, self.records, epoch, self.global_batch,
                                              first_step).start()

    def take(self) -> BatchStream:
        batches, self.started = self.started, None
        return batches

    def count_problems(self, batches: BatchStream) -> None:
        for kind, count in batches.problems.counts.items():
            self.decode_problems[kind] = self.decode_problems.get(kind, 0) + count


@dataclass
class Worker:
    """One worker's run: its place in the group, its model and trainer, where training stands."""

    loop: LoopConfig
    rank: int
    world_size: int
    trainer: Trainer
    state: TrainState
    data: EpochBatches
    progress: ProgressLog
    sink: RecorderSink | None
    collector: DetectionCollector | None
    images: ImageCount

    @property
    def spec(self) -> TrainingSpec:
        return self.loop.spec


def train_loop_per_worker(config: dict) -> dict | None:
    """Ray Train entry point; ``config[LOOP_CONFIG]`` is a reference to the run's ``LoopConfig``.

    Returns (on rank 0) what the driver writes to ``final_metrics.json``, or ``{"non_finite_loss":
    NonFiniteLossError}`` when a NaN/inf loss stopped the run (returned, not raised: Ray Train would
    restart the workers from the last checkpoint, only to meet the same loss again).
    """
    stopwatch = Stopwatch("worker_started")  # rank 0's start-up, for final_metrics.json's startup_s
    worker = start_worker(ray.get(config[LOOP_CONFIG]), stopwatch)
    hooks = worker_hooks(worker, stopwatch)
    state, max_epochs = worker.state, worker.spec.runner.max_epochs
    for epoch in range(state.epoch, max_epochs):
        seed_everything(worker.spec.seed, epoch, worker.rank)  # samplers' draws: the same after a resume
        batches = worker.data.take()  # from the step after a mid-epoch checkpoint's
        hooks.before_epoch(EpochPlan(epoch, batches.steps.num_steps, batches.steps.first_step))
        try:
            state.iteration = worker.trainer.run_epoch(batches, epoch, state.iteration, hooks.after_step,
                                                       batches.steps)
        except NonFiniteLossError as stop:  # raised on every rank at once: a finished run, not a failure to retry
            worker.progress.flush()
            return {"non_finite_loss": stop} if worker.rank == 0 else None
        worker.data.count_problems(batches)
        state.epoch, state.epoch_step = epoch + 1, 0
        broadcast_buffers(unwrap(worker.trainer.model))  # one set of BatchNorm statistics: the one rank 0 saves
        hooks.after_epoch(state)
    return finish_worker(worker)


def start_worker(loop: LoopConfig, stopwatch: Stopwatch) -> Worker:
    """Start the data stream, build model (same seed: same weights on every worker), DDP, optimizer, schedule;
    restore the checkpoint this worker continues from."""
    spec, context = loop.spec, ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    # The first batches decode while the model is built: start the stream's runner and its first pass now.
    start_stream_runner(loop.stream_runners[rank] if rank < len(loop.stream_runners) else None)
    saved, same_run, passed_over = _saved_checkpoint(loop)
    data = EpochBatches(spec, loop.records["train"])
    epoch = saved["epoch"] if saved else 0
    first_step = data.plan(epoch).step_at(saved.get("epoch_images", 0)) if saved else 0  # a position in images
    data.start(epoch, first_step)
    seed_everything(spec.seed)
    model = spec.build_model()
    if hasattr(model, "init_weights"):
        model.init_weights()
    model = ray.train.torch.prepare_model(apply_accel(model, spec.accel))
    optimizer = spec.build_optimizer(unwrap(model))
    plan = data.plan(0)  # every epoch has as many steps and iterations
    scheduler = build_lr_scheduler(optimizer, spec.lr_config, plan.num_steps, spec.runner.max_epochs)
    trainer = Trainer(model, optimizer, scheduler, spec.optimizer_config, ray.train.torch.get_device())
    state = _restore(saved, trainer, first_step) if saved else TrainState()
    stopwatch.mark("model_ready")
    sink = RecorderSink(loop.recorder) if rank == 0 else None
    iterations_per_epoch = len(plan.batches) // spec.global_batch.reference_workers
    progress = ProgressLog(sink, world_size, iterations_per_epoch * spec.runner.max_epochs, spec.runner.max_epochs,
                           start_iteration=state.iteration)
    for warning in passed_over:
        progress.say(warning)
    if state.iteration:
        within = f" (step {state.epoch_step} of epoch {state.epoch + 1})" if state.epoch_step else ""
        progress.say(f"resumed at epoch {state.epoch}, iteration {state.iteration}{within}")
    _note_group_size(state, saved if same_run else None, world_size, progress, sink)
    collector = DetectionCollector(spec.val_dataset, rank, spec.num_pictures) if spec.val is not None else None
    return Worker(loop, rank, world_size, trainer, state, data, progress, sink, collector,
                  ImageCount(sum_over_workers))


def _note_group_size(state: TrainState, own_checkpoint: dict | None, world_size: int, progress: ProgressLog,
                     sink: RecorderSink | None) -> None:
    """Log the group's size to MLflow (the ``workers`` series); when this run's own checkpoint was taken by a
    group of another size, the group was resized: say so and add it to ``state.resizes``."""
    if sink is not None:
        sink.metrics({"workers": world_size}, step=state.iteration)
    saved_workers = (own_checkpoint or {}).get("workers", world_size)
    if saved_workers == world_size:
        return
    reason = ("node added" if world_size > saved_workers
              else "preemption" if own_checkpoint.get("preempted") else "node lost")
    state.resizes.append({"iteration": state.iteration, "images_seen": state.images_seen, "workers": world_size,
                          "reason": reason})
    progress.say(f"resized {saved_workers} -> {world_size} workers at iteration {state.iteration} "
                 f"(images seen {state.images_seen}): {reason}")


def worker_hooks(worker: Worker, stopwatch: Stopwatch) -> Hooks:
    """The loop's hooks, in the order they run: timing, progress, loss, image count, step hooks, preemption and
    interval checkpoints; after an epoch, evaluation, the next epoch's decoding, then the report and checkpoint."""
    spec, progress, trainer = worker.spec, worker.progress, worker.trainer
    loss = EpochLoss(trainer.device)
    info = WorkerInfo(worker.rank, worker.world_size, Path(worker.loop.work_dir), progress.flush)
    evaluation = None
    if worker.collector is not None:
        collector, model = worker.collector, unwrap(trainer.model)
        val = worker.loop.records["val"]
        evaluation = Evaluation(lambda: collector.evaluate(model, iter_eval_batches(spec.val, val), trainer.device),
                                spec.evaluation.interval, spec.runner.max_epochs, worker.rank, progress,
                                lambda: collector.summary)
    report = Reporter(worker)
    hooks: list[Hook | None] = [
        StartupTiming(stopwatch, worker.sink.startup if worker.sink is not None else None),
        ProgressLogging(progress, spec.log_config.interval),
        loss,
        worker.images,
        CallStepHooks(worker.loop.step_hooks, info),
        PreemptionCheckpoint(spec.log_config.interval, ray.train.get_preemption_info, report.preempted, worker.state),
        IntervalCheckpoint(spec.checkpoint_interval_iters, report.every_interval, worker.state),
        evaluation,
        PrefetchNextEpoch(worker.data.start, spec.runner.max_epochs),
        ReportAndCheckpoint(report, spec.checkpoint_config.interval, spec.runner.max_epochs, evaluation, loss,
                            spec.evaluation.save_best if evaluation is not None else None, worker.rank),
    ]
    return Hooks(hook for hook in hooks if hook is not None)


class Reporter:
    """The loop's reports to Ray Train: every rank reports (a barrier; the image count is settled there), rank 0
    attaches the checkpoint.  Without a worker group (``checkpoint_dir`` set) Ray keeps no copy, so the
    checkpoint is written there to stay."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.notice_seen = False  # a node of this group is being preempted: every later checkpoint says so

    def __call__(self, state: TrainState, metrics: dict[str, float], with_checkpoint: bool,
                 upload_async: bool = False) -> None:
        """Report ``metrics``; with ``with_checkpoint`` rank 0 saves ``state`` and attaches it.  ``upload_async``:
        Ray copies the checkpoint to the run's storage while the workers train on (it is the latest one once
        copied; Ray removes the local folder then)."""
        self.worker.images.settle(state)
        if self.worker.rank != 0 or not with_checkpoint:
            ray.train.report(metrics)
            return
        trainer, loop = self.worker.trainer, self.worker.loop
        epoch_images = self.worker.data.plan(state.epoch).images_before(state.epoch_step) if state.epoch_step else 0
        upload_async = upload_async and not loop.checkpoint_dir
        with contextlib.ExitStack() as stack:
            if loop.checkpoint_dir:  # a local folder or a URI
                name = f"checkpoint_epoch_{state.epoch:04d}" + (f"_iter_{state.iteration:07d}" if epoch_images else "")
                directory = storage.join(loop.checkpoint_dir, name)
            elif upload_async:
                directory = tempfile.mkdtemp(prefix="raydet_checkpoint_")  # Ray removes it once uploaded
            else:
                directory = stack.enter_context(tempfile.TemporaryDirectory())
            save_checkpoint(directory, model=trainer.model, optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                            scaler=trainer.scaler, epoch=state.epoch, iteration=state.iteration,
                            config_yaml=loop.spec.config_yaml, metrics=state.metrics, epoch_images=epoch_images,
                            images_seen=state.images_seen, resizes=state.resizes, workers=self.worker.world_size,
                            preempted=self.notice_seen)
            mode = ray.train.CheckpointUploadMode.ASYNC if upload_async else ray.train.CheckpointUploadMode.SYNC
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint(directory), checkpoint_upload_mode=mode)

    def mid_epoch(self, state: TrainState, upload_async: bool = False) -> None:
        """Checkpoint within the epoch (``state.epoch_step`` steps into it); no metric: a sweep does not see it."""
        reported = {"epoch": state.epoch, "iteration": state.iteration}
        if self.worker.spec.val is not None and self.worker.rank == 0:
            reported[CHECKPOINT_SCORE] = -1.0
        self(state, reported, with_checkpoint=True, upload_async=upload_async)

    def every_interval(self, state: TrainState) -> None:
        """An ``interval_iters`` checkpoint: uploaded while training goes on (a notice's is uploaded at once)."""
        self.mid_epoch(state, upload_async=True)

    def preempted(self, state: TrainState, notice) -> None:
        """Checkpoint where the workers are: a node of theirs is about to be preempted."""
        self.worker.progress.say(f"node {', '.join(notice.preempted_node_ids)} is being preempted: checkpoint at "
                                 f"epoch {state.epoch + 1}, iteration {state.iteration}")
        self.notice_seen = True
        self.mid_epoch(state)


def finish_worker(worker: Worker) -> dict | None:
    """One gather, in rank order: the replicas' digests (DDP's promise, checked), decode problems, each rank's
    node.  Rank 0 sends the predictions picture and returns the run's final numbers."""
    worker.images.settle(worker.state)
    digests, problems_per_rank, nodes = zip(*gather_to_rank_zero(
        [(replica_digest(worker.trainer.model), worker.data.decode_problems, ray.get_runtime_context().get_node_id())]))
    if worker.rank != 0:
        return None
    if worker.collector is not None and worker.collector.pictured:
        worker.sink.artifact("predictions.png", worker.collector.picture_png())
    worker.sink.flush()
    total_problems: dict[str, int] = {}
    for counts in problems_per_rank:
        for kind, count in counts.items():
            total_problems[kind] = total_problems.get(kind, 0) + count
    state = worker.state
    return {"metrics": state.metrics, "iters": state.iteration, "epochs": state.epoch,
            "replicas_identical": len(set(digests)) == 1, "decode_problems": total_problems,
            "worker_nodes": list(nodes), "images_seen": state.images_seen, "resizes": state.resizes}


def _saved_checkpoint(loop: LoopConfig) -> tuple[dict | None, bool, list[str]]:
    """The checkpoint this worker continues from — Ray Train's latest (a restarted, resized or resumed run; if
    that one cannot be read, a partial upload, the newest before it that can); else the newest readable one in
    the run's folder (a run stopped before Ray recorded its last checkpoint, continued by ``--resume auto``);
    else ``--resume PATH``'s; else None — whether it is this run's own, and a warning per unreadable checkpoint
    passed over."""
    checkpoint = ray.train.get_checkpoint()
    newest = storage.name_of(checkpoint.path) if checkpoint is not None else None
    try:
        found = load_newest_readable(loop.run_folder, newest) if loop.run_folder else None
    except CheckpointError as err:
        if checkpoint is not None:
            raise
        return _start_of(loop), False, [f"warning: {err}; starting from the beginning"]
    if found is not None:
        saved, _, warnings = found
        return saved, True, warnings
    if checkpoint is not None:  # a run folder this worker cannot list
        with checkpoint.as_directory() as directory:
            return load_checkpoint(directory), True, []
    return _start_of(loop), False, []


def _start_of(loop: LoopConfig) -> dict | None:
    """``--resume PATH``'s checkpoint, or None (a run from scratch)."""
    return load_checkpoint(loop.resume_from) if loop.resume_from else None


def _restore(saved: dict, trainer: Trainer, epoch_step: int) -> TrainState:
    unwrap(trainer.model).load_state_dict(saved["model"])
    trainer.optimizer.load_state_dict(saved["optimizer"])
    trainer.scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        trainer.scaler.load_state_dict(saved["scaler"])
    return TrainState(epoch=saved["epoch"], iteration=saved["iteration"], metrics=dict(saved.get("metrics") or {}),
                      epoch_step=epoch_step, images_seen=saved.get("images_seen", 0),
                      resizes=list(saved.get("resizes") or []))
