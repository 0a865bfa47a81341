"""Run a test's work in a fork() child: what it returned or raised comes back; a hang fails the test."""

from __future__ import annotations

import os
import pickle
import signal
import warnings
from collections.abc import Callable


def in_a_fork(work: Callable[[], object], seconds: int = 30) -> object:
    """Run ``work`` in a fork() child, killed by SIGALRM after ``seconds`` (as a hang would be).

    Returns:
        What ``work`` returned (pickled back), or, where it raised, the line ``'TypeName: message'``.

    Raises:
        AssertionError: when the child did not finish (killed by the alarm or a signal of its own).
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() of a process with threads
        child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read_end)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # pytest-timeout's handler, inherited, would not kill it
        signal.alarm(seconds)
        try:
            outcome = pickle.dumps(work())
        except BaseException as exc:  # everything the child met goes back to the test
            outcome = pickle.dumps(f"{type(exc).__name__}: {exc}")
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(outcome)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read()
    _, status = os.waitpid(child, 0)
    assert status == 0, f"the forked child did not finish (killed by signal {os.WTERMSIG(status)})"
    return pickle.loads(outcome)
