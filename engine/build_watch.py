"""Who else is told how this process's TensorRT engine builds go: the live view's page during a first run.

The engine cache's lines (``unetrt: building a TensorRT engine for camvid FP16 ...``) and TensorRT's per-phase
steps go to stderr, where a user looking at ``http://JETSON:8080`` in a browser sees neither for the minutes a
first build takes on a Jetson. A stream serving the live view watches them while its model opens (see
:func:`watching_builds`) and shows them on the page.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BuildStep:
    """Where a build stands: a step of one of TensorRT's phases (IProgressMonitor).

    Attributes:
        phase: the phase's name ('Tactic selection').
        done: its steps completed.
        steps: its steps in all.
        elapsed_s: seconds since the build began.
    """

    phase: str
    done: int
    steps: int
    elapsed_s: float


class BuildWatcher(Protocol):
    """What :func:`watching_builds` hands the news to."""

    def build_note(self, text: str) -> None:
        """A line the engine cache, or the fallback after a failed build, printed on stderr (without ``unetrt:``)."""

    def build_step(self, step: BuildStep) -> None:
        """A phase began (``done`` 0) or a step of it completed; called from TensorRT's builder threads."""


_watchers: list[BuildWatcher] = []
_lock = threading.Lock()


@contextmanager
def watching_builds(watcher: BuildWatcher) -> Iterator[None]:
    """Tell ``watcher`` about every engine build of this process (any thread) while inside.

    Example:
        >>> with watching_builds(page):  # doctest: +SKIP
        ...     segmenter = Segmenter("camvid")
    """
    with _lock:
        _watchers.append(watcher)
    try:
        yield
    finally:
        with _lock:
            _watchers.remove(watcher)


def tell_note(text: str) -> None:
    """Hand a line the engine cache printed to the watchers."""
    with _lock:
        watchers = list(_watchers)
    for watcher in watchers:
        watcher.build_note(text)


def tell_step(step: BuildStep) -> None:
    """Hand a build's progress to the watchers."""
    with _lock:
        watchers = list(_watchers)
    for watcher in watchers:
        watcher.build_step(step)
