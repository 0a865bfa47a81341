"""Warnings that point at the line of the caller's code that called into unetrt, not at unetrt's own lines."""

from __future__ import annotations

import os
import sys
import threading
import warnings

# Every module of the package, unetrt.export and unetrt.benchmarks included, lies under this folder in every
# install (wheel, editable, the source tree's build).
_PACKAGE_FOLDER = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_caller(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """Warn as ``warnings.warn`` does, at the nearest frame outside unetrt.

    A fixed ``stacklevel`` names the caller only from one depth: the same warning reached through
    ``Segmenter``, a backend opened by hand or a stream's worker named a line of unetrt's instead, the user's own
    line went unnamed, and the default filter (once per location) showed it once a process, whoever called.
    In a thread unetrt started (a stream's worker), where no frame is the caller's, its outermost one is named.

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
    frame = sys._getframe(1)
    level = 2  # warnings.warn's count: 1 is this function, 2 the frame above
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_FOLDER):
        frame = frame.f_back
        level += 1
    if frame.f_code.co_filename == threading.__file__ and level > 2:
        level -= 1  # a thread unetrt started: its own outermost frame, not threading's start
    warnings.warn(message, category, stacklevel=level)
