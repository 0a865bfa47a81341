"""Who else is told how this process's TensorRT engine builds go: the live view's page during a first run; and
who may stop a build before it begins: a stream whose source can never open.

The engine cache's lines (``unetrt: building a TensorRT engine for camvid FP16 ...``) and TensorRT's per-phase
steps go to stderr, where a user looking at ``http://JETSON:8080`` in a browser sees neither for the minutes a
first build takes on a Jetson. A stream serving the live view watches them while its model opens (see
:func:`watching_builds`) and shows them on the page: the builds its own thread begins, or waits for, not those of
another stream of the process. A stream opening its source meanwhile checks it before a build
begins (see :func:`checking_before_builds`): a camera that is not connected was found minutes later, once the
engine was built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


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


_Item = TypeVar("_Item")


class _PerThread(threading.local, Generic[_Item]):
    """What each thread's blocks of one kind hold, innermost last: a thread sees its own only."""

    def __init__(self) -> None:
        self.items: list[_Item] = []

    @contextmanager
    def holding(self, item: _Item) -> Iterator[None]:
        self.items.append(item)
        try:
            yield
        finally:
            self.items.remove(item)


_watchers: _PerThread[BuildWatcher] = _PerThread()  # watching_builds
_checks: _PerThread[Callable[[], None]] = _PerThread()  # checking_before_builds


@contextmanager
def watching_builds(watcher: BuildWatcher) -> Iterator[None]:
    """Tell ``watcher`` about the engine builds that this thread begins, or waits for, while inside.

    Only this thread's: several streams open their models on their own threads, and each live view's page shows
    its own stream's build (another stream's build of the same engine is one line there: the wait for it). A build's
    steps come from TensorRT's threads, which tell the watchers the build took when it began (:func:`build_watchers`).

    Example:
        >>> with watching_builds(page):  # doctest: +SKIP
        ...     segmenter = Segmenter("camvid")
    """
    with _watchers.holding(watcher):
        yield


def build_watchers() -> tuple[BuildWatcher, ...]:
    """This thread's watchers, taken by a build as it begins: its steps come from TensorRT's builder threads, which
    have none of their own (pass them to :func:`tell_step`).

    Returns:
        The watchers of this thread's :func:`watching_builds` blocks, innermost last (empty outside them).

    Example:
        >>> build_watchers()
        ()
    """
    return tuple(_watchers.items)


def tell_note(text: str) -> None:
    """Hand a line the engine cache printed to this thread's watchers."""
    for watcher in build_watchers():
        watcher.build_note(text)


def tell_step(step: BuildStep, watchers: Sequence[BuildWatcher] | None = None) -> None:
    """Hand a build's progress to ``watchers``.

    Args:
        step: where the build stands.
        watchers: those :func:`build_watchers` gave on the thread that began the build (None: this thread's).

    Example:
        >>> tell_step(BuildStep("Tactic selection", 412, 1030, 90.0), build_watchers())
    """
    for watcher in build_watchers() if watchers is None else watchers:
        watcher.build_step(step)


@contextmanager
def checking_before_builds(check: Callable[[], None]) -> Iterator[None]:
    """Call ``check`` before each engine build (or wait for another's build) that this thread begins while inside;
    what it raises ends the start there, with nothing built.

    Only this thread's builds: several streams open their models on their own threads, and one stream's camera
    must not stop another's build.

    Example:
        >>> with checking_before_builds(source_can_open):  # doctest: +SKIP
        ...     segmenter = Segmenter("camvid")
    """
    with _checks.holding(check):
        yield


def check_before_build() -> None:
    """Run this thread's checks (:func:`checking_before_builds`): the engine cache calls it before a build begins.

    Raises:
        Exception: what a check raises (a stream's ``SourceError``).

    Example:
        >>> check_before_build()  # outside checking_before_builds: no check to run
    """
    for check in list(_checks.items):
        check()
