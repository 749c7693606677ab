"""Ray Train's ``fit`` as raydet runs it: a stop signal ends it as ``RunStopped``, and a controller that gave
up because a Ray actor died under it is ended and the run fitted again from its latest checkpoint.

Ray Train 2.60 retries a worker group that fails while it trains, and a group start that fails or times out
in the steps it guards.  A worker killed in the steps it does not guard (the chaos run found it: a node lost
while the group after the previous loss started) reaches the controller's catch-all as ``ControllerError``
wrapping the actor's death, which its failure policy never retries.  Fitting again under the same run name
continues the run from its latest reported checkpoint, as ``--resume auto`` would.
"""
from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
from typing import Callable

import ray
import ray.train
from ray.train.torch import TorchTrainer
from ray.util.placement_group import PlacementGroup

from .checkpoint import newest_readable_checkpoint
from .stop_signals import RunStopped, stop_signals_as_ctrl_c


class ControllerKeepingTrainer(TorchTrainer):
    """A ``TorchTrainer`` that keeps the handle of the controller its ``fit`` started (``controller``, on the
    main thread), so a controller that failed can be ended before the run is fitted again: Ray Train's
    placement-group cleaner removes the group it held once it is dead."""

    controller: "ray.actor.ActorHandle | None" = None

    def _register_sigint_handler(self, controller: "ray.actor.ActorHandle") -> None:
        # Ray Train 2.60 hands every new controller to this hook, on the main thread only.
        self.controller = controller
        super()._register_sigint_handler(controller)


def fit_again_after_actor_deaths(new_trainer: Callable[[], TorchTrainer], run_folder: str,
                                 max_refits: int) -> tuple[ray.train.Result, int]:
    """Fit a new trainer; when its controller gives up because a Ray actor it called died
    (``ControllerError`` from a ``RayActorError``), end that controller and fit again, at most ``max_refits``
    times (-1: no limit, as Ray's ``FailureConfig``).  Returns the last fit's result and how many times it
    fitted again.  Stop signals raise ``RunStopped`` at once."""
    refits = 0
    while True:
        trainer = new_trainer()
        try:
            return fit_unless_stopped(trainer, run_folder), refits
        except ray.train.ControllerError as error:
            death = error.controller_failure
            if not isinstance(death, ray.exceptions.RayActorError) or refits == max_refits:
                raise
            reason = f"{type(death).__name__}: {str(death).splitlines()[0] if str(death) else ''}"
        finally:  # a fit's controller ends with it, and every placement group it created (best effort)
            with contextlib.suppress(Exception):
                end_controller(trainer)
        refits += 1
        print(f"Ray Train's controller gave up because an actor it called died ({reason}); fitting again from "
              f"the latest checkpoint ({refits} of {'unlimited' if max_refits == -1 else max_refits})",
              file=sys.stderr, flush=True)


def end_controller(trainer: TorchTrainer, timeout_s: float = 30) -> None:
    """End a fit's controller now, and the placement groups it leaves: killed through its handle where it was
    kept (and, for handles only the garbage kept, by collecting them).

    A worker group whose start failed after Ray Train recorded it is never handed to the controller, which
    so never removes its placement group; Ray's placement-group cleaner removes only the group registered
    last, and a group outlives its creator (its lifetime is the job's).  The chaos run found one holding the
    second node's only slot, so every later group waited for it.  Each group this controller created is
    removed once it is dead.
    """
    controller = getattr(trainer, "controller", None)
    trainer.controller = None
    gc.collect()
    if controller is None:
        return
    actor_id = controller._actor_id.hex()
    ray.kill(controller, no_restart=True)
    del controller
    deadline = time.monotonic() + timeout_s
    while _actor_alive(actor_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    for group in placement_groups_created_by(actor_id):
        ray.util.remove_placement_group(group)


def _actor_alive(actor_id: str) -> bool:
    from ray._private.state import actors  # the GCS actor table: a cluster may have no dashboard for the state API

    return actors(actor_id=actor_id).get("State") not in ("DEAD", None)


def placement_groups_created_by(actor_id: str) -> list[PlacementGroup]:
    """The placement groups, not yet removed, that the actor ``actor_id`` (hex) created, oldest first, from the
    GCS's placement-group table (its public view, ``ray.util.placement_group_table``, leaves out the creator)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    table = gcs_pb2.PlacementGroupTableData
    groups = sorted((table.FromString(raw) for raw in state._connect_and_get_accessor().get_placement_group_table()),
                    key=lambda group: group.placement_group_creation_timestamp_ms)
    return [PlacementGroup(ray.PlacementGroupID(group.placement_group_id)) for group in groups
            if group.creator_actor_id.hex() == actor_id and group.state != table.REMOVED]


class StaleGroupRemover(threading.Thread):
    """While a fit runs, every ``interval_s``: the placement groups its controller created, but the newest, are
    removed.  A controller holds one worker group at a time, and creates the next group's placement group only
    once the last group is gone; an older group still there is one Ray Train lost track of (a group whose
    start failed after it was recorded), and it holds the resources the new group waits for, for ever: the
    chaos run found one, holding the second node's only slot.  Needs the controller's handle
    (``ControllerKeepingTrainer``, a fit on the main thread)."""

    def __init__(self, trainer: TorchTrainer, interval_s: float = 5.0):
        super().__init__(name="raydet-stale-groups", daemon=True)
        self.trainer, self.interval_s = trainer, interval_s
        self.removed: list[str] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            controller = getattr(self.trainer, "controller", None)
            if controller is None:
                continue
            try:
                for group in placement_groups_created_by(controller._actor_id.hex())[:-1]:
                    ray.util.remove_placement_group(group)
                    self.removed.append(group.id.hex())
                    print(f"removed placement group {group.id.hex()}: Ray Train's controller had lost track of "
                          "it (a worker group whose start failed), and it held what the next group needs",
                          file=sys.stderr, flush=True)
            except Exception:  # noqa: BLE001 — the GCS mid-restart, a group removed meanwhile: next round
                continue

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=self.interval_s + 5)


def fit_unless_stopped(trainer: TorchTrainer, run_folder: str) -> ray.train.Result:
    """``trainer.fit()``; a stop signal (Ctrl+C, SIGTERM) aborts Ray Train's controller and its workers and
    raises ``RunStopped``, whatever the fit raised meanwhile (Ray Train's handler exits with
    ``SystemExit(0)``; the wait on an aborted controller may end in its death).  Meanwhile a
    ``StaleGroupRemover`` removes the placement groups its controller lost track of."""
    error: BaseException | None = None
    result = None
    remover = StaleGroupRemover(trainer)
    remover.start()
    with stop_signals_as_ctrl_c() as stops:
        try:
            result = trainer.fit()
        except BaseException as raised:  # noqa: BLE001 — judged below, once the signals are known
            error = raised
    remover.stop()
    try:
        if stops and (error is not None or result.return_value is None):
            raise RunStopped(stops[0], run_folder, newest_readable_checkpoint(run_folder)) from error
        if error is not None:
            raise error
        return result
    finally:
        error = None  # the frame would hold its own exception's traceback: a cycle only the collector frees
