"""Start-up timing: named marks (Unix times) from the driver and rank 0, and the phases between them."""
from __future__ import annotations

import time

#: Start-up phases of a run, in order: (name in ``startup_s``, the mark that ends it).  Marks come from the
#: driver (``launched`` … ``fit_started``) and rank 0 (``worker_started`` … ``first_iteration``).
STARTUP_PHASES = (
    ("checks", "checked"),              # config, model and optimizer built once, annotations read and checked
    ("ray_start", "ray_ready"),         # a local Ray started (or the cluster joined)
    ("records", "records_ready"),       # the records tables handed to Ray Data, the work dir written
    ("mlflow_wait", "mlflow_ready"),    # what is left of opening the MLflow run (it opens while Ray starts)
    ("to_fit", "fit_started"),          # the run recorder and the TorchTrainer
    ("worker_group", "worker_started"),  # Ray Train's controller, placement, the worker processes and imports
    ("model", "model_ready"),           # model, DDP, optimizer built; checkpoint restored (decoding has begun)
    ("first_batch", "first_batch"),     # waiting for the first decoded batch
    ("first_step", "first_iteration"),  # the first forward, backward and optimizer step
)


class Stopwatch:
    """Named marks, each the Unix time it was taken; the first is taken when the stopwatch is made."""

    def __init__(self, first: str):
        self.marks: dict[str, float] = {first: time.time()}

    def mark(self, name: str, at: float | None = None) -> float:
        """Record ``name`` now (or ``at``); a mark taken already keeps its first time.  Returns its time."""
        return self.marks.setdefault(name, time.time() if at is None else at)

    def __contains__(self, name: str) -> bool:
        return name in self.marks

    def __getitem__(self, name: str) -> float:
        return self.marks[name]


def startup_phases(marks: dict[str, float]) -> dict[str, float]:
    """Seconds each start-up phase took (``STARTUP_PHASES``), and ``to_first_iteration`` from the launch.

    A phase whose mark is missing (no iteration ran, say) is left out.
    """
    phases, previous = {}, marks["launched"]
    for name, mark in STARTUP_PHASES:
        if mark in marks:
            phases[name] = round(marks[mark] - previous, 2)
            previous = marks[mark]
    if "first_iteration" in marks:
        phases["to_first_iteration"] = round(marks["first_iteration"] - marks["launched"], 2)
    return phases
