"""Corrupt checkpoints: a latest checkpoint cut short (a partial upload) gives way to the one before it, with one
warning; ``raydet.test`` on a broken file, or on another model's checkpoint, is one error line naming both."""
from __future__ import annotations

import pytest
import torch

from raydet import evaluate
from raydet.builder import build_model
from raydet.config import ConfigError, load_config
from raydet.config.schema import LrConfig
from raydet.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_newest_readable,
    model_summary,
    newest_readable_checkpoint,
    save_checkpoint,
)
from raydet.engine.launcher import launch
from raydet.engine.lr_schedule import build_lr_scheduler
from tests.demo_helpers import DEMO_CONFIG, quick_overrides

MASK_CONFIG = DEMO_CONFIG.parent / "mask_rcnn_tiny_shapes.yaml"


def write_checkpoint(folder, epoch: int, config_yaml: str = "model: {type: X}\n") -> str:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return save_checkpoint(folder, model=model, optimizer=optimizer, epoch=epoch, iteration=epoch * 5,
                           scheduler=build_lr_scheduler(optimizer, LrConfig(), iters_per_epoch=5, max_epochs=2),
                           scaler=None, config_yaml=config_yaml)


def cut_short(path, keep: float = 0.5) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


def test_the_newest_readable_checkpoint_is_the_one_before_a_partial_upload(tmp_path):
    run = str(tmp_path / "run")
    for epoch, name in enumerate(["checkpoint_2026-12-06_10-00-00.000001", "checkpoint_2026-12-06_10-05-00.000001",
                                  "checkpoint_2026-12-06_10-10-00.000001"], start=1):
        write_checkpoint(f"{run}/{name}", epoch)
    (tmp_path / "run/checkpoint_manager_snapshot.json").write_text("{}")  # Ray's, not a checkpoint
    cut_short(f"{run}/checkpoint_2026-12-06_10-10-00.000001/checkpoint.pt")
    saved, folder, warnings = load_newest_readable(run)
    assert saved["epoch"] == 2 and folder.endswith("10-05-00.000001")
    assert newest_readable_checkpoint(run) == folder  # what a stopped run prints: a stop may cut its newest short
    assert len(warnings) == 1 and "10-10-00.000001/checkpoint.pt is not a readable checkpoint" in warnings[0]
    assert "continuing from the checkpoint before it" in warnings[0]
    saved, _, warnings = load_newest_readable(run, newest="checkpoint_2026-12-06_10-00-00.000001")
    assert saved["epoch"] == 1 and warnings == []  # Ray's latest may be older than a folder left half-written
    for name in ("10-00-00", "10-05-00"):
        open(f"{run}/checkpoint_2026-12-06_{name}.000001/checkpoint.pt", "wb").write(b"garbage")
    with pytest.raises(CheckpointError, match="no checkpoint of .* can be read"):
        load_newest_readable(run)
    assert newest_readable_checkpoint(run) is None
    assert load_newest_readable(str(tmp_path / "empty")) is None
    assert newest_readable_checkpoint(str(tmp_path / "empty")) is None
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a raydet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


@pytest.mark.timeout(120)
def test_raydet_test_on_a_broken_or_another_models_checkpoint_is_one_error_line(small_shapes, tmp_path, capsys):
    overrides = quick_overrides(small_shapes)
    fcos = load_config(DEMO_CONFIG, overrides)
    torch.save({"model": build_model(fcos).state_dict(), "config": fcos.to_yaml()}, tmp_path / "fcos.pt")
    cut_short(tmp_path / "fcos.pt", keep=0.9)
    assert evaluate.main([str(DEMO_CONFIG), str(tmp_path / "fcos.pt"), "--set", *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "fcos.pt is not a readable checkpoint" in err[0], err

    mask = load_config(MASK_CONFIG, [f"data.data_root={small_shapes}"])
    torch.save({"model": build_model(mask).state_dict(), "config": mask.to_yaml()}, tmp_path / "mask.pt")
    assert evaluate.main([str(DEMO_CONFIG), str(tmp_path / "mask.pt"), "--set", *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"mask.pt is a checkpoint of {model_summary(mask.to_yaml())}, not of this config's " \
           f"{model_summary(fcos.to_yaml())}: " in err[0]
    assert "MaskRCNN" in err[0] or "TwoStageDetector" in err[0]
    assert "tensors are not in it (e.g. " in err[0] and "have no place in this model" in err[0]

    five_classes = load_config(DEMO_CONFIG, [*overrides, "model.bbox_head.num_classes=5"])
    torch.save({"model": build_model(five_classes).state_dict()}, tmp_path / "five.pt")
    assert evaluate.main([str(DEMO_CONFIG), str(tmp_path / "five.pt"), "--set", *overrides]) == 2
    err = capsys.readouterr().err
    assert "differ in shape (e.g. bbox_head." in err and "[5" in err and "[3" in err

    with pytest.raises(ConfigError, match="--resume .*mask.pt: a checkpoint of "):
        launch(load_config(DEMO_CONFIG, overrides), tmp_path / "wd", resume=str(tmp_path / "mask.pt"))


@pytest.mark.timeout(300)
def test_resume_auto_passes_over_a_latest_checkpoint_cut_short(ray_session, small_shapes, tmp_path, capsys):
    overrides = [*quick_overrides(small_shapes, epochs=2), "scaling.num_workers=0", "checkpoint_config.interval=1",
                 "evaluation.interval=100"]
    first = launch(load_config(DEMO_CONFIG, overrides), tmp_path / "wd")
    run_folder = first.final_metrics["best_checkpoint"].rsplit("/checkpoint_", 1)[0]
    checkpoints = sorted((tmp_path / "wd").glob("ray_results/*/checkpoint_*/checkpoint.pt"))
    assert len(checkpoints) == 2 and str(checkpoints[0]).startswith(run_folder)
    cut_short(checkpoints[-1])  # epoch 2's: a partial upload
    capsys.readouterr()
    longer = [*overrides, "runner.max_epochs=3", "lr_config.step=[3]"]
    resumed = launch(load_config(DEMO_CONFIG, longer), tmp_path / "wd", resume="auto")
    printed = capsys.readouterr()
    assert f"warning: {checkpoints[-1]} is not a readable checkpoint" in printed.err
    log = (tmp_path / "wd" / "train.log").read_text()
    assert "resumed at epoch 1, iteration 12" in log
    # the loop itself looks in the run's folder when Ray hands back no checkpoint (as for a run stopped before
    # Ray recorded its last one), passing over the unreadable one too
    assert f"warning: {checkpoints[-1]} is not a readable checkpoint" in log
    assert resumed.final_metrics["epochs"] == 3 and resumed.final_metrics["iters"] == 36
