"""What every unetrt command shares: argument types and turning errors into one line and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType

USAGE_ERROR = 2
# What a shell reports for a process ended by SIGTERM (128 + 15): a command that stops cleanly on SIGTERM
# still exits with it, so a supervisor can tell "stopped" from "finished" (as 130 tells Ctrl-C).
TERMINATED = 128 + signal.SIGTERM

# Errors that mean "the user asked for something that cannot be done": they are
# reported as one line without a traceback. Anything else is a bug and propagates.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError,
                                                PermissionError, ImportError)

# How to get a module that a command imports and a plain `pip install unetrt` leaves out. torch first, by hand:
# the export extra never pulls it on Linux, where PyPI's torch is a CUDA build of several GB.
INSTALL_TORCH = ("install the PyTorch build you want first (the CPU build: pip install torch==2.13.0+cpu "
                 "--extra-index-url https://download.pytorch.org/whl/cpu), then pip install 'unetrt[export]'")
INSTALL_EXPORT = "pip install 'unetrt[export]'"


def install_hint(module: str) -> str:
    """How to install ``module``, an optional dependency of the commands: torch by hand, the rest (onnx, scipy,
    matplotlib, ...) with the export extra.

    Example:
        >>> install_hint("matplotlib.pyplot")
        "pip install 'unetrt[export]'"
    """
    return INSTALL_TORCH if module.split(".")[0] == "torch" else INSTALL_EXPORT


def _one_line(exc: BaseException) -> str:
    """The user's line for an error: library errors can span lines (torch, onnxruntime); an optional module that
    a command imports only where it needs it (matplotlib for a figure) is named with its install line."""
    message = " ".join(str(exc).split())
    # Only a package that is not there at all: a part of unetrt or of an installed package missing is a broken
    # install, whose plain message stays.
    if (isinstance(exc, ModuleNotFoundError) and exc.name and "." not in exc.name and exc.name != "unetrt"
            and message == f"No module named {exc.name!r}"):
        return f"the Python module {exc.name!r} is not installed: {install_hint(exc.name)}"
    return message


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option with its default, except where there is none to state.

    Flags (``--fp16``, ``--no-overlay-stats``: what they do is the help; a "(default: True)" after
    "do not draw ..." would read wrong), options without a default (None) and help texts that already say
    "(default: ...)" in words are left as written.

    Example:
        >>> parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        # --batch-norm/--no-batch-norm names both states, so its default reads right; --no-build does not.
        is_flag = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        # Identity, not ==: a default of 0 (--seed, --loop) equals False and must still be shown.
        no_default = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if is_flag or no_default or "(default" in text or "%(default)" in text:
            return text
        return super()._get_help_string(action)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``256x192``) into ``(width, height)`` for argparse.

    Raises:
        argparse.ArgumentTypeError: when the text is not two positive integers joined by 'x'.

    Example:
        >>> parse_size("480x360")
        (480, 360)
    """
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"size must be WIDTHxHEIGHT with positive integers, e.g. 480x360, got {text!r}"
        )
    return int(parts[0]), int(parts[1])


def format_size(size: tuple[int, int]) -> str:
    """``(width, height)`` as ``WxH``, the text :func:`parse_size` reads.

    Example:
        >>> format_size((480, 360))
        '480x360'
    """
    return f"{size[0]}x{size[1]}"


# NumPy's legacy seeding (np.random.seed) takes no more; torch.manual_seed and np.random.default_rng take all of it.
MAX_SEED = 2**32 - 1


def parse_seed(text: str) -> int:
    """A random seed for argparse: an integer from 0 to :data:`MAX_SEED`, which every generator a command seeds
    accepts.

    Raises:
        argparse.ArgumentTypeError: otherwise.

    Example:
        >>> parse_seed("42")
        42
    """
    digits = text.strip()
    # The length test before int(), which refuses thousands of digits with a ValueError of its own.
    valid = digits.isascii() and digits.isdigit() and len(digits.lstrip("0")) <= len(str(MAX_SEED))
    if not valid or int(digits) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be an integer from 0 to {MAX_SEED} (2**32 - 1), got {text!r}")
    return int(digits)


def print_out(text: str) -> None:
    """Print a command's report on stdout; a reader that left early (``--stats | head -1``) only ends the report.

    Printing to a closed pipe raised BrokenPipeError's traceback before the command wrote its files: the
    ``--stats`` or figures file of a finished run was lost. Stdout then goes to /dev/null, so that later prints
    and Python's flush at exit do not fail again, and the command goes on.

    Example:
        >>> print_out("figures")
        figures
    """
    try:
        print(text, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):  # stdout without a descriptor (replaced in tests)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


class TerminatedError(BaseException):
    """A command stopped early on SIGTERM after finishing its output; :func:`run_cli` exits with 143.

    A :class:`BaseException`, as KeyboardInterrupt is: raised from the signal handler wherever the main thread
    stands, it must pass through libraries' ``except Exception`` (Ray's metrics update logs and drops any Exception,
    and a job that should stop ran on to its end).
    """


def raise_terminated() -> None:
    """Raise :class:`TerminatedError`: the ``stop`` of a :class:`StopOnSigterm` whose work has no stop of its own.

    From the signal handler it interrupts the main thread as Ctrl-C's KeyboardInterrupt does: opening a model
    (a first-run TensorRT build takes minutes on a Jetson, stopped at its next step) ends at once.

    Raises:
        TerminatedError: always.
    """
    raise TerminatedError


class StopOnSigterm:
    """While active, SIGTERM asks the work to stop (through ``stop``) instead of killing the process.

    ``docker stop``, systemd and ``kill`` send SIGTERM; the default action ends the process at
    once, leaving a half-written video without its index. Inside this context the signal only
    calls ``stop`` (set it once the work exists; a signal that came earlier calls it then) and
    records that it came. Outside the main thread, where Python cannot install handlers, it does nothing.

    Example:
        >>> with StopOnSigterm() as sigterm:  # doctest: +SKIP
        ...     sigterm.stop = raise_terminated  # while the stream opens its model
        ...     stream = Stream("camera", "camvid")
        ...     sigterm.stop = stream.stop
        ...     run(stream)
        >>> sigterm.raise_if_received()  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.received = False
        self._stop: Callable[[], object] | None = None
        self._previous: object = None
        self._installed = False

    @property
    def stop(self) -> Callable[[], object] | None:
        """What the signal calls; setting it after a signal arrived calls it at once."""
        return self._stop

    @stop.setter
    def stop(self, stop: Callable[[], object] | None) -> None:
        self._stop = stop
        if self.received and stop is not None:
            stop()

    def raise_if_received(self) -> None:
        """Raise :class:`TerminatedError` if SIGTERM came: the check between steps of work whose ``stop`` raises,
        for a signal that arrived inside code that caught what ``stop`` raised.

        Raises:
            TerminatedError: when SIGTERM came while this context was active.
        """
        if self.received:
            raise TerminatedError

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if self._stop is not None:
            self._stop()

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)  # type: ignore[arg-type]
            self._installed = False


def fill_closed_standard_streams() -> None:
    """Put /dev/null where stdin, stdout or stderr was closed (``2>&-``, a supervisor that closes them).

    With stderr closed, tqdm's progress bar wrote to ``sys.stderr`` = None and the command ended at its first frame
    with exit code 1 and not a line; and the next file opened takes descriptor 2 (the output video), where native
    libraries' log lines would land. Filled in ascending order, each ``os.open`` takes the lowest free number: the
    closed one.
    """
    for descriptor, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(descriptor)
        except OSError:
            opened = os.open(os.devnull, os.O_RDONLY if descriptor == 0 else os.O_WRONLY)
            if opened != descriptor:
                os.dup2(opened, descriptor)
                os.close(opened)
            if getattr(sys, name) is None:
                setattr(sys, name, open(descriptor, "r" if descriptor == 0 else "w", closefd=False))  # noqa: SIM115


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    """A warning as a command prints it: one line, as its errors are (``warnings.formatwarning``'s signature)."""
    return "warning: " + " ".join(str(message).split()) + "\n"


@contextlib.contextmanager
def _warnings_in_one_line() -> Iterator[None]:
    """Warnings shown during the block (any thread's) print as ``warning: MESSAGE``.

    Python's own format is the file and line that warned and that line's source, two lines of unetrt's internals
    that read like a traceback before the command's own output. Only the formatting is replaced: which warnings
    show is still the filters' choice, and ``catch_warnings(record=True)`` (pytest's capture) still records them.
    """
    previous = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        yield
    finally:
        warnings.formatwarning = previous


def run_cli(action: Callable[[], object]) -> int:
    """Run a command's work; report user errors as one line on stderr with exit code 2.

    Warnings print as one line each, ``warning: MESSAGE``.

    Returns:
        0 on success, 2 on a user error (one of ``USER_ERRORS``, or a file name longer than the file system
        takes), 130 on Ctrl-C, 143 when the work stopped on SIGTERM (it raised :class:`TerminatedError` after
        finishing its output).
    """
    fill_closed_standard_streams()
    try:
        with _warnings_in_one_line():
            action()
    except USER_ERRORS as exc:
        interruption = _interruption_behind(exc)
        if interruption is not None:
            return _interrupted(interruption)
        print("error: " + _one_line(exc), file=sys.stderr)
        return USAGE_ERROR
    except OSError as exc:
        # A name given on the command line that the checks before the work did not catch; any other OSError is
        # a bug or a failure of the machine, and keeps its traceback.
        if exc.errno != errno.ENAMETOOLONG:
            raise
        name = "" if exc.filename is None else f" ({str(exc.filename)[:60]!r}...)"
        print(f"error: a file name{name} is longer than this file system takes; use a shorter one", file=sys.stderr)
        return USAGE_ERROR
    except (KeyboardInterrupt, TerminatedError) as exc:
        return _interrupted(exc)
    return 0


def _interruption_behind(exc: BaseException) -> KeyboardInterrupt | TerminatedError | None:
    """The Ctrl-C or SIGTERM an error was raised from: a native module whose import it interrupted (pybind11)
    reports it as ``ImportError("initialization failed")`` raised from it."""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (KeyboardInterrupt, TerminatedError)):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _interrupted(exc: KeyboardInterrupt | TerminatedError) -> int:
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 130
    print("terminated", file=sys.stderr)
    return TERMINATED
