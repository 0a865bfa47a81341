"""Release what an object held (device memory, a retained CUDA context, an engine) when the object is dropped
without ``close()``, on a thread of this module's own.

A robot's node torn down on an executor thread often drops its :class:`unetrt.Segmenter` without closing it.
Python's garbage collector runs a finalizer at whatever moment and on whatever thread it picks, possibly a thread
that is capturing a CUDA graph at that moment, where freeing device memory or synchronising is invalid (CUDA
Driver API, ``CU_STREAM_CAPTURE_MODE_THREAD_LOCAL``: "If the local thread has an ongoing capture sequence ... it
is prohibited from potentially unsafe API calls"; CUDA Programming Guide, "CUDA Graphs: Prohibited and Unhandled
Operations"), and where pushing a context would change that thread's context stack. So the finalizer only hands
the release to a queue (``queue.SimpleQueue.put``, which the Python documentation calls safe from ``__del__``
methods and weakref callbacks), and one thread of this module's does the work; graphs other threads capture in
thread-local mode, as unetrt's own, are not affected by it ("Concurrent capture sequences in other threads are
ignored").

The thread is started by the first :func:`release_when_dropped` (never from a finalizer: starting a thread takes
locks the collected thread may hold), restarted in a fork() child that registers again, and drained at exit.
"""

from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
import warnings
import weakref
from collections.abc import Callable

# How long the interpreter's exit waits for releases still queued (a hung GPU must not hang the exit for ever).
EXIT_WAIT_S = 10.0

_Release = tuple[Callable[[], None], str]
_queue: queue.SimpleQueue[_Release | threading.Event | None] = queue.SimpleQueue()
_start_lock = threading.Lock()
_thread: threading.Thread | None = None
_hooked = False  # the exit and fork hooks, registered with the first thread


def release_when_dropped(owner: object, release: Callable[[], None], what: str) -> weakref.finalize:
    """Call ``release`` on the release thread once ``owner`` is garbage, unless the returned finalizer is detached
    first (as ``close()`` does before it releases by itself).

    ``release`` must not refer to ``owner`` (or the owner never becomes garbage). It is skipped in a fork() child
    of the process that registered it (what it would free belongs to the parent) and at interpreter exit.

    Args:
        owner: the object whose end releases the resources.
        release: frees them; an exception it raises becomes a ``RuntimeWarning`` naming ``what``.
        what: what is released, for that warning.

    Returns:
        The finalizer (``detach()`` it when the owner releases by itself).

    Example:
        >>> class Holder: pass
        >>> released = []
        >>> holder = Holder()
        >>> _ = release_when_dropped(holder, lambda: released.append(True), "a holder")
        >>> del holder
        >>> wait_for_releases()
        True
        >>> released
        [True]
    """
    _ensure_thread()
    finalizer = weakref.finalize(owner, _hand_over, os.getpid(), release, what)
    finalizer.atexit = False  # the process's end frees it all; the libraries may already be torn down by then
    return finalizer


def wait_for_releases(timeout: float | None = None) -> bool:
    """Wait until every release handed over so far is done.

    Args:
        timeout: seconds to wait at most (None: no limit).

    Returns:
        Whether they are done (False: the timeout passed first).

    Example:
        >>> wait_for_releases(5.0)
        True
    """
    with _start_lock:
        if _thread is None:
            return True
        done = threading.Event()
        _queue.put(done)
    return done.wait(timeout)


def _hand_over(pid: int, release: Callable[[], None], what: str) -> None:
    if os.getpid() == pid:
        _queue.put((release, what))


def _ensure_thread() -> None:
    global _thread, _hooked
    with _start_lock:
        if _thread is None:
            if not _hooked:
                atexit.register(_stop_at_exit)
                os.register_at_fork(after_in_child=_forget_in_child)
                _hooked = True
            _thread = threading.Thread(target=_run, args=(_queue,), name="unetrt-release", daemon=True)
            _thread.start()


def _run(work: queue.SimpleQueue[_Release | threading.Event | None]) -> None:
    # Each item is handled in a call of its own, so that nothing it held stays referenced while this thread waits.
    while True:
        try:
            if not _handle(work.get()):
                return
        except Warning as warning:  # a warnings filter of "error" raised it: the thread must go on releasing
            sys.stderr.write(f"unetrt: {warning}\n")


def _handle(item: _Release | threading.Event | None) -> bool:
    if item is None:
        return False
    if isinstance(item, threading.Event):
        item.set()
        return True
    release, what = item
    try:
        release()
    except Exception as exc:  # one dropped object's failure must not stop the others' releases
        warnings.warn(f"releasing {what} failed: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=1)
    return True


def _stop_at_exit() -> None:
    global _thread
    with _start_lock:
        thread, _thread = _thread, None
        if thread is None:
            return
        _queue.put(None)
    thread.join(EXIT_WAIT_S)


def _forget_in_child() -> None:
    # The child has no release thread (fork copies only the forking thread), and the queue's contents are the
    # parent's: start afresh.
    global _queue, _thread, _start_lock
    _queue, _thread, _start_lock = queue.SimpleQueue(), None, threading.Lock()

