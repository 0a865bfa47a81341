"""Run long native work (a TensorRT engine build) so that Ctrl-C and SIGTERM stop it instead of waiting for it.

Python runs signal handlers in the main thread only, between bytecodes: a native call that releases the GIL
(TensorRT's ``build_serialized_network`` does) keeps Ctrl-C and a supervisor's SIGTERM waiting until it returns
(Python documentation, :mod:`signal`, "Execution of Python signal handlers": "A long-running calculation
implemented purely in C ... may run uninterrupted for an arbitrary amount of time, regardless of any signals
received. The Python signal handlers will be called when the calculation finishes."). A first-run build takes
minutes on a Jetson, longer than systemd (90 s) or ``docker stop`` (10 s) wait before they kill the process.

:func:`run_interruptible` runs the work on a thread of its own while the calling thread waits, where signal
handlers still run. An exception there (KeyboardInterrupt, or the :class:`~unetrt.cli.TerminatedError` a SIGTERM
handler raises) sets the work's ``cancel`` event, waits for the work to notice it and end, and propagates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from .caller_warning import caller_frame, working_for

Result = TypeVar("Result")
# How often the waiting thread wakes: a signal the kernel hands to another thread (a builder thread) does not
# interrupt the wait, and its Python handler runs at the next wake-up.
WAKE_S = 0.1


def run_interruptible(work: Callable[[], Result], cancel: threading.Event, name: str,
                      on_cancel: Callable[[], None] | None = None) -> Result:
    """Run ``work`` on a new thread and return its result; an exception in the caller's wait cancels it.

    Args:
        work: the job; it must end soon after ``cancel`` is set (the TensorRT builder does at its next step,
            through its progress monitor).
        cancel: set when the caller is interrupted.
        name: the thread's name (seen in stack dumps).
        on_cancel: called once the work was cancelled while running (a line saying it is being stopped).

    Returns:
        What ``work`` returned.

    Raises:
        BaseException: what ``work`` raised; or what interrupted the wait (KeyboardInterrupt, TerminatedError),
            once ``work`` has ended (a second interrupt while waiting for it comes out at once, the work
            cancelled all the same).
        ValueError: when ``cancel`` was set before the work began.

    Example:
        >>> run_interruptible(lambda: 6 * 7, threading.Event(), "answer")
        42
    """
    outcome: list[tuple[bool, object]] = []
    finished = threading.Event()
    running = False
    # The work's warnings name the line that made this call, which this thread holds, not the work thread's start.
    caller = caller_frame()

    def target() -> None:
        nonlocal running
        try:
            # Announced before the check, as the caller sets ``cancel`` before it reads ``running``: either the
            # work sees the cancel and never runs, or the caller sees it running and waits for it.
            running = True
            if not cancel.is_set():
                with working_for(caller):
                    outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            outcome.append((False, exc))
        finally:
            finished.set()

    # The thread takes the caller's daemon flag: from the main thread it is not a daemon, so the interpreter waits
    # for the work (stopped at its next step) before it shuts down instead of freezing a thread in native code.
    thread = threading.Thread(target=target, name=name)
    try:
        thread.start()
        while not finished.wait(WAKE_S):
            pass
    except BaseException:
        cancel.set()
        if running and not finished.is_set():
            if on_cancel is not None:
                on_cancel()
            finished.wait()
        outcome.clear()  # the work's error after a cancel is the cancel's doing; the interrupt is what counts
        raise
    finally:
        # Any other way out of the wait (a second interrupt inside the handler above) cancels the work too.
        if not finished.is_set():
            cancel.set()
    if not outcome:
        raise ValueError(f"{name} was cancelled before it began (its cancel event was already set)")
    succeeded, value = outcome[0]
    if not succeeded:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]
