"""Stopping a run from outside: Ctrl+C (SIGINT), SIGTERM (``kill``, ``ray job stop``, a scheduler ending the
driver).

Ray Train's ``fit`` (on the main thread) installs a SIGINT handler that aborts
its controller, which stops the workers; the handler then exits with
``sys.exit(0)``.  Tune's ``fit`` installs one that stops the experiment and
saves its state.  SIGTERM had neither: ``ray.init``'s handler exits at once,
so the MLflow run ended FAILED and a sweep's state was not saved.  While a fit
runs, ``stop_signals_as_ctrl_c`` makes SIGTERM do what Ctrl+C does, and says
afterwards which stop signals arrived, so the caller can tell a stop from a
failure whatever the fit raised.  Ray-free: it only handles signals.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunStopped(KeyboardInterrupt):
    """A run stopped by a signal (a ``KeyboardInterrupt``: the MLflow run ends KILLED, as on Ctrl+C).

    Attributes:
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
        run_folder: the stopped run's folder (its checkpoints), if known.
        latest_checkpoint: its newest readable checkpoint folder, if any (one the stop cut short is passed over).
    """

    def __init__(self, signal_name: str, run_folder: str | None = None, latest_checkpoint: str | None = None):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.run_folder = run_folder
        self.latest_checkpoint = latest_checkpoint

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + signal.Signals[self.signal_name].value


def _as_ctrl_c(signum: int, frame) -> None:
    """SIGTERM: call the SIGINT handler installed now (Ray Train's or Tune's, else Python's KeyboardInterrupt)."""
    handler = signal.getsignal(signal.SIGINT)
    (handler if callable(handler) else signal.default_int_handler)(signal.SIGINT, frame)


@contextlib.contextmanager
def stop_signals_as_ctrl_c() -> Iterator[list[str]]:
    """Within: SIGTERM does what Ctrl+C does at that moment.  Yields a list that, on leaving, holds the names
    of the stop signals received (``["SIGTERM"]``), in order; the SIGINT and SIGTERM handlers of before are
    back (Ray Train leaves its own installed, aborting a controller that has ended).

    The signals are counted through ``signal.set_wakeup_fd``, which sees every signal that has a Python
    handler: Ray Train and Tune replace the SIGINT handler once their fit starts, so no handler of ours
    would see Ctrl+C.  Off the main thread (a sweep's trial) nothing is changed and the list stays empty.
    """
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    previous_interrupt = signal.getsignal(signal.SIGINT)
    previous_terminate = signal.signal(signal.SIGTERM, _as_ctrl_c)
    previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    try:
        yield received
    finally:  # the handlers first: a signal until the wakeup fd is restored is still counted
        signal.signal(signal.SIGTERM, previous_terminate)
        signal.signal(signal.SIGINT, previous_interrupt)
        signal.set_wakeup_fd(previous_wakeup)
        with contextlib.suppress(BlockingIOError):
            received.extend(signal.Signals(number).name for number in os.read(read_end, 4096)
                            if number in STOP_SIGNALS)
        os.close(read_end)
        os.close(write_end)
