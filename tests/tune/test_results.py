"""The sweep's table: the best trial, ``results.csv``, the printed table, the trials' MLflow runs (no Ray)."""
from __future__ import annotations

import csv

import pytest

from raydet.tune.results import ERROR, FINISHED, INTERRUPTED, STOPPED, TrialRow, best_row, format_table, write_csv
from raydet.tune.sweep import load_sweep
from tests.helpers import REPO


def row(trial_id, metric, status=FINISHED, epochs=5, neck="FPN"):
    return TrialRow(trial_id, {"model.neck": neck, "optimizer.lr": "0.001"}, {}, metric, epochs, status)


@pytest.fixture
def rows():
    return [row("t0", 0.5), row("t1", 0.7, STOPPED, 2, "PAFPN"), row("t2", None, INTERRUPTED, 0),
            row("t3", 0.9, ERROR, 1), row("t4", float("nan"))]


def test_the_best_trial_is_the_best_metric_of_the_trials_that_did_not_fail(rows):
    assert best_row(rows, "max").trial_id == "t1"  # an error's metric and a NaN never win
    assert best_row(rows, "min").trial_id == "t0"
    assert best_row([row("t", None)], "max") is None


def test_results_csv_and_the_table(rows, tmp_path, small_shapes):
    sweep = load_sweep(REPO / "configs/tune/demo_shapes.yaml", [f"data.data_root={small_shapes}"])
    write_csv(rows, sweep, tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as file:
        written = list(csv.DictReader(file))
    assert list(written[0]) == ["trial_id", "model.neck", "optimizer.lr", "bbox_mAP_50", "epochs", "status",
                                "checkpoint", "error"]
    assert [(r["trial_id"], r["bbox_mAP_50"], r["status"]) for r in written[:3]] == [
        ("t0", "0.5", "finished"), ("t1", "0.7", "stopped early"), ("t2", "", "interrupted")]
    table = format_table(rows, sweep, best_row(rows, "max")).splitlines()
    assert table[0].split() == ["trial", "model.neck", "optimizer.lr", "bbox_mAP_50", "epochs", "status"]
    assert table[1].split()[:4] == ["t3", "FPN", "0.001", "0.9000"]  # best value first (max) ...
    assert table[2].split()[:5] == ["*", "t1", "PAFPN", "0.001", "0.7000"]  # ... the best trial marked
    assert table[-1].split()[:4] == ["t2", "FPN", "0.001", "-"]  # never reported: last


def test_the_driver_closes_the_runs_of_trials_that_did_not_finish(tmp_path):
    from raydet.engine.tracking import MlflowRun
    from raydet.tune.driver import _end_unfinished_children

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = MlflowRun.create(uri, "sweep", "sweep")
    children = {trial_id: MlflowRun.create(uri, "sweep", trial_id, tags={"mlflow.parentRunId": parent.run_id,
                                                                           "raydet.trial_id": trial_id})
                for trial_id in ("t0", "t1", "t2", "t3")}
    children["t0"].end("FINISHED")  # a finished trial closes its own run
    _end_unfinished_children(parent, {"t0": FINISHED, "t1": STOPPED, "t2": INTERRUPTED, "t3": ERROR})
    status = {trial_id: parent.client.get_run(run.run_id).info.status for trial_id, run in children.items()}
    assert status == {"t0": "FINISHED", "t1": "KILLED", "t2": "KILLED", "t3": "FAILED"}
    assert parent.client.get_run(parent.run_id).info.status == "RUNNING"  # the driver ends its own run after
