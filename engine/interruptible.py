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

Result = TypeVar("Result")
# How often the waiting thread wakes: a signal the kernel hands to another thread (a builder thread) does not
# interrupt the wait, and its Python handler runs at the next wake-up.
WAKE_S = 0.1


def run_interruptible(work: Callable[[], Result], cancel: threading.Event, name: str) -> Result:
    """Run ``work`` on a new thread and return its result; an exception in the caller's wait cancels it.

    Args:
        work: the job; it must end soon after ``cancel`` is set (the TensorRT builder does at its next step,
            through its progress monitor).
        cancel: set when the caller is interrupted.
        name: the thread's name (seen in stack dumps).

    Returns:
        What ``work`` returned.

    Raises:
        BaseException: what ``work`` raised; or what interrupted the wait (KeyboardInterrupt, TerminatedError),
            once ``work`` has ended.

    Example:
        >>> run_interruptible(lambda: 6 * 7, threading.Event(), "answer")
        42
    """
    outcome: list[tuple[bool, object]] = []
    finished = threading.Event()
    # Whether the work began; taken with the cancel check, so that an interrupt that came before it began (even
    # during thread.start()) means the work never runs, and one that came after waits for it to end.
    began = threading.Lock()
    running = False

    def target() -> None:
        nonlocal running
        with began:
            if cancel.is_set():
                return
            running = True
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            outcome.append((False, exc))
        finally:
            finished.set()

    # Not a daemon: should a second Ctrl-C abandon the wait below, the interpreter still waits for the work to
    # end before it shuts down, instead of freezing a thread that is inside native code.
    thread = threading.Thread(target=target, name=name)
    try:
        thread.start()
        while not finished.wait(WAKE_S):
            pass
    except BaseException:
        with began:
            cancel.set()
            started = running
        if started:
            finished.wait()
        raise
    succeeded, value = outcome[0]
    if not succeeded:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]
