"""Warnings that point at the line of the caller's code that called into unetrt, not at unetrt's own lines."""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# Every module of the package, unetrt.export and unetrt.benchmarks included, lies under this folder in every
# install (wheel, editable, the source tree's build).
_PACKAGE_FOLDER = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Per thread: the frame that warnings name on a thread unetrt runs a call's work on (working_for).
_worked_for = threading.local()


def warn_caller(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """Warn as ``warnings.warn`` does, at the nearest frame outside unetrt.

    A fixed ``stacklevel`` names the caller only from one depth: the same warning reached through
    ``Segmenter``, a backend opened by hand or a stream's worker named a line of unetrt's instead, the user's own
    line went unnamed, and the default filter (once per location) showed it once a process, whoever called.
    On a thread that runs a call's work (:func:`working_for`: a TensorRT build) the frame named is that call's
    caller's; in another thread unetrt started (a stream's worker), where no frame is the caller's, its outermost
    one is named.

    Args:
        message: the warning's text.
        category: its class.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_caller("running on the CPU")
        >>> str(caught[0].message), caught[0].category.__name__
        ('running on the CPU', 'RuntimeWarning')
    """
    frame = _caller(sys._getframe(1))
    # What warnings.warn does with the frame its stacklevel finds, which can only be one of this thread's.
    module_globals = frame.f_globals
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=module_globals.get("__name__", "<string>"),
                           registry=module_globals.setdefault("__warningregistry__", {}),
                           module_globals=module_globals)


def caller_frame() -> FrameType:
    """The frame a warning raised here would name, to hand to the thread that does the work of this call.

    Returns:
        The nearest frame outside unetrt from the function that asks out (as :func:`warn_caller` finds it).

    Example:
        >>> caller_frame().f_code.co_name  # doctest: +SKIP
        'main'
    """
    return _caller(sys._getframe(1))


@contextmanager
def working_for(caller: FrameType) -> Iterator[None]:
    """Within the block, this thread's warnings (:func:`warn_caller`) name ``caller``: the thread runs the work of a
    call that waits for it, and that call's own thread holds the frames of the code that made it.

    Args:
        caller: what :func:`caller_frame` gave on the calling thread.

    Example:
        >>> with working_for(caller_frame()):  # on the worker thread  # doctest: +SKIP
        ...     work()
    """
    _worked_for.frame = caller
    try:
        yield
    finally:
        del _worked_for.frame  # the frame is the caller's to free once its call returns


def _caller(frame: FrameType) -> FrameType:
    inner = frame
    while os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_FOLDER):
        if frame.f_back is None:
            return frame
        inner, frame = frame, frame.f_back
    if frame.f_code.co_filename == threading.__file__ and inner is not frame:
        # A thread unetrt started: the caller of the call it works for, else its own outermost frame.
        return getattr(_worked_for, "frame", inner)
    return frame
