"""A finished sweep's table: one row per trial, ``results.csv``, the printed table, the best trial."""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sweep import Sweep

#: A trial's status in the table.
FINISHED, STOPPED, ERROR, INTERRUPTED = "finished", "stopped early", "error", "interrupted"


@dataclass
class TrialRow:
    """One trial's line of the table.

    Attributes:
        trial_id: Tune's trial id (also the trial's Train run name and folder under ``trials/``).
        labels: ``{searched path: short text of its value}``.
        sampled: ``{searched path: what the searcher sampled}`` (an index for ``choice`` / ``grid``).
        metric: the sweep metric's last reported value (None: never reported).
        epochs: the epochs the trial ran (its last report's ``epoch``).
        status: ``finished``, ``stopped early`` (by the scheduler), ``error`` or ``interrupted``
            (the sweep stopped before the trial did: ``--resume`` runs it).
        checkpoint: the trial's best checkpoint file, when it has one.
        error: the first line of the trial's error.
    """

    trial_id: str
    labels: dict[str, str]
    sampled: dict[str, Any]
    metric: float | None
    epochs: int
    status: str
    checkpoint: str | None = None
    error: str = ""


def trial_row(sweep: Sweep, trial_id: str, sampled: dict[str, Any], last: dict[str, Any], error: BaseException | None,
              trial_dir: Path, interrupted: bool = False) -> TrialRow:
    """The row of one trial from its sampled values, its last result (``last``), its folder, and whether
    the sweep was ``interrupted`` before the trial ended."""
    epochs = int(last.get("epoch") or 0)
    value = last.get(sweep.settings.metric)
    final = trial_dir / "final_metrics.json"
    checkpoint = json.loads(final.read_text()).get("best_checkpoint") if final.is_file() else None
    if checkpoint is None and last.get("checkpoint_path"):  # a trial stopped before it wrote its final metrics
        checkpoint = os.path.join(last["checkpoint_path"], "checkpoint.pt")
    if error is not None:
        status = ERROR
    elif interrupted:
        status = INTERRUPTED
    else:
        status = FINISHED if epochs >= sweep.max_epochs else STOPPED
    return TrialRow(trial_id, sweep.space.labels(sampled), sampled,
                    float(value) if value is not None else None, epochs, status,
                    checkpoint,
                    str(error).strip().splitlines()[-1] if error is not None and str(error).strip() else "")


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The trial with the best final metric among those that reported it (None: none did)."""
    scored = [row for row in rows if row.metric is not None and math.isfinite(row.metric) and row.status != ERROR]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda row: row.metric)


def write_csv(rows: list[TrialRow], sweep: Sweep, path: Path) -> None:
    """``trial_id, <each searched path>, <metric>, epochs, status, checkpoint, error``."""
    paths = [d.path for d in sweep.space.dimensions]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["trial_id", *paths, sweep.settings.metric, "epochs", "status", "checkpoint", "error"])
        for row in rows:
            writer.writerow([row.trial_id, *(row.labels[p] for p in paths),
                             "" if row.metric is None else f"{row.metric:.6g}", row.epochs, row.status,
                             row.checkpoint or "", row.error])


def format_table(rows: list[TrialRow], sweep: Sweep, best: TrialRow | None) -> str:
    """The table printed at the end of a sweep, best trial marked with ``*``, best first."""
    paths = [d.path for d in sweep.space.dimensions]
    header = ["", "trial", *paths, sweep.settings.metric, "epochs", "status"]
    sign = -1 if sweep.settings.mode == "max" else 1
    ordered = sorted(rows, key=lambda r: (r.metric is None, sign * (r.metric or 0.0), r.trial_id))
    lines = [["*" if row is best else "", row.trial_id, *(row.labels[p] for p in paths),
              "-" if row.metric is None else f"{row.metric:.4f}", str(row.epochs), row.status]
             for row in ordered]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *lines])
