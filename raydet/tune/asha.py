"""ASHA whose rungs survive ``--resume``.

Tune's ``Tuner.restore`` brings back the trials and the searcher but rebuilds the
scheduler empty, so after a resume a weak trial would have no finished trial to be
compared with and would run to the end.  ``ResumableASHA`` saves its state after
every decision and loads it when a restored sweep unpickles it.
"""
from __future__ import annotations

import os

from ray.tune.schedulers import AsyncHyperBandScheduler


class ResumableASHA(AsyncHyperBandScheduler):
    """``AsyncHyperBandScheduler`` that keeps its rungs in ``state_file`` (saved after every result)."""

    def __init__(self, state_file: str, **asha_arguments):
        super().__init__(**asha_arguments)
        self.state_file = state_file

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        self.save(self.state_file)
        return decision

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, result)
        self.save(self.state_file)

    def __setstate__(self, state: dict) -> None:
        """Unpickled by ``Tuner.restore``: take the rungs saved by the interrupted sweep."""
        self.__dict__.update(state)
        if os.path.isfile(self.state_file):
            unset = {key: state.get(key) for key in ("_metric", "_mode", "_metric_op")}  # Tune sets them again
            self.restore(self.state_file)
            self.__dict__.update(unset)
