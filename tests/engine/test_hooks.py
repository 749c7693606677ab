"""The worker loop's hooks, each driven with plain Python: no Ray, no process group."""
from __future__ import annotations

import torch

from raydet.engine.hooks import (
    CHECKPOINT_SCORE,
    EpochLoss,
    EpochPlan,
    Evaluation,
    Hooks,
    ImageCount,
    IntervalCheckpoint,
    PreemptionCheckpoint,
    PrefetchNextEpoch,
    ReportAndCheckpoint,
    StartupTiming,
    TrainState,
)
from raydet.engine.progress import ProgressLog
from raydet.engine.stopwatch import Stopwatch
from raydet.engine.trainer import StepResult


class ListSink:
    def __init__(self):
        self.lines, self.metrics_logged = [], []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics_logged.append((step, metrics))

    def flush(self) -> None:
        pass


def step(index: int, num_steps: int = 10, epoch: int = 0, loss: float = 1.0, data_time: float = 0.5,
         iterations_per_step: int = 1) -> StepResult:
    return StepResult((epoch * num_steps + index + 1) * iterations_per_step, epoch, index, num_steps,
                      {"loss_cls": torch.tensor(loss), "loss_bbox": torch.tensor(loss), "acc": torch.tensor(9.0)},
                      2, data_time, 0.01)


def run_epochs(hooks: Hooks, state: TrainState, max_epochs: int, num_steps: int = 4) -> None:
    """The loop's calls, without a trainer."""
    for epoch in range(state.epoch, max_epochs):
        hooks.before_epoch(EpochPlan(epoch, num_steps))
        for index in range(num_steps):
            hooks.after_step(step(index, num_steps, epoch))
        state.iteration += num_steps
        state.epoch = epoch + 1
        hooks.after_epoch(state)


def test_preemption_is_asked_every_interval_and_checkpoints_once():
    asked, saved = [], []
    answers = iter([None, "notice"])
    state = TrainState(epoch=2, iteration=20)
    hook = PreemptionCheckpoint(3, lambda: asked.append(1) or next(answers, "again"),
                                lambda state, notice: saved.append((state.iteration, state.epoch_step, notice)), state)
    for index in range(10):
        hook.after_step(step(index, epoch=2))
    assert len(asked) == 2  # after steps 3 and 6; answered at 6, never asked again (9 is the epoch's last anyway)
    assert saved == [(26, 6, "notice")]
    assert (state.iteration, state.epoch_step) == (26, 6)


def test_interval_checkpoints_come_when_the_iteration_count_passes_a_multiple():
    """Every 5 iterations, at 2 iterations a step (a group half the reference size): at the steps that pass 25,
    30 and 35; none at the epoch's last step (its own checkpoint follows)."""
    saved = []
    state = TrainState(epoch=1, iteration=20)
    hook = IntervalCheckpoint(5, lambda state: saved.append((state.iteration, state.epoch_step)), state)
    for index in range(10):
        hook.after_step(step(index, num_steps=10, epoch=1, iterations_per_step=2))
    assert saved == [(26, 3), (30, 5), (36, 8)]  # 25 passed at 26, 30 reached, 35 passed at 36; 40 is the last step
    never = IntervalCheckpoint(0, lambda state: saved.append("no"), TrainState())
    never.after_step(step(4))
    assert saved[-1] != "no"


def test_image_count_settles_every_workers_images_once():
    state = TrainState(images_seen=100)
    count = ImageCount(lambda mine: mine * 2)  # two workers that saw as many
    for index in range(3):
        count.after_step(step(index))  # 2 images each
    count.settle(state)
    count.settle(state)  # nothing new: nothing added
    assert state.images_seen == 100 + 2 * 6


def test_evaluations_reports_and_checkpoints_follow_their_intervals():
    sink = ListSink()
    progress = ProgressLog(sink, world_size=1, total_iterations=20, max_epochs=5)
    evaluated_at, reports, prefetched = [], [], []

    def evaluate() -> dict[str, float]:
        evaluated_at.append(len(evaluated_at))
        return {"bbox_mAP": 0.1 * len(evaluated_at)}

    evaluation = Evaluation(evaluate, interval=2, max_epochs=5, rank=0, progress=progress, summary=lambda: "")
    loss = EpochLoss(torch.device("cpu"))
    report = ReportAndCheckpoint(lambda state, metrics, saved: reports.append((state.epoch, saved, metrics)),
                                 interval=3, max_epochs=5, evaluation=evaluation, loss=loss, save_best="bbox_mAP",
                                 rank=0)
    state = TrainState()
    run_epochs(Hooks([loss, evaluation, PrefetchNextEpoch(prefetched.append, 5), report]), state, max_epochs=5)
    assert len(evaluated_at) == 3  # epochs 2, 4 and the last
    assert [(epoch, saved) for epoch, saved, _ in reports] == [(2, False), (3, True), (4, False), (5, True)]
    assert prefetched == [1, 2, 3, 4]  # never past the last epoch
    epoch_3, epoch_5 = reports[1][2], reports[3][2]
    assert epoch_3 == {"epoch": 3, "iteration": 12, "loss": 2.0, CHECKPOINT_SCORE: -1.0}  # saved, not evaluated
    assert epoch_5[CHECKPOINT_SCORE] == epoch_5["bbox_mAP"] == 0.1 * 3
    assert state.metrics == {"bbox_mAP": 0.1 * 3}
    assert sum("evaluation: bbox_mAP" in line for line in sink.lines) == 3


def test_other_ranks_report_without_the_checkpoint_score():
    reports = []
    report = ReportAndCheckpoint(lambda state, metrics, saved: reports.append(metrics), interval=1, max_epochs=1,
                                 evaluation=None, loss=EpochLoss(torch.device("cpu")), save_best="bbox_mAP", rank=1)
    report.after_epoch(TrainState(epoch=1, iteration=4))
    assert reports == [{"epoch": 1, "iteration": 4, "loss": 0.0}]


def test_startup_timing_marks_the_first_step_once():
    sent = []
    stopwatch = Stopwatch("worker_started")
    timing = StartupTiming(stopwatch, lambda marks: sent.append(dict(marks)))
    timing.before_epoch(EpochPlan(0, 4))
    timing.after_step(step(0, data_time=2.0))
    timing.before_epoch(EpochPlan(1, 4))
    timing.after_step(step(1))
    assert len(sent) == 1
    assert list(sent[0]) == ["worker_started", "epoch_started", "first_batch", "first_iteration"]
    assert sent[0]["first_batch"] == sent[0]["epoch_started"] + 2.0
