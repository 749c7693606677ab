"""``stop_signals_as_ctrl_c`` without Ray: SIGTERM calls whatever SIGINT handler is installed at that moment
(as Ray Train's and Tune's fits install their own), and both signals are seen even through such a handler."""
from __future__ import annotations

import os
import signal
import time

import pytest

from raydet.engine.stop_signals import RunStopped, stop_signals_as_ctrl_c


def deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # Python runs the handler at its next check, within this sleep


@pytest.mark.timeout(10)
def test_sigterm_is_ctrl_c_and_both_are_seen_through_a_handler_installed_inside():
    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    called = []
    with stop_signals_as_ctrl_c() as stops:
        signal.signal(signal.SIGINT, lambda signum, frame: called.append(signum))  # as Ray Train's fit does
        deliver(signal.SIGTERM)
        deliver(signal.SIGINT)
        assert called == [signal.SIGINT, signal.SIGINT]  # SIGTERM went to the SIGINT handler of the moment
    assert stops == ["SIGTERM", "SIGINT"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (before_int, before_term)


@pytest.mark.timeout(10)
def test_without_a_handler_of_its_own_sigterm_interrupts_like_ctrl_c():
    # Python's own SIGINT handler: a Ray Train fit run in this process outside raydet's launcher (earlier tests)
    # leaves Ray Train's installed, which does not raise.
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with stop_signals_as_ctrl_c() as stops:
                deliver(signal.SIGTERM)
        assert stops == ["SIGTERM"]
        with stop_signals_as_ctrl_c() as stops:
            pass
        assert stops == []
    finally:
        signal.signal(signal.SIGINT, earlier)


def test_a_stopped_run_exits_with_the_shells_code_for_its_signal():
    assert RunStopped("SIGINT").exit_code == 130 and RunStopped("SIGTERM").exit_code == 143
    assert isinstance(RunStopped("SIGTERM"), KeyboardInterrupt)  # the MLflow run ends KILLED, as on Ctrl+C
