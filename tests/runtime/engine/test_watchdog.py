"""The watchdog: it terminates a call whose stop says so, sleeps once calls stop coming, and wakes for the next."""

import types

import pytest

from s2s_runtime.engine.watchdog import CallStopped, Watchdog
from tests.conftest import wait_until


def a_call(watchdog, stop):
    """A call that runs until its RunOptions say terminate (as onnxruntime would), then fails as onnxruntime does."""
    run_options = types.SimpleNamespace(terminate=False)
    with pytest.raises(CallStopped), watchdog.watching(stop, run_options):
        assert wait_until(lambda: run_options.terminate)
        raise RuntimeError("Exiting due to terminate flag being set to true.")
    return run_options


def test_a_stopped_call_is_terminated_then_the_thread_sleeps_and_wakes_for_the_next():
    watchdog = Watchdog(interval=0.001, linger=0.05)
    asked = []
    assert a_call(watchdog, lambda: asked.append(1) or len(asked) > 2).terminate
    wait_until(lambda: watchdog._sleeping)  # no call for longer than its linger: asleep on the condition
    assert a_call(watchdog, lambda: True).terminate  # woken by the new call
    assert not watchdog._calls


def test_a_failing_stop_ends_its_call_and_an_unstopped_error_passes_through():
    watchdog = Watchdog(interval=0.001, linger=0.05)

    def broken():
        raise ValueError("the stop itself fails")

    assert a_call(watchdog, broken).terminate
    with (
        pytest.raises(RuntimeError, match="not a stop"),
        watchdog.watching(lambda: False, types.SimpleNamespace(terminate=False)),
    ):
        raise RuntimeError("not a stop")
