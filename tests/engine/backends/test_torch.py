"""unetrt.backends.torch in a process forked from one that ran torch: the model answers on one thread, never hangs."""

from __future__ import annotations

import os
import pickle
import signal
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from unetrt.segmenter import Segmenter

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")


def in_a_fork(work: Callable[[], object], seconds: int = 60) -> bytes:
    """Run ``work`` in a fork() child, killed by SIGALRM after ``seconds`` (as a hang would be); what it returned
    (pickled) or the line it raised."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read_end)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # pytest-timeout's handler, inherited, would not kill it
        signal.alarm(seconds)
        try:
            outcome = pickle.dumps(work())
        except BaseException as exc:  # everything the child met goes back to the test
            outcome = f"{type(exc).__name__}: {exc}".encode()
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(outcome)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read()
    _, status = os.waitpid(child, 0)
    assert status == 0, f"the forked child hung (killed by signal {os.WTERMSIG(status)})"
    return outcome


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    """torch's CPU kernels on two OpenMP threads in this process, as on any machine with two cores or more."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_segmenter_opened_in_a_fork_of_a_torch_process_answers_as_in_the_parent(two_torch_threads: None) -> None:
    """The documented rule for a fork (open a new Segmenter there) hung for good on torch: libgomp's threads of the
    parent's parallel regions are not in the child, which waited for them in its first convolution."""
    frame = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    with Segmenter("camvid", backend="torch", precision="fp32") as segmenter:
        expected = segmenter.segment(frame).mask

    def open_and_segment() -> tuple[np.ndarray, int | None]:
        with Segmenter("camvid", backend="torch", precision="fp32") as opened:
            return opened.segment(frame).mask, opened.backend.threads

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a process with threads
        mask, threads = pickle.loads(in_a_fork(open_and_segment))
        refused = in_a_fork(lambda: Segmenter("camvid", backend="torch", precision="fp32", threads=2)).decode()
    assert np.array_equal(mask, expected)
    assert threads == 1
    assert refused.startswith("ValueError: threads=2 cannot run in a process forked from one that had imported "
                              "torch"), refused
    assert "'spawn' or 'forkserver'" in refused
