"""run_interruptible: the work's result or error in the caller; an interrupt of the caller's wait cancels the work
and propagates once the work has ended."""

from __future__ import annotations

import _thread
import linecache
import threading
from typing import Any

import pytest

from unetrt.interruptible import run_interruptible


def test_the_result_and_the_error_of_the_work_reach_the_caller() -> None:
    assert run_interruptible(lambda: threading.current_thread().name, threading.Event(), "worker") == "worker"
    error = ValueError("refused")

    def fail() -> None:
        raise error

    with pytest.raises(ValueError) as raised:
        run_interruptible(fail, threading.Event(), "worker")
    assert raised.value is error


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread")
def test_ctrl_c_in_the_wait_cancels_the_work_and_waits_for_it() -> None:
    cancel = threading.Event()
    ended = threading.Event()

    def work() -> str:
        _thread.interrupt_main()  # Ctrl-C while the caller waits
        if not cancel.wait(60):
            return "not cancelled"
        ended.set()
        return "cancelled"

    with pytest.raises(KeyboardInterrupt):
        run_interruptible(work, cancel, "worker")
    assert cancel.is_set() and ended.is_set()  # the work saw the cancel and had ended when the interrupt came out


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread")
def test_an_interrupt_before_the_work_began_means_it_never_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    start = threading.Thread.start

    def interrupted_start(thread: threading.Thread) -> None:
        start(thread)
        raise KeyboardInterrupt  # as a Ctrl-C inside Thread.start(), right after the thread was created

    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    cancel = threading.Event()

    def work() -> None:
        ran.append("began")
        cancel.wait(60)
        ran.append("ended")

    with pytest.raises(KeyboardInterrupt):
        run_interruptible(work, cancel, "worker")
    monkeypatch.undo()
    assert ran in ([], ["began", "ended"])  # never ran, or was cancelled and had ended when the interrupt came out
    for thread in threading.enumerate():
        if thread.name == "worker":
            thread.join(60)
    assert ran in ([], ["began", "ended"])


def test_an_event_set_beforehand_means_the_work_never_runs() -> None:
    cancel = threading.Event()
    cancel.set()
    ran: list[str] = []
    with pytest.raises(ValueError, match="cancelled before it began"):
        run_interruptible(lambda: ran.append("ran"), cancel, "worker")
    assert ran == []


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread")
def test_a_second_interrupt_before_the_cancel_still_cancels_the_work() -> None:
    """A double-tapped Ctrl-C: the second KeyboardInterrupt surfaces at the first line of the handling of the
    first, before it set ``cancel``; the work must be cancelled all the same, not left to run (and write)."""
    import sys

    cancel = threading.Event()
    said: list[str] = []

    def work() -> None:
        _thread.interrupt_main()
        said.append("cancelled" if cancel.wait(60) else "ran to its end")

    def second_interrupt(frame: Any, event: str, arg: object) -> Any:
        if frame.f_code is run_interruptible.__code__ and event == "line":
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
            if line == "cancel.set()" and not second:
                second.append(True)
                raise KeyboardInterrupt("second")
        return second_interrupt

    second: list[bool] = []
    sys.settrace(lambda frame, event, arg: second_interrupt if frame.f_code is run_interruptible.__code__ else None)
    try:
        with pytest.raises(KeyboardInterrupt, match="second"):
            run_interruptible(work, cancel, "worker")
    finally:
        sys.settrace(None)
    for thread in threading.enumerate():
        if thread.name == "worker":
            thread.join(60)
    assert second and cancel.is_set() and said == ["cancelled"]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread")
def test_ctrl_c_says_once_that_the_running_work_is_being_stopped() -> None:
    cancel = threading.Event()
    said: list[str] = []

    def work() -> None:
        _thread.interrupt_main()
        cancel.wait(60)

    with pytest.raises(KeyboardInterrupt):
        run_interruptible(work, cancel, "worker", on_cancel=lambda: said.append("stopping"))
    assert said == ["stopping"]


@pytest.mark.timeout(60)  # waiting for work that never started would hang here
def test_a_thread_that_cannot_start_fails_at_once_without_saying_it_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    # Out of threads, Thread.start raises before the work exists: there is nothing to stop and nothing to wait for.
    def no_thread(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    said: list[str] = []
    cancel = threading.Event()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        run_interruptible(lambda: None, cancel, "worker", on_cancel=lambda: said.append("stopping"))
    assert said == [] and cancel.is_set()
