"""Waiting for a live source that is not up yet: backoff, a log line per attempt, bounded by wait and attempts."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from stream_helpers import FakeSegmenter, frame_with_index

from unetrt.segmenter import SegmentationResult
from unetrt.stream import capture
from unetrt.stream.capture import CaptureThread, EndOfStream, LatestFrameSlot, backoff_delay, open_when_up
from unetrt.stream.pipeline import Stream
from unetrt.stream.sources import SourceError
from unetrt.stream.stats import StreamStats

FAST = (0.01, 0.04)


class LateCamera:
    """A live source whose open fails ``down_for`` times, then delivers ``frames`` frames."""

    live = True
    fps = None
    name = "late camera"

    def __init__(self, down_for: int, frames: int = 5) -> None:
        self.down_for = down_for
        self.frames = frames
        self.opens = 0
        self._next: int | None = None

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.down_for:
            raise SourceError("connection refused")
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next is None:
            raise SourceError("not open")
        if self._next >= self.frames:
            return None
        self._next += 1
        return frame_with_index(self._next - 1)

    def close(self) -> None:
        self._next = None


def test_backoff_doubles_up_to_the_longest() -> None:
    assert [backoff_delay(n, (0.5, 8.0)) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_backoff_of_a_camera_away_for_hours_stays_at_the_longest() -> None:
    # Attempt 1025 (2.3 h of a camera unplugged at the default 8 s) raised OverflowError: int too large to convert
    # to float, ending a stream told to retry for ever.
    assert backoff_delay(1025, (0.5, 8.0)) == 8.0
    assert backoff_delay(10**6, (0.01, 0.01)) == 0.01


def test_source_that_comes_up_is_opened_with_a_line_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    camera = LateCamera(down_for=3)
    with caplog.at_level(logging.WARNING, logger="unetrt.stream"):
        assert open_when_up(camera, threading.Event(), FAST) is True
    assert camera.opens == 4
    messages = [record.getMessage() for record in caplog.records]
    assert sum("is not up yet (connection refused)" in m for m in messages) == 3
    assert any("late camera is up after" in m for m in messages)


def test_each_retry_line_names_the_wait_and_the_attempt_and_reaches_on_retry(caplog: pytest.LogCaptureFixture) -> None:
    """The line a live view's page shows too (on_retry): the attempt about to be made, counted from the first, and
    the --wait it counts against."""
    camera = LateCamera(down_for=2)
    told: list[str] = []
    with caplog.at_level(logging.WARNING, logger="unetrt.stream"):
        assert open_when_up(camera, threading.Event(), FAST, wait=30, on_retry=told.append) is True
    assert [record.getMessage() for record in caplog.records][:2] == told
    for line, attempt in zip(told, (2, 3), strict=True):
        assert re.fullmatch(rf"late camera is not up yet \(connection refused\); waited \d+\.\d s of 30 s, retrying in "
                            rf"\d+\.\d\d s \(attempt {attempt}\)", line), line


def test_wait_bounds_the_time(caplog: pytest.LogCaptureFixture) -> None:
    camera = LateCamera(down_for=10**6)
    with pytest.raises(SourceError, match=r"still not up after waiting 0.2 s \(--wait\)"):
        open_when_up(camera, threading.Event(), FAST, wait=0.2)
    assert camera.opens > 3


def test_wait_zero_fails_at_once_with_the_source_error() -> None:
    camera = LateCamera(down_for=1)
    with pytest.raises(SourceError, match=r"^connection refused$"):
        open_when_up(camera, threading.Event(), FAST, wait=0)
    assert camera.opens == 1


def test_max_attempts_bounds_the_retries() -> None:
    camera = LateCamera(down_for=10**6)
    with pytest.raises(SourceError, match=r"after 2 retries \(--max-reconnects\)"):
        open_when_up(camera, threading.Event(), FAST, max_attempts=2)
    assert camera.opens == 3


def test_stop_ends_the_wait() -> None:
    stop = threading.Event()
    stop.set()
    assert open_when_up(LateCamera(down_for=10**6), stop, (5.0, 5.0)) is False


def test_stream_waits_for_a_live_source_that_is_not_up_yet() -> None:
    camera = LateCamera(down_for=4, frames=5)
    with Stream(camera, FakeSegmenter(), reconnect_delay=FAST) as stream:
        results = list(stream)
    summary = stream.summary()
    # A live source keeps only its newest frame: every frame is either processed or dropped as stale.
    assert results and results[-1].index == 4 and camera.opens == 5
    assert summary["captured"] == 5 and summary["processed"] + summary["dropped"] == 5


def test_stream_start_up_wait_is_bounded_by_max_reconnects() -> None:
    camera = LateCamera(down_for=4)
    with pytest.raises(SourceError, match="after 2 retries"), \
            Stream(camera, FakeSegmenter(), reconnect_delay=FAST, max_reconnects=2) as stream:
        list(stream)
    assert camera.opens == 3


def test_stream_stopped_while_waiting_ends_without_frames() -> None:
    stream = Stream(LateCamera(down_for=10**6), FakeSegmenter(), reconnect_delay=(0.05, 0.05))
    threading.Timer(0.3, stream.stop).start()
    with stream:
        assert list(stream) == []
    assert stream.summary()["processed"] == 0


class WatchedLateCamera(LateCamera):
    """A :class:`LateCamera` that says when the stream has tried it twice (so it is inside its wait)."""

    def __init__(self, down_for: int) -> None:
        super().__init__(down_for)
        self.retried = threading.Event()

    def open(self) -> None:
        if self.opens >= 1:
            self.retried.set()
        super().open()


def test_close_from_another_thread_ends_the_wait_for_a_live_source() -> None:
    """A robot node shut down while its camera is not up yet closes the stream from its own thread: the loop
    waiting for the camera kept retrying for ever, on a stream that called itself finished."""
    camera = WatchedLateCamera(down_for=10**6)
    stream = Stream(camera, FakeSegmenter(), reconnect_delay=(0.01, 0.01))
    results: list[object] = []
    loop = threading.Thread(target=lambda: results.extend(stream), daemon=True)
    loop.start()
    assert camera.retried.wait(30)
    stream.close()
    loop.join(20)
    assert not loop.is_alive(), "the loop still waits for the camera after close()"
    assert results == [] and stream.summary()["processed"] == 0


def test_a_live_source_that_ends_is_not_replayed_by_loop() -> None:
    # loop replays files and folders; a camera or stream that ends has ended (a reopen would wait on it for ever).
    camera = LateCamera(down_for=0, frames=5)
    with Stream(camera, FakeSegmenter(), reconnect_delay=FAST, loop=2) as stream:
        list(stream)
    assert camera.opens == 1 and stream.summary()["captured"] == 5


class UnpluggedCamera(LateCamera):
    """A live source that delivers one frame, then fails; ``on_failure`` runs as it fails."""

    def __init__(self, on_failure: threading.Event) -> None:
        super().__init__(down_for=0, frames=1)
        self.on_failure = on_failure

    def read(self) -> np.ndarray | None:
        frame = super().read()
        if frame is None:
            self.on_failure.set()
            raise SourceError("cable pulled")
        return frame


def test_a_stop_while_a_failed_camera_is_reopened_ends_the_stream_without_an_error() -> None:
    # stop() (SIGTERM from systemd, the robot shutting down) during the reconnect backoff raised the camera's failure
    # from the loop: unet-stream then exited 2 with "cable pulled" rather than 143.
    stop = threading.Event()
    camera = UnpluggedCamera(on_failure=stop)
    camera.open()
    slot = LatestFrameSlot()
    CaptureThread(camera, slot, StreamStats(), stop, reconnect_delay=(60.0, 60.0)).run()
    assert not isinstance(slot.get(0.0), EndOfStream)  # the frame
    end = slot.get(0.0)
    assert isinstance(end, EndOfStream) and end.error is None, end


def test_a_live_camera_whose_frames_are_often_bad_gets_one_line_for_them(monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    # Every other frame None (a camera SDK's frame not ready): one warning each, 25 lines a second in the journal.
    monkeypatch.setattr(capture, "CORRUPT_LOG_S", 1e9)  # the whole run within one period, however slow the machine
    frames = [None if index % 2 else frame_with_index(index) for index in range(40)]
    with caplog.at_level(logging.WARNING):
        summary = Stream(lambda: iter(frames), FakeSegmenter(), live=True).run()
    assert summary["corrupt"] == 20
    lines = [record.getMessage() for record in caplog.records if "corrupt" in record.getMessage()]
    assert len(lines) == 1 and "item 1 is None" in lines[0], lines


def test_the_next_line_on_a_live_cameras_bad_frames_counts_those_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    thread = CaptureThread(LateCamera(down_for=0), LatestFrameSlot(), StreamStats(), threading.Event())
    with caplog.at_level(logging.INFO, logger="unetrt.stream.capture"):
        for _ in range(3):
            thread._skip_corrupt(": frame is None")
        thread._corrupt_logged_at -= capture.CORRUPT_LOG_S  # the period has passed
        thread._skip_corrupt(": frame is None")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2 and "(2 more since the last such line; --verbose logs each)" in warnings[1], warnings
    assert sum(record.levelno == logging.INFO for record in caplog.records) == 2  # what --verbose shows
    assert thread.stats.counters["corrupt"] == 4


def test_each_corrupt_frame_of_a_stored_source_is_named(caplog: pytest.LogCaptureFixture) -> None:
    # A folder's skipped images are named one by one: the output frames no longer line up with the input names.
    frames = [None if index % 2 else frame_with_index(index) for index in range(10)]
    with caplog.at_level(logging.WARNING):
        Stream(frames, FakeSegmenter()).run()
    assert sum("corrupt" in record.getMessage() for record in caplog.records) == 5


class RefillingSource:
    """A camera SDK's source, as a :class:`FrameSource`: every read fills the one buffer it owns and returns it."""

    live = False
    fps = None
    name = "refilling camera"

    def __init__(self, values: list[int]) -> None:
        self.values = values
        self.buffer = np.zeros((48, 64, 3), np.uint8)
        self.drained = threading.Event()  # set once the stream read past the last frame
        self._next = 0

    def open(self) -> None:
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next == len(self.values):
            self.drained.set()
            return None
        self.buffer[...] = self.values[self._next]
        self._next += 1
        return self.buffer

    def close(self) -> None:
        pass


class WaitingSegmenter(FakeSegmenter):
    """Segments only once ``ready`` is set, so every frame was read (and its buffer refilled) before any result."""

    def __init__(self, ready: threading.Event) -> None:
        super().__init__()
        self.ready = ready

    def segment(self, frame: np.ndarray) -> SegmentationResult:
        assert self.ready.wait(30)
        return super().segment(frame)


def test_a_frame_source_that_refills_one_buffer_gives_each_result_its_own_frame() -> None:
    """The docs promise a frame is copied as it is read, for any source a program passes: a FrameSource of its own
    (a camera SDK that fills one buffer) gave every result the mask and frame of the last frame read."""
    values = [0, 255, 0]
    source = RefillingSource(values)
    with Stream(source, WaitingSegmenter(source.drained), queue_size=len(values) + 1) as stream:
        results = list(stream)
    assert [int(r.frame[0, 0, 0]) for r in results] == values
    assert [int(r.mask[0, 0]) for r in results] == [v // 255 for v in values]


def test_each_line_on_a_live_cameras_bad_frames_counts_only_those_since_the_line_before(
        caplog: pytest.LogCaptureFixture) -> None:
    # The count is of the frames not logged since the last warning: one carried over would tell a robot's journal
    # of more bad frames than its camera gave.
    thread = CaptureThread(LateCamera(down_for=0), LatestFrameSlot(), StreamStats(), threading.Event())
    with caplog.at_level(logging.WARNING, logger="unetrt.stream.capture"):
        for skipped in (3, 2):
            for _ in range(skipped):
                thread._skip_corrupt(": frame is None")
            thread._corrupt_logged_at -= capture.CORRUPT_LOG_S  # the period has passed
        thread._skip_corrupt(": frame is None")
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 3, warnings
    assert "(2 more since the last such line" in warnings[1] and "(1 more since the last such line" in warnings[2]


def test_a_bad_frame_after_a_reconnect_is_named_by_its_place_since_the_reopen(caplog: pytest.LogCaptureFixture) -> None:
    # A camera loop that fails after two frames and is opened again: its frames are numbered from that open, as
    # the function returning them numbers them.
    opened: list[int] = []

    def frames() -> Iterator[np.ndarray]:
        opened.append(1)
        if len(opened) == 1:
            yield from (frame_with_index(0), frame_with_index(1))
            raise RuntimeError("USB reset")
        yield from (frame_with_index(0), np.full((48, 64, 3), 200.0, np.float32), frame_with_index(2))

    with caplog.at_level(logging.WARNING):
        summary = Stream(frames, FakeSegmenter(), live=True, reconnect_delay=FAST).run()
    assert summary["corrupt"] == 1 and summary["reconnects"] == 1
    lines = [record.getMessage() for record in caplog.records if "corrupt" in record.getMessage()]
    assert len(lines) == 1 and "(frame 1 since it opened)" in lines[0], lines


def test_a_stop_during_the_last_attempt_ends_the_wait_as_a_stop() -> None:
    """SIGTERM (a service stopped) during the one attempt a stream has left: a stop, not the camera's error (which
    made unet-stream exit 2 where a stop exits 143)."""
    stop = threading.Event()
    camera = LateCamera(down_for=10**6)
    opening = camera.open

    def stopped_while_opening() -> None:
        stop.set()
        opening()

    camera.open = stopped_while_opening  # type: ignore[method-assign]
    assert open_when_up(camera, stop, FAST, wait=0) is False
    assert camera.opens == 1
