"""The helpers every command shares: exit codes and SIGTERM turned into a clean stop."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import subprocess
import sys

import pytest

from unetrt.cli import (
    INSTALL_EXPORT,
    INSTALL_TORCH,
    MAX_SEED,
    TERMINATED,
    StopOnSigterm,
    TerminatedError,
    install_hint,
    parse_seed,
    parse_size,
    raise_terminated,
    run_cli,
)


def _raise(error: BaseException) -> None:
    raise error


def test_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(lambda: None) == 0
    assert run_cli(lambda: _raise(ValueError("bad\n  input"))) == 2
    assert capsys.readouterr().err == "error: bad input\n"
    assert run_cli(lambda: _raise(KeyboardInterrupt())) == 130
    assert run_cli(lambda: _raise(TerminatedError())) == TERMINATED == 143
    assert capsys.readouterr().err == "interrupted\nterminated\n"


def test_a_warning_during_a_command_is_one_line_on_stderr() -> None:
    """A warning a command met (ONNX Runtime on the CPU, INT8 weights left unfused, a timing cache rebuilt) printed
    as Python shows it: the path and line of the unetrt module that warned, then that line's source, as a traceback
    would, before the command's own output. It is one line, as an error is; Python's format is back afterwards.
    A process of its own: pytest records the warnings of its tests rather than printing them."""
    script = ("import threading, warnings\n"
              "from unetrt.cli import run_cli\n"
              "def work():\n"
              "    warnings.warn('the first\\n  of two', RuntimeWarning)\n"
              "    worker = threading.Thread(target=warnings.warn, args=('from a worker', UserWarning))\n"
              "    worker.start()\n"
              "    worker.join()\n"
              "print(run_cli(work))\n"
              "warnings.warn('after the command', RuntimeWarning)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout == "0\n"
    lines = done.stderr.splitlines()
    assert lines[:2] == ["warning: the first of two", "warning: from a worker"], done.stderr
    assert lines[2].endswith("RuntimeWarning: after the command"), done.stderr


def _native_import_interrupted_by(interruption: BaseException) -> None:
    # What pybind11's module init does with an exception raised while it runs (here the signal handler's): it
    # raises ImportError("initialization failed") from it.
    try:
        raise interruption
    except BaseException as exc:
        raise ImportError("initialization failed") from exc


def test_ctrl_c_or_sigterm_during_a_native_import_exits_as_themselves(capsys: pytest.CaptureFixture[str]) -> None:
    # A SIGTERM that landed while unetrt._tiling was being imported printed "error: initialization failed", exit 2.
    assert run_cli(lambda: _native_import_interrupted_by(TerminatedError())) == TERMINATED
    assert run_cli(lambda: _native_import_interrupted_by(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "terminated\ninterrupted\n"
    # Any other cause keeps the error's own line.
    assert run_cli(lambda: _native_import_interrupted_by(RuntimeError("bad module"))) == 2
    assert capsys.readouterr().err == "error: initialization failed\n"


def test_an_optional_module_missing_where_a_command_needs_it_names_its_install(
        capsys: pytest.CaptureFixture[str]) -> None:
    # unet-weights on the wheel without the export extra said "error: No module named 'matplotlib'" and stopped
    # (it imports matplotlib where it draws; the error is Python's for a module that is not installed).
    assert run_cli(lambda: _raise(ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"))) == 2
    assert capsys.readouterr().err == ("error: the Python module 'matplotlib' is not installed: "
                                       "pip install 'unetrt[export]'\n")
    # torch is never the extra's on Linux: its own install line. A part of unetrt or of an installed package missing
    # is a broken install, whose plain message stays, as does an ImportError that says more than the module's name.
    assert run_cli(lambda: _raise(ModuleNotFoundError("No module named 'torch'", name="torch"))) == 2
    assert "pip install torch==2.13.0+cpu --extra-index-url https://download.pytorch.org/whl/cpu" in (
        capsys.readouterr().err)
    assert run_cli(lambda: _raise(ModuleNotFoundError("No module named 'unetrt._tiling'", name="unetrt._tiling"))) == 2
    assert run_cli(lambda: _raise(ModuleNotFoundError("No module named 'cv2.data'", name="cv2.data"))) == 2
    assert run_cli(lambda: _raise(ModuleNotFoundError("scipy needs numpy>=2", name="scipy"))) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: No module named 'unetrt._tiling'", "error: No module named 'cv2.data'", "error: scipy needs numpy>=2"]


def test_a_part_of_torch_is_named_with_torchs_install_line() -> None:
    # ImportError.name can be a submodule (torch.nn, matplotlib.pyplot): the package decides the line, and the
    # export extra brings no torch on Linux.
    assert install_hint("torch.nn") == install_hint("torch") == INSTALL_TORCH
    assert install_hint("matplotlib.pyplot") == install_hint("onnx") == INSTALL_EXPORT


def test_a_file_name_too_long_is_a_user_error_and_other_os_errors_are_bugs(
        capsys: pytest.CaptureFixture[str]) -> None:
    # A name no check before the work caught was a traceback: OSError: [Errno 36] File name too long.
    long = "a" * 300 + ".json"
    assert run_cli(lambda: _raise(OSError(errno.ENAMETOOLONG, "File name too long", long))) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: a file name ('{'a' * 60}'...) is longer than this file system takes; use a shorter one"]
    with pytest.raises(OSError, match="Input/output error"):
        run_cli(lambda: _raise(OSError(errno.EIO, "Input/output error")))


def test_a_seed_is_what_every_generator_takes() -> None:
    assert (parse_seed("0"), parse_seed(" 42 "), parse_seed(str(MAX_SEED))) == (0, 42, 2**32 - 1)


@pytest.mark.parametrize("text", ["-1", str(2**32), "99999999999999999999", "9" * 5000, "1.5", "x", "", "\u00b2"])
def test_a_seed_no_generator_takes_is_refused_in_one_line(text: str) -> None:
    # -1 and 2**32 were refused by np.random.seed after the work had begun, 99999999999999999999 by torch
    # ("Overflow when unpacking long long"); 5000 digits are past what int() reads at all.
    with pytest.raises(argparse.ArgumentTypeError, match=r"seed must be an integer from 0 to 4294967295 \(2\*\*32"):
        parse_seed(text)


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


@pytest.mark.parametrize("text", ["1x2x3", "480", "0x360", "480x", "480x-1", "x"])
def test_a_size_that_is_not_two_positive_integers_is_refused(text: str) -> None:
    # 1x2x3 was read as 1x2: a mistyped size ran at another size than asked.
    with pytest.raises(argparse.ArgumentTypeError, match=f"size must be WIDTHxHEIGHT .* got {text!r}"):
        parse_size(text)
