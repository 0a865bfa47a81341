"""Opening a stream's source while its model opens, so that a source that cannot open is known in seconds.

A Jetson's first ``unet-stream csi://0 ...`` builds a TensorRT engine for minutes before the model is open; the
camera was opened only after that, so a loose cable, a wrong sensor id, a camera held by another program, a stream
that does not answer or a damaged file was reported minutes into the run. :class:`EarlyOpen` opens the source on a
thread of its own from the moment the model begins to open, under the stream's own retry policy (``wait``,
``max_reconnects``); before a build begins, the engine cache asks it (:meth:`EarlyOpen.before_build`, through
:func:`unetrt.build_watch.checking_before_builds`) whether the source can open:

- a source that failed for good (a file that does not open; a live one the policy has given up on: ``wait=0``) ends
  the start there, with its own error, and nothing is built;
- a live source that is merely not up yet (the default policy waits for ever) does not stop the build: its retries
  go on beside it, each said in a line (and on the live view's page), and one that the policy then gives up on is
  said at once; the build is finished and cached (the next start needs the engine anyway) and the source is tried
  once more after it, so that a cable fixed during the build, or a camera that came up late, still streams;
- a live source that opened is closed again for the build's minutes (an Argus session, a network stream left unread,
  a camera's driver filling its buffers with frames that would be stale), and the stream opens it again after it.

Without a build (a cached engine, a CPU model) the source opened here is the stream's: a file is opened, never read,
and starts at its first frame; a live source's first frame, read to tell a camera that opens but sends nothing (a
CSI sensor whose Argus session fails) from one that works, is dropped, and so is every frame after it until the
stream starts, as a live stream drops stale frames: a camera left unread while the model loads (seconds: a TensorRT
engine deserialising on a Jetson, OpenVINO compiling) keeps the frames captured just after that read in its driver's
queue (V4L2's buffers, a network stream's socket), and the stream's first results were of frames that old.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from .capture import POLL_S, open_when_up
from .options import StreamOptions
from .sources import RELEASE_WAIT_S, CorruptFrameError, FrameSource, SourceError, VideoCaptureSource, give_up_on

log = logging.getLogger(__name__)

# How long a build waits for the source's first attempt when the stream has no open timeout: FFmpeg's default open
# timeout, the one a network stream's attempt ends at then.
FIRST_ANSWER_WAIT_S = 30.0


class _FirstFrame:
    """A live source whose open counts as done once it has delivered a frame: a CSI camera whose Argus session
    fails opens, and ends at its first read."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.name = source.name
        self.live = source.live
        self.fps = source.fps

    def open(self) -> None:
        """Open the source and read one frame (dropped).

        Raises:
            SourceError: when it does not open or sends no frame (it is closed again).
        """
        self.source.open()
        try:
            frame: np.ndarray | None = self.source.read()
        except SourceError:
            self.source.close()
            raise
        if frame is None:
            self.source.close()
            raise SourceError(f"{self.name!r} opened but sent no frame")

    def read(self) -> np.ndarray | None:
        """The source's next frame."""
        return self.source.read()

    def close(self) -> None:
        """Close the source."""
        self.source.close()


def opens_early(source: FrameSource) -> bool:
    """Whether a stream opens ``source`` while its model opens: unetrt's own cameras, streams and videos.

    Image folders were listed when the stream was made, and a Python iterable or a caller's source may be one that
    can be read once only.

    Example:
        >>> from unetrt.stream.sources import IterableSource
        >>> opens_early(IterableSource([]))
        False
    """
    return isinstance(source, VideoCaptureSource)


class EarlyOpen:
    """Opens a stream's source on a thread of its own, as :meth:`unetrt.stream.Stream.start` would, while the model
    opens on the caller's.

    Args:
        source: the stream's source (see :func:`opens_early`), not open yet.
        options: the stream's settings: ``wait``, ``max_reconnects`` and ``reconnect_delay`` decide when a live
            source that does not open has failed for good.
        tell: told the retry lines, and a failure for good during a build (the live view's page shows them).

    Example:
        >>> early = EarlyOpen(source, options)  # doctest: +SKIP
        >>> with checking_before_builds(early.before_build):  # doctest: +SKIP
        ...     segmenter = Segmenter("camvid")
        >>> held = early.result(stop)  # doctest: +SKIP
    """

    def __init__(self, source: FrameSource, options: StreamOptions,
                 tell: Callable[[str], None] | None = None) -> None:
        self.source = source
        self._options = options
        self._tell = tell
        self._stop = threading.Event()
        # Set once the first attempt has answered: opened, failed for good, or to be retried.
        self._answered = threading.Event()
        self._lock = threading.Lock()
        self._building = False
        self._abandoned = False
        self._held = False
        self._retried = False
        # Failed for good while a build went on: tried once more once the model is open.
        self._failed_while_building = False
        # Set when the thread is to stop reading an open live source: the stream takes it, a build begins, or the
        # opening is abandoned.
        self._release = threading.Event()
        self._error: BaseException | None = None
        self._began = threading.Event()  # the thread's first step: from then on it can be joined
        self._thread = threading.Thread(target=self._run, name="unetrt-early-open", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            # Ctrl-C or SIGTERM as the thread starts (the stream being made): it may be opening the source already,
            # and no one holds this opening to end it; the camera stayed open, its frames read, until the exit.
            self.abandon()
            raise

    def _run(self) -> None:
        self._began.set()
        options = self._options
        opened = False
        try:
            if self.source.live:
                opened = open_when_up(_FirstFrame(self.source), self._stop, options.reconnect_delay,
                                      options.max_reconnects, options.wait, self._retrying)
            else:
                self.source.open()
                opened = True
        except BaseException as exc:  # handed to the stream's thread, which raises it
            with self._lock:
                self._error = exc
                building = self._failed_while_building = self._building
            if building:
                # The stream's thread is inside the build and hears of it only after: the user hears of it now, and
                # may fix the cable during the build.
                line = (f"{exc}; the model goes on opening (a TensorRT engine being built is cached for the next "
                        f"start; Ctrl-C stops it), then {self.source.name} is tried once more")
                log.error("%s", line)
                if self._tell is not None:
                    self._tell(line)
        finally:
            self._answered.set()
        if opened and self._retried and self._tell is not None:
            self._tell(f"{self.source.name} is up")  # the page said it was not
        if not opened:
            return
        with self._lock:
            if self._abandoned or (self._building and not self._kept_during_builds()):
                self.source.close()
                return
            self._held = True
        if self.source.live:
            self._drain()

    def _drain(self) -> None:
        """Read and drop the open live source's frames until :attr:`_release` is set, then keep it for the stream, or
        close it for a build or an abandoned opening; one that fails meanwhile is closed, and the stream opens it
        again under its retry policy."""
        failure: BaseException | None = None
        while not self._release.is_set():
            try:
                if self.source.read() is None:
                    failure = SourceError(f"{self.source.name!r} stopped delivering frames")
            except CorruptFrameError:
                continue  # dropped, as the good ones are
            except SourceError as exc:
                failure = exc
            if failure is not None:
                break
        with self._lock:
            if failure is not None or self._abandoned or self._building:
                self.source.close()
                self._held = False
        if failure is not None:
            log.warning("%s failed while the model opened (%s); it is opened again when the stream starts",
                        self.source.name, failure)

    def _retrying(self, line: str) -> None:
        self._answered.set()  # not up yet, and to be retried: no reason to hold a build back
        self._retried = True
        if self._tell is not None:
            self._tell(line)

    def _kept_during_builds(self) -> bool:
        """A file on this machine stays open through a build: open, it holds nothing another program needs, and
        a network stream or a camera left unread for minutes would go stale or drop the connection."""
        spec = getattr(self.source, "spec", None)
        return not self.source.live and spec is not None and spec.kind == "video"

    def before_build(self) -> None:
        """Called on the model's thread before a build (or a wait for another's) begins: waits for the source's first
        attempt to answer (at most the stream's open timeout, else ``FIRST_ANSWER_WAIT_S``), then lets a source that
        is open go for the build's minutes.

        An attempt that has not answered by then (a CSI open blocked in a wedged nvargus-daemon, which no timeout of
        OpenCV's bounds) goes on beside the build, as a source not up yet does: the build is not held back for it.

        Raises:
            SourceError: the source's own error, when it failed for good (nothing is built then).
            BaseException: what interrupted the wait (Ctrl-C, SIGTERM's TerminatedError).
        """
        limit = self._options.open_timeout or FIRST_ANSWER_WAIT_S
        deadline = time.monotonic() + limit
        while not self._answered.wait(POLL_S):
            if time.monotonic() >= deadline:
                line = (f"{self.source.name} has not answered after {limit:g} s (--open-timeout); the model goes on "
                        "opening, and so does the source beside it")
                log.warning("%s", line)
                if self._tell is not None:
                    self._tell(line)
                self._answered.set()  # a later build of the same start does not wait for it again
        with self._lock:
            if self._error is not None:
                raise self._error
            self._building = True
            let_go = self._held and not self._kept_during_builds()
            if let_go and not self.source.live:
                # No thread reads a stored source once it is open (a recording over HTTP): let go here.
                self.source.close()
                self._held = False
            reading = let_go and self.source.live
        if reading:
            # The thread reading it closes it: a capture is not closed under a read in progress.
            self._release.set()
            while self._thread.is_alive():
                self._thread.join(POLL_S)

    def result(self, stop: threading.Event) -> bool | None:
        """Wait for the opening to end, where signals reach the caller; what the stream does next.

        Returns:
            True when the source is open for the stream; False when it must be opened again (it was let go for a
            build, or failed for good during one: see :attr:`one_more_attempt`); None when ``stop`` was set first.

        Raises:
            SourceError: when the source failed for good, with no build going on.
            BaseException: what interrupted the wait (the opening is then given up).
        """
        self._release.set()  # the stream takes an open source now: its frames are not dropped any more
        try:
            while self._thread.is_alive():
                self._thread.join(POLL_S)
                if stop.is_set():
                    self.abandon()
                    return None
        except BaseException:
            self.abandon()
            raise
        if stop.is_set():  # as the opening ended (SIGTERM as the policy gave up): a stop, not the source's error
            self.abandon()
            return None
        if self._error is not None and not self._failed_while_building:
            raise self._error
        return self._held

    @property
    def one_more_attempt(self) -> bool:
        """Whether the source failed for good during a build: the stream then opens it with one attempt, no wait (the
        failure was said when it came; the camera may have been fixed, or come up, during the build)."""
        return self._failed_while_building

    def abandon(self) -> None:
        """Stop opening and close the source (now, or once an open in progress returns); idempotent.

        Waits up to ``RELEASE_WAIT_S`` for an open in progress; one still blocked in OpenCV after that (a network
        stream connecting) counts as a hung read (:func:`~unetrt.stream.sources.give_up_on`): a command's exit then
        skips the interpreter's shutdown.
        """
        with self._lock:
            self._abandoned = True
        self._stop.set()
        self._release.set()
        # As a timed reader's release: an open in progress (a file's: milliseconds) or a read of the frames being
        # dropped is waited for a while, since one counted as hung makes a command skip the interpreter's shutdown
        # (os._exit), also where it was about to end. The thread closes what it opens from then on.
        if self._began.wait(RELEASE_WAIT_S):  # else it never started: one that starts late finds itself abandoned
            self._thread.join(RELEASE_WAIT_S)
        if self._thread.is_alive():
            give_up_on(self._thread)
        with self._lock:
            if self._held and not self._thread.is_alive():
                self.source.close()
                self._held = False
