"""The sweep's table: the best trial, ``results.csv``, the printed table (no Ray)."""
from __future__ import annotations

import csv

import pytest
from helpers import REPO

from raydet.tune.results import ERROR, FINISHED, INTERRUPTED, STOPPED, TrialRow, best_row, format_table, write_csv
from raydet.tune.sweep import load_sweep


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
