"""unetrt.dropped: what a dropped object held is released on the release thread, once, and never in a fork child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

from unetrt import dropped
from unetrt.dropped import release_when_dropped, wait_for_releases


class Owner:
    """Something that holds resources (a segmenter)."""


def test_a_dropped_owner_is_released_once_on_the_release_thread() -> None:
    threads: list[str] = []
    owner = Owner()
    release_when_dropped(owner, lambda: threads.append(threading.current_thread().name), "an owner")
    del owner
    assert wait_for_releases(10)
    assert threads == ["unetrt-release"]


def test_an_owner_that_released_by_itself_is_not_released_again() -> None:
    released: list[bool] = []
    owner = Owner()
    release_when_dropped(owner, lambda: released.append(True), "an owner").detach()
    del owner
    assert wait_for_releases(10)
    assert released == []


def test_a_failed_release_is_a_warning_naming_it_and_the_next_ones_still_run() -> None:
    released: list[str] = []

    def fails() -> None:
        raise RuntimeError("cuMemFree failed: an illegal memory access was encountered")

    first, second = Owner(), Owner()
    release_when_dropped(first, fails, "a dropped Segmenter of 'camvid'")
    release_when_dropped(second, lambda: released.append("second"), "another")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del first, second
        assert wait_for_releases(10)
    assert released == ["second"]
    assert [str(warning.message) for warning in caught] == [
        "releasing a dropped Segmenter of 'camvid' failed: RuntimeError: cuMemFree failed: an illegal memory access "
        "was encountered"]


def test_warnings_as_errors_do_not_end_the_release_thread(capfd: pytest.CaptureFixture[str]) -> None:
    released: list[bool] = []

    def fails() -> None:
        raise RuntimeError("device lost")

    first, second = Owner(), Owner()
    release_when_dropped(first, fails, "the first")
    release_when_dropped(second, lambda: released.append(True), "the second")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del first, second
        assert wait_for_releases(10)
    assert released == [True]
    assert "unetrt: releasing the first failed: RuntimeError: device lost" in capfd.readouterr().err


def test_a_forked_child_leaves_the_parents_resources_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a segmenter opened in the parent holds is the parent's: a child that drops its copy frees nothing."""
    released: list[bool] = []
    owner = Owner()
    release_when_dropped(owner, lambda: released.append(True), "an owner")
    parent = os.getpid()
    monkeypatch.setattr(dropped.os, "getpid", lambda: parent + 1)
    del owner
    monkeypatch.undo()
    assert wait_for_releases(10)
    assert released == []


def test_waiting_with_nothing_handed_over_returns_at_once() -> None:
    assert wait_for_releases(0.5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_releases_what_it_opened_itself() -> None:
    """fork() copies only the forking thread: the child has no release thread, and the parent's one is a dead
    Thread object there (Python documentation, os.fork). What the child opens and drops (a worker process's own
    segmenter) must still be released: the release thread is started afresh in the child."""
    parent_owner = Owner()
    release_when_dropped(parent_owner, lambda: None, "the parent's owner")  # the parent's release thread runs
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only, never return into pytest
        code = 1
        try:
            released: list[bool] = []
            owner = Owner()
            release_when_dropped(owner, lambda: released.append(True), "the child's owner")
            del owner
            code = 0 if wait_for_releases(5) and released == [True] else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (finished := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if finished[0] == 0:  # a child stuck (a lock another thread held at the fork) fails the test, never hangs it
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish within 60 s")
    assert os.waitstatus_to_exitcode(finished[1]) == 0
    del parent_owner
    assert wait_for_releases(10)


# A process that keeps one owner to its end and drops another whose release is slow, as freeing a GPU's memory
# may be; it prints what wait_for_releases says before anything was handed over, and each release that runs.
AT_EXIT = """
import time
from unetrt.dropped import release_when_dropped, wait_for_releases

class Owner:
    pass

print("nothing handed over:", wait_for_releases(0), flush=True)

def slow() -> None:
    time.sleep(0.5)
    print("the dropped one is released", flush=True)

kept, dropped = Owner(), Owner()
release_when_dropped(kept, lambda: print("the kept one is released", flush=True), "the kept one")
release_when_dropped(dropped, slow, "the dropped one")
del dropped
"""


def test_at_exit_a_handed_over_release_is_finished_and_a_kept_owner_is_left_to_the_process_end() -> None:
    """The exit waits (up to EXIT_WAIT_S) for the releases already queued; what is still owned at exit is freed
    by the process's end, never by a release that would run against libraries already torn down."""
    ran = subprocess.run([sys.executable, "-c", AT_EXIT], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["nothing handed over: True", "the dropped one is released"]
