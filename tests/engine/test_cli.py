"""The helpers every command shares: exit codes and SIGTERM turned into a clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import pytest

from unetrt.cli import TERMINATED, StopOnSigterm, TerminatedError, raise_terminated, run_cli


def _raise(error: BaseException) -> None:
    raise error


def test_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(lambda: None) == 0
    assert run_cli(lambda: _raise(ValueError("bad\n  input"))) == 2
    assert capsys.readouterr().err == "error: bad input\n"
    assert run_cli(lambda: _raise(KeyboardInterrupt())) == 130
    assert run_cli(lambda: _raise(TerminatedError())) == TERMINATED == 143
    assert capsys.readouterr().err == "interrupted\nterminated\n"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM handlers are POSIX")
def test_sigterm_calls_stop_once_set_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    calls: list[str] = []
    with StopOnSigterm() as sigterm:
        os.kill(os.getpid(), signal.SIGTERM)  # before the work exists: remembered
        assert sigterm.received and calls == []
        sigterm.stop = lambda: calls.append("stop")  # called at once
        os.kill(os.getpid(), signal.SIGTERM)
    assert calls == ["stop", "stop"]
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM handlers are POSIX")
def test_sigterm_passes_through_a_library_that_catches_exception() -> None:
    dropped: list[BaseException] = []
    with pytest.raises(TerminatedError), StopOnSigterm() as sigterm:
        sigterm.stop = raise_terminated
        try:  # as Ray's metrics update does: log any Exception and go on
            os.kill(os.getpid(), signal.SIGTERM)
        except Exception as exc:
            dropped.append(exc)
    assert dropped == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM handlers are POSIX")
def test_raise_if_received_stops_work_whose_raise_was_swallowed() -> None:
    with StopOnSigterm() as sigterm:
        sigterm.raise_if_received()  # nothing came
        sigterm.stop = raise_terminated
        with contextlib.suppress(BaseException):  # a library that drops even KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(TerminatedError):
            sigterm.raise_if_received()
