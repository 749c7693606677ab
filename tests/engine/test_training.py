"""Training runs on a real local Ray: DDP workers, checkpoints, failures, resumption, MLflow."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import ray.train
from mlflow.tracking import MlflowClient

from raydet import evaluate as test_cli
from raydet.config import load_config
from raydet.engine.checkpoint import load_checkpoint
from raydet.engine.launcher import STARTUP_PHASES, RunOptions, launch
from tests.demo_helpers import DEMO_CONFIG, printed_metrics, quick_overrides
from tests.engine.failure_injection import MARKER, ControllerLosesAnActorOnce, KillWorkerOnce


def alive_actors(*class_names: str) -> list[str]:
    """The class names of the session cluster's live actors of these classes, as Ray's actor table has them."""
    from ray._private.state import actors

    return sorted(actor["ActorClassName"] for actor in actors().values()
                  if actor["State"] == "ALIVE" and actor["ActorClassName"] in class_names)


def assert_the_runs_actors_ended() -> None:
    """A finished run's recorder and stream runners end with it (a sweep runs many runs in one process)."""
    deadline = time.time() + 30
    while alive_actors("RunRecorder", "_StreamRunner") and time.time() < deadline:
        time.sleep(0.5)
    assert alive_actors("RunRecorder", "_StreamRunner") == []


def history(outcome_or_run, metric: str, tracking_uri: str | None = None) -> dict[int, float]:
    """``{step: value}`` of an MLflow metric of a run (a launch outcome, or a run id with its URI)."""
    uri = tracking_uri or outcome_or_run.mlflow_uri
    run_id = outcome_or_run if isinstance(outcome_or_run, str) else outcome_or_run.mlflow_run_id
    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, metric)}


@pytest.mark.timeout(300)
def test_same_seed_gives_the_same_losses_on_one_worker(ray_session, small_shapes, tmp_path):
    """num_workers 0: the loop runs in this process, one worker without a worker group."""
    overrides = [*quick_overrides(small_shapes), "scaling.num_workers=0"]
    first = launch(load_config(DEMO_CONFIG, overrides), tmp_path / "first")
    second = launch(load_config(DEMO_CONFIG, overrides), tmp_path / "second")
    losses = history(first, "train/loss")
    assert sorted(losses) == [2, 4, 6, 8, 10, 12]  # 48 images / 4 per batch, a log line every 2 batches
    assert history(second, "train/loss") == losses
    reseeded = launch(load_config(DEMO_CONFIG, [*overrides, "seed=1"]), tmp_path / "reseeded")
    assert history(reseeded, "train/loss") != losses
    saved = load_checkpoint(first.final_metrics["best_checkpoint"])  # kept although no worker group ran
    assert saved["epoch"] == 1 and saved["iteration"] == 12
    assert_the_runs_actors_ended()  # the loop ran here, with a stream runner of this process's own


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_auto_finishes_an_interrupted_run(ray_session, small_shapes, tmp_path):
    """A run that dies for good in epoch 2 is finished by --resume auto from its epoch-1
    checkpoint: same length, same LR schedule, same batches."""
    config = load_config(DEMO_CONFIG, [*quick_overrides(small_shapes, epochs=2), "scaling.num_workers=1",
                                       "checkpoint_config.interval=1", "log_config.interval=1"])
    with pytest.raises(ray.train.TrainingFailedError):
        launch(config, tmp_path / "wd", step_hooks=[KillWorkerOnce(iteration=16)])  # 12 batches per epoch on one worker
    uri = f"sqlite:///{(tmp_path / 'wd').resolve()}/mlflow.db"
    failed_run = MlflowClient(uri).search_runs(MlflowClient(uri).get_experiment_by_name("raydet-demo").experiment_id)[0]
    assert failed_run.info.status == "FAILED"

    resumed = launch(config, tmp_path / "wd", resume="auto")
    assert resumed.final_metrics["iters"] == 24 and resumed.final_metrics["epochs"] == 2
    startup = resumed.final_metrics["startup_s"]  # where the seconds to the first iteration went
    assert list(startup) == [name for name, _ in STARTUP_PHASES] + ["to_first_iteration"]
    assert min(startup.values()) >= 0 and startup["worker_group"] > 0 and startup["first_step"] > 0
    assert sum(startup.values()) - startup["to_first_iteration"] == pytest.approx(startup["to_first_iteration"],
                                                                                   abs=0.05)
    assert "resumed at epoch 1, iteration 12" in (tmp_path / "wd" / "train.log").read_text()
    assert_the_runs_actors_ended()
    before_failure = {metric: {step: v for step, v in history(failed_run.info.run_id, metric, uri).items() if step > 12}
                      for metric in ("train/lr", "train/loss")}
    assert sorted(before_failure["train/loss"]) == [13, 14, 15, 16]
    for metric, values in before_failure.items():
        again = history(resumed, metric)
        assert {step: again[step] for step in values} == values, metric


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_controller_that_gave_up_on_a_dead_actor_is_ended_and_the_run_fitted_again(
        ray_session, small_shapes, tmp_path, capfd):
    """Ray Train 2.60 does not retry a controller error from an actor's death (a worker killed while its group
    starts): raydet ends that controller, freeing its placement group, and fits the same run again from its
    latest checkpoint; the run ends as if nothing happened."""
    from tests.chaos import alive_ids, wait_for_no_leftovers

    config = load_config(DEMO_CONFIG, [*quick_overrides(small_shapes, epochs=2), "scaling.num_workers=1",
                                       "scaling.max_failures=3", "checkpoint_config.interval=1"])
    marker = tmp_path / "lost-actor"
    before = alive_ids(ray_session)
    outcome = launch(config, tmp_path / "wd", options=RunOptions(
        name="lost-actor", callbacks=(ControllerLosesAnActorOnce(str(marker)),)))
    assert marker.exists()
    assert "fitting again from the latest checkpoint (1 of 3)" in capfd.readouterr().err
    final = outcome.final_metrics
    assert final["epochs"] == 2 and final["iters"] == 24 and final["images_seen"] == 2 * 48
    assert "resumed at epoch 1, iteration 12" in (tmp_path / "wd" / "train.log").read_text()
    assert MlflowClient(outcome.mlflow_uri).get_run(outcome.mlflow_run_id).info.status == "FINISHED"
    wait_for_no_leftovers(ray_session, before, timeout_s=30)


# --- the end-to-end run: one training, the tests below each check one thing about it ------------------------

STEPS_PER_EPOCH = 16  # 240 images, in two aspect-ratio groups of batches of 8: 31 batches for 2 workers


@pytest.fixture(scope="module")
def end_to_end_run(ray_session, demo_shapes, tmp_path_factory) -> SimpleNamespace:
    """The demo's tiny FCOS on a 20-epoch schedule, 2 DDP workers, a worker killed in epoch 3; the run
    resumes from the epoch-2 checkpoint.  Its ``config``, launch ``outcome``, ``final`` metrics (as
    final_metrics.json has them) and ``work_dir``."""
    work_dir = tmp_path_factory.mktemp("end_to_end") / "wd"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(demo_shapes.parent)  # a relative data_root, as in the demo: workers run elsewhere
        config = load_config(DEMO_CONFIG, [f"data.data_root={demo_shapes.name}", "scaling.max_failures=1",
                                           "runner.max_epochs=20", "lr_config.step=[16, 19]",
                                           "checkpoint_config.interval=1", "evaluation.interval=100"])
        outcome = launch(config, work_dir, step_hooks=[KillWorkerOnce(iteration=40)])
    final = json.loads((work_dir / "final_metrics.json").read_text())
    return SimpleNamespace(config=config, outcome=outcome, final=final, work_dir=work_dir)


def end_to_end(test):
    """The marks of a test of the end-to-end run: slow, and the run's time in whichever of them starts it."""
    return pytest.mark.slow(pytest.mark.timeout(900)(test))


@end_to_end
def test_two_ddp_workers_learn_shapes_through_a_worker_failure(end_to_end_run):
    """A detector that works (bbox mAP@0.5 >= 0.5) at the end of a run that lost a worker."""
    assert end_to_end_run.final["bbox_mAP_50"] >= 0.5, end_to_end_run.final


@end_to_end
def test_the_run_resumes_from_the_checkpoint_before_the_failure(end_to_end_run):
    assert "resumed at epoch 2, iteration 32" in (end_to_end_run.work_dir / "train.log").read_text()


@end_to_end
def test_start_up_time_is_the_first_worker_groups(end_to_end_run):
    """Not the restarted one's, whose first iteration came after the kill."""
    final = end_to_end_run.final
    killed_at = (end_to_end_run.work_dir / MARKER).stat().st_mtime
    assert final["launched_at"] + final["startup_s"]["to_first_iteration"] < killed_at


@end_to_end
def test_the_resumed_run_finishes_every_epoch(end_to_end_run):
    assert end_to_end_run.final["epochs"] == end_to_end_run.config["runner"]["max_epochs"]


@end_to_end
def test_the_resumed_run_makes_as_many_iterations_as_an_uninterrupted_one(end_to_end_run):
    assert end_to_end_run.final["iters"] == STEPS_PER_EPOCH * end_to_end_run.final["epochs"]


@end_to_end
def test_the_replicas_end_bitwise_identical(end_to_end_run):
    assert end_to_end_run.final["replicas_identical"] is True  # parameters and buffers bitwise equal on both workers


@end_to_end
def test_the_best_checkpoint_is_the_last_epochs_fcos(end_to_end_run):
    saved = load_checkpoint(end_to_end_run.final["best_checkpoint"])
    assert saved["epoch"] == end_to_end_run.final["epochs"] and "FCOS" in saved["config"]


def mlflow_run(end_to_end_run):
    """The run's MLflow client and run."""
    client = MlflowClient(end_to_end_run.outcome.mlflow_uri)
    return client, client.get_run(end_to_end_run.outcome.mlflow_run_id)


@end_to_end
def test_mlflow_records_a_finished_fcos_run(end_to_end_run):
    _, run = mlflow_run(end_to_end_run)
    assert run.info.status == "FINISHED" and run.data.params["model.type"] == "FCOS"


@end_to_end
def test_mlflow_logs_the_final_val_metric(end_to_end_run):
    _, run = mlflow_run(end_to_end_run)
    assert run.data.metrics["val/bbox_mAP_50"] == end_to_end_run.final["bbox_mAP_50"]


@end_to_end
def test_mlflow_keeps_the_config_final_metrics_and_predictions_picture(end_to_end_run):
    client, run = mlflow_run(end_to_end_run)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "final_metrics.json", "predictions.png"} <= artifacts


@end_to_end
def test_the_predictions_picture_is_a_png(end_to_end_run):
    assert (end_to_end_run.work_dir / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def score_best_checkpoint(end_to_end_run, demo_shapes, monkeypatch, capsys):
    """``score_best_checkpoint(*options)``: ``python -m raydet.test`` (in this process) on the run's best
    checkpoint, val split, with ``options``; the metrics it prints."""
    monkeypatch.chdir(demo_shapes.parent)

    def score(*options: str) -> dict[str, float]:
        capsys.readouterr()
        assert test_cli.main([str(DEMO_CONFIG), end_to_end_run.final["best_checkpoint"], "--split", "val", *options,
                              "--set", f"data.data_root={demo_shapes.name}"]) == 0
        return printed_metrics(capsys.readouterr().out)

    return score


@end_to_end
def test_raydet_test_scores_the_best_checkpoint_as_the_run_did(end_to_end_run, score_best_checkpoint):
    assert score_best_checkpoint()["bbox_mAP_50"] == pytest.approx(end_to_end_run.final["bbox_mAP_50"], abs=1e-4)


@end_to_end
def test_test_time_augmentation_keeps_the_detector_working(score_best_checkpoint):
    assert score_best_checkpoint("--aug-test", "--tta-scales", "320x320,384x384")["bbox_mAP_50"] >= 0.5
