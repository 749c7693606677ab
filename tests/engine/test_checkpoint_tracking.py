"""Checkpoints round-trip through weights_only loading; MLflow runs are written to a real store."""
from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient

from raydet.config.schema import LrConfig, MlflowSettings
from raydet.engine.checkpoint import load_checkpoint, save_checkpoint
from raydet.engine.lr_schedule import build_lr_scheduler
from raydet.engine.tracking import MlflowRun, flatten, ui_lines


def test_checkpoint_round_trip(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = build_lr_scheduler(optimizer, LrConfig(), iters_per_epoch=5, max_epochs=2)
    model(torch.randn(8, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    save_checkpoint(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                    epoch=1, iteration=5, config_yaml="model: {type: X}\n", best_bbox_mAP=0.25)
    state = load_checkpoint(tmp_path)  # a directory or the file itself
    assert state["epoch"] == 1 and state["iteration"] == 5 and state["best_bbox_mAP"] == 0.25
    assert state["config"] == "model: {type: X}\n"
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    fresh.load_state_dict(state["model"])
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(state["optimizer"]["state"][0]["momentum_buffer"],
                       optimizer.state_dict()["state"][0]["momentum_buffer"])
    assert state["scheduler"]["last_epoch"] == 1


def test_flatten_config():
    assert flatten({"model": {"neck": {"type": "FPN", "in_channels": [8, 16]}}, "seed": 0, "x": {}}) == {
        "model.neck.type": "FPN", "model.neck.in_channels.0": "8", "model.neck.in_channels.1": "16",
        "seed": "0", "x": "{}",
    }


def test_mlflow_run_logs_into_a_real_store(tmp_path):
    uri, artifacts = MlflowSettings().resolved_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    run = MlflowRun.create(uri, "raydet-tests", "run-1", artifact_location=artifacts)
    run.log_params({f"p{i}": str(i) for i in range(150)})  # more than one batch
    run.log_metrics({"loss": 1.5, "lr": 0.01}, step=3)
    run.log_text("model: {}\n", "config.yaml")
    run.end()
    stored = MlflowClient(uri).get_run(run.run_id)
    assert len(stored.data.params) == 150 and stored.data.metrics == {"loss": 1.5, "lr": 0.01}
    assert stored.info.status == "FINISHED"
    assert (tmp_path / "mlartifacts").is_dir()
    assert [a.path for a in MlflowClient(uri).list_artifacts(run.run_id)] == ["config.yaml"]


def test_the_ui_lines_name_the_store_and_open_the_run_on_model_training(tmp_path):
    """MLflow 3.17's UI opens on its GenAI view unless the address names the model-training one."""
    uri, artifacts = MlflowSettings().resolved_uri(tmp_path)
    run = MlflowRun.create(uri, "raydet-tests", "run-1", artifact_location=artifacts)
    experiment_id = MlflowClient(uri).get_run(run.run_id).info.experiment_id
    assert ui_lines(uri, run.run_id) == [
        f"mlflow ui --backend-store-uri {uri}",
        f"then http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run.run_id}?workflowType=machine_learning"]
    assert ui_lines("databricks", "abc") == ["run abc in databricks"]
