"""The capture thread, the one place a frame is checked and transformed, and the hand-off to inference.

Live sources hand over through :class:`LatestFrameSlot`, which keeps only the
newest frame: when inference is slower than the camera, stale frames are dropped
(and counted) instead of queueing, so latency stays bounded. Stored sources (files,
folders) hand over through :class:`FrameQueue`, which blocks the reader instead,
so no frame is lost.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .flip import check_flip, flip_frame
from .rosbag import FrameHeader
from .sources import CorruptFrameError, FrameSource, SourceError, check_stream_frame, give_up_on
from .stats import StreamStats

log = logging.getLogger(__name__)

POLL_S = 0.05
# A live source's corrupt frames get one warning line at most this often, counting the others (each is logged at INFO,
# which --verbose shows): a camera whose every other frame is bad wrote 25 lines a second to the journal.
CORRUPT_LOG_S = 10.0


@dataclass
class CapturedFrame:
    """A frame as it left the capture thread.

    Attributes:
        image: the frame after :class:`CaptureTransform` (checked, resized, flipped): BGR or gray.
        index: its position among all frames the source delivered (gaps mean dropped frames).
        captured_at: ``time.perf_counter()`` when it was read.
        wall_time: ``time.time()`` when it was read, to match it with other sensors.
        capture_ms: how long the read and the transform took.
        header: the message header of a frame from a ROS 2 bag (the source's ``last_header``), else None.
    """

    image: np.ndarray
    index: int
    captured_at: float
    wall_time: float
    capture_ms: float
    header: FrameHeader | None = None


@dataclass(frozen=True)
class CaptureTransform:
    """What is done to every frame as it is captured, and only there: the check (channels: BGRA loses its
    alpha, HxWx1 becomes HxW), the resize to the requested input size, the flip.

    Everything downstream (inference, rendering, the sink) gets the frame as this returns it.

    Attributes:
        size: ``(width, height)`` to resize to (``cv2.INTER_AREA``), or None.
        flip: a name in :data:`unetrt.stream.flip.FLIPS`, applied after the resize.

    Raises:
        ValueError: on an unknown flip.

    Example:
        >>> CaptureTransform((4, 2), "horizontal").apply(np.zeros((8, 16, 4), np.uint8)).shape
        (2, 4, 3)
    """

    size: tuple[int, int] | None = None
    flip: str = "none"

    def __post_init__(self) -> None:
        check_flip(self.flip)

    def apply(self, frame: object) -> np.ndarray:
        """The checked, resized and flipped frame.

        Raises:
            CorruptFrameError: when ``frame`` is not an image a segmenter accepts.
        """
        image = check_stream_frame(frame)
        if self.size is not None and (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        return flip_frame(image, self.flip)


@dataclass
class EndOfStream:
    """The last item of a hand-off: the source ended, or failed with ``error``."""

    error: BaseException | None = None


HandoffItem = CapturedFrame | EndOfStream


class LatestFrameSlot:
    """Holds the newest frame only; putting a frame over an unread one drops the old one.

    Example:
        >>> slot = LatestFrameSlot()
        >>> slot.put("a"), slot.put("b"), slot.get(0.1)
        (0, 1, 'b')
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: object | None = None
        self._end: EndOfStream | None = None

    def put(self, frame: object, stop: threading.Event | None = None) -> int:
        """Store the frame; returns how many unread frames it replaced (0 or 1). Never blocks."""
        with self._cond:
            dropped = int(self._frame is not None)
            self._frame = frame
            self._cond.notify()
        return dropped

    def finish(self, end: EndOfStream, stop: threading.Event | None = None) -> None:
        """Mark the end; it is handed out after the last stored frame. Never blocks."""
        with self._cond:
            self._end = end
            self._cond.notify()

    def get(self, timeout: float) -> object:
        """The newest frame, else the end marker.

        Raises:
            queue.Empty: when nothing arrives within ``timeout`` seconds.
        """
        with self._cond:
            if self._frame is None and self._end is None:
                self._cond.wait(timeout)
            if self._frame is not None:
                frame, self._frame = self._frame, None
                return frame
            if self._end is not None:
                return self._end
        raise queue.Empty


class FrameQueue:
    """A bounded FIFO: the reader waits when inference falls behind, so no frame is dropped.

    Example:
        >>> q = FrameQueue(2)
        >>> q.put("a"), q.get(0.1)
        (0, 'a')
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"queue size must be at least 1, got {size}")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=size)

    def put(self, frame: object, stop: threading.Event | None = None) -> int:
        """Append, waiting for room until ``stop`` is set; returns 0 (nothing is ever dropped)."""
        while True:
            try:
                self._queue.put(frame, timeout=POLL_S)
                return 0
            except queue.Full:
                if stop is not None and stop.is_set():
                    return 0

    def finish(self, end: EndOfStream, stop: threading.Event | None = None) -> None:
        """Append the end marker after the frames still queued; once ``stop`` is set they may be discarded."""
        while True:
            try:
                self._queue.put(end, timeout=POLL_S)
                return
            except queue.Full:
                if stop is not None and stop.is_set():
                    self._discard_oldest()

    def _discard_oldest(self) -> None:
        with contextlib.suppress(queue.Empty):
            self._queue.get_nowait()

    def get(self, timeout: float) -> object:
        """The oldest item.

        Raises:
            queue.Empty: when nothing arrives within ``timeout`` seconds.
        """
        return self._queue.get(timeout=timeout)


Handoff = LatestFrameSlot | FrameQueue


def backoff_delay(attempt: int, reconnect_delay: tuple[float, float]) -> float:
    """Seconds to wait before reopen attempt ``attempt`` (1, 2, ...): doubling from the first, capped.

    Example:
        >>> [backoff_delay(n, (0.5, 8.0)) for n in (1, 2, 3, 6)]
        [0.5, 1.0, 2.0, 8.0]
    """
    first, longest = reconnect_delay
    # Doublings past 64 change nothing (the longest is reached long before), and 2 ** 1024 no longer fits a float:
    # a camera away for 2.3 hours at the default 8 s ended its stream with an OverflowError.
    return float(min(first * 2.0 ** min(attempt - 1, 64), longest))


def open_stored(source: FrameSource, stop: threading.Event) -> bool:
    """Open a stored source (a file, a folder) on a thread of its own, while the caller waits where signals reach it.

    OpenCV's open of a named pipe whose writer sends nothing (or of a file on a hung network mount) blocks in
    native code; opened on the main thread it kept Ctrl-C and SIGTERM from ever running, and the command hung
    until killed. An open given up on counts as a hung read (:func:`~unetrt.stream.sources.give_up_on`): a
    command's exit skips the interpreter's shutdown while it is blocked, and the source is closed if it ever opens.

    Returns:
        True once the source is open; False when ``stop`` was set while it was still opening.

    Raises:
        SourceError: when the source cannot be opened.
        BaseException: what interrupted the wait (KeyboardInterrupt, SIGTERM's TerminatedError).

    Example:
        >>> open_stored(source, threading.Event())  # doctest: +SKIP
        True
    """
    outcome: list[BaseException | None] = []
    lock = threading.Lock()
    abandoned = False

    def target() -> None:
        try:
            source.open()
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome.append(exc)
        else:
            outcome.append(None)
            with lock:
                if abandoned:
                    source.close()

    thread = threading.Thread(target=target, name="unetrt-source-open", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(POLL_S)
            if stop.is_set():
                break
    finally:
        with lock:
            if thread.is_alive() or not outcome:
                abandoned = True
                give_up_on(thread)
    if abandoned:
        return False
    error = outcome[0]
    if error is not None:
        raise error
    return True


def open_when_up(source: FrameSource, stop: threading.Event, reconnect_delay: tuple[float, float] = (0.5, 8.0),
                 max_attempts: int | None = None, wait: float | None = None,
                 on_retry: Callable[[str], None] | None = None) -> bool:
    """Open a live source, waiting for one that is not up yet with the reconnect backoff (a log line per attempt).

    Args:
        source: the source to open.
        stop: set to give up waiting at once.
        reconnect_delay: first and largest wait in seconds between attempts.
        max_attempts: retries after the first failure before giving up (None: no limit).
        wait: seconds to keep trying (None: no limit; 0: one attempt).
        on_retry: told each retry's log line too (a live view's page shows it), before the wait for the retry.

    Returns:
        True once the source is open; False when ``stop`` was set first (also during an attempt that failed).

    Raises:
        SourceError: when the source is still not up after ``wait`` seconds or ``max_attempts`` retries.

    Example:
        >>> open_when_up(source, threading.Event(), wait=30)  # doctest: +SKIP
        True
    """
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            source.open()
        except SourceError as exc:
            failure = exc
        else:
            if attempt:
                log.warning("%s is up after %.1f s (attempt %d)", source.name, time.monotonic() - started, attempt + 1)
            return True
        attempt += 1
        waited = time.monotonic() - started
        if stop.is_set():
            # A stop during the attempt (SIGTERM from systemd, a shutdown during the one more attempt after a first
            # build) ends the start as a stop: giving up with the camera's error made unet-stream exit 2, not 143.
            return False
        if wait == 0:
            raise failure
        if wait is not None and waited >= wait:
            raise SourceError(f"{failure}; still not up after waiting {wait:g} s (--wait)") from failure
        if max_attempts is not None and attempt > max_attempts:
            raise SourceError(f"{failure}; still not up after {max_attempts} retries (--max-reconnects)") from failure
        delay = backoff_delay(attempt, reconnect_delay)
        if wait is not None:
            delay = min(delay, wait - waited)
        limit = f" of {wait:g} s" if wait is not None else ""
        line = (f"{source.name} is not up yet ({failure}); waited {waited:.1f} s{limit}, retrying in {delay:.2f} s "
                f"(attempt {attempt + 1})")
        log.warning("%s", line)
        if on_retry is not None:
            on_retry(line)
        if stop.wait(delay):
            return False


class CaptureThread(threading.Thread):
    """Reads an opened source into a hand-off until the source ends, fails for good, or ``stop`` is set.

    A live source that fails is closed and reopened with exponential backoff (a log
    line each time); corrupt frames are skipped and counted. The thread owns the
    source from here on and closes it when it ends.

    Args:
        source: an opened source.
        handoff: a :class:`LatestFrameSlot` (live) or :class:`FrameQueue` (stored).
        stats: where capture times and counters go.
        stop: set to end capture promptly.
        loop: replays of a stored source after its end: 0 none, N more times, -1 forever.
        transform: the check, resize and flip of every frame (see :class:`CaptureTransform`).
        reconnect_delay: first and largest wait in seconds between reopen attempts.
        max_reconnects: reopen attempts without a frame in between before giving up (None: keep trying).
    """

    def __init__(self, source: FrameSource, handoff: Handoff, stats: StreamStats, stop: threading.Event,
                 loop: int = 0, transform: CaptureTransform | None = None,
                 reconnect_delay: tuple[float, float] = (0.5, 8.0), max_reconnects: int | None = None) -> None:
        super().__init__(name="unetrt-capture", daemon=True)
        self.source = source
        self.handoff = handoff
        self.stats = stats
        self.stop = stop
        self.loops_left = loop
        self.transform = transform or CaptureTransform()
        self.reconnect_delay = reconnect_delay
        self.max_reconnects = max_reconnects
        self._index = 0
        self._attempts = 0
        # Reads since the source was last opened, so a frame the check refuses is named by its place in the source.
        self._reads = 0
        self._corrupt_unlogged = 0
        self._corrupt_logged_at = -CORRUPT_LOG_S

    def run(self) -> None:
        end = EndOfStream()
        try:
            self._capture()
        except BaseException as exc:  # handed to the consumer thread, which raises it there
            end = EndOfStream(exc)
        finally:
            self.source.close()
            self.handoff.finish(end, self.stop)

    def _capture(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            position = self._reads
            self._reads += 1
            try:
                raw = self.source.read()
            except CorruptFrameError as exc:  # the source names the frame itself
                self._skip_corrupt(f": {exc}")
                continue
            except SourceError as exc:
                if not self.source.live:
                    raise
                if not self._reopen(exc):
                    # stop() during the backoff (Ctrl-C, SIGTERM, the robot shutting down) ends the stream as a stop
                    # anywhere else does; raising the failure made the command exit 2 instead of 143.
                    return
                continue
            try:
                frame = None if raw is None else self.transform.apply(raw)
            except CorruptFrameError as exc:
                # The check names what is wrong, not where: a camera loop's one float frame among uint8 ones.
                self._skip_corrupt(f" (frame {position} since it opened): {exc}")
                continue
            fresh = getattr(self.source, "fresh_frames", False)
            if frame is not None and not fresh and np.may_share_memory(frame, raw):
                # Frames are read ahead of inference: a source that fills one buffer again for every frame (a camera
                # SDK's FrameSource) had overwritten this one by the time it was segmented, and every result got the
                # mask and frame of a later one.
                frame = frame.copy()
            self._attempts = 0
            if frame is None:
                if self._index == 0 and not self.source.live:
                    corrupt = self.stats.counters["corrupt"]
                    raise SourceError(f"{self.source.name!r} has no frame that decodes"
                                      + (f" ({corrupt} corrupt)" if corrupt else " (it is empty)"))
                if self.loops_left == 0 or self.source.live:
                    return
                if self.loops_left > 0:
                    self.loops_left -= 1
                self.source.close()
                self.source.open()
                self._reads = 0
                continue
            now = time.perf_counter()
            item = CapturedFrame(frame, self._index, now, time.time(), (now - started) * 1e3,
                                 getattr(self.source, "last_header", None))
            self._index += 1
            self.stats.add("capture", item.capture_ms)
            self.stats.count("captured")
            dropped = self.handoff.put(item, self.stop)
            if dropped:
                self.stats.count("dropped", dropped)

    def _skip_corrupt(self, detail: str) -> None:
        """Count a corrupt frame and say so: each of a stored source's (a folder's skipped image is named, the outputs
        being numbered by frame), a live one's at most every ``CORRUPT_LOG_S`` seconds with the count of the others."""
        self.stats.count("corrupt")
        now = time.monotonic()
        if self.source.live and now - self._corrupt_logged_at < CORRUPT_LOG_S:
            self._corrupt_unlogged += 1
            log.info("skipping a corrupt frame from %s%s", self.source.name, detail)
            return
        others = (f" ({self._corrupt_unlogged} more since the last such line; --verbose logs each)"
                  if self._corrupt_unlogged else "")
        self._corrupt_unlogged, self._corrupt_logged_at = 0, now
        log.warning("skipping a corrupt frame from %s%s%s", self.source.name, detail, others)

    def _reopen(self, failure: SourceError) -> bool:
        """Reopen a failed live source with backoff; False when stopped first.

        Attempts count until a frame is read again, so a source that opens but never
        delivers backs off like one that does not open.

        Raises:
            SourceError: after ``max_reconnects`` attempts without a frame, or at once for a source that cannot be
                reopened (a plain iterable: its open would fail the same way for ever).
        """
        if not getattr(self.source, "reopenable", True):
            raise SourceError(f"{failure}; {self.source.name} is a plain iterable, which cannot be reopened: pass a "
                              "function returning a new iterable to have it reopened after a failure") from failure
        while True:
            self._attempts += 1
            if self.max_reconnects is not None and self._attempts > self.max_reconnects:
                raise SourceError(
                    f"{self.source.name} failed and did not come back after {self.max_reconnects} attempts: {failure}"
                ) from failure
            delay = backoff_delay(self._attempts, self.reconnect_delay)
            log.warning("%s failed (%s); reopening in %.2f s (attempt %d)", self.source.name, failure, delay,
                        self._attempts)
            self.source.close()
            if self.stop.wait(delay):
                return False
            try:
                self.source.open()
            except SourceError as exc:
                failure = exc
                continue
            self._reads = 0
            self.stats.count("reconnects")
            log.info("%s reopened (attempt %d)", self.source.name, self._attempts)
            return True
