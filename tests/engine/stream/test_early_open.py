"""Opening a stream's source beside its model: what a build about to begin is told, and what the stream then takes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from stream_helpers import FakeSegmenter, frame_with_index

from unetrt.stream.early_open import EarlyOpen, opens_early
from unetrt.stream.options import StreamOptions
from unetrt.stream.sources import IterableSource, SourceError, VideoCaptureSource, reads_still_hung
from unetrt.stream.uri import SourceSpec

FAST = (0.01, 0.04)


class Camera:
    """A camera whose open fails ``down_for`` times (or whose first read fails, ``silent``), then delivers frames."""

    fps = None
    name = "camera 0"

    def __init__(self, down_for: int = 0, silent: bool = False, live: bool = True) -> None:
        self.live = live
        self.down_for = down_for
        self.silent = silent
        self.opens = 0
        self.reads = 0
        self.is_open = False

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.down_for:
            raise SourceError("connection refused")
        self.is_open = True

    def read(self) -> np.ndarray | None:
        if self.silent:
            raise SourceError("'camera 0' opened but sent no frame")
        self.reads += 1
        return frame_with_index(self.reads - 1)

    def close(self) -> None:
        self.is_open = False


def test_a_source_that_failed_for_good_stops_the_build_before_it_begins() -> None:
    """wait=0: one attempt. A build asked for after it is refused with the source's own error."""
    camera = Camera(down_for=1)
    early = EarlyOpen(camera, StreamOptions(wait=0))
    with pytest.raises(SourceError, match=r"^connection refused$"):
        early.before_build()
    assert camera.opens == 1 and not camera.is_open


def test_a_camera_that_opens_but_sends_no_frame_has_not_opened() -> None:
    """A CSI sensor whose Argus session fails opens, then ends at its first read: that is the failure, not an open."""
    camera = Camera(silent=True)
    early = EarlyOpen(camera, StreamOptions(wait=0))
    with pytest.raises(SourceError, match="opened but sent no frame"):
        early.before_build()
    assert not camera.is_open


def test_a_camera_not_up_yet_lets_the_build_begin_and_is_let_go_when_it_comes_up() -> None:
    """The default policy waits for ever: the build is not held back past the first attempt, the retries are told,
    and a camera that comes up during the build is closed again until the stream opens it."""
    camera = Camera(down_for=3)
    told: list[str] = []
    retried = threading.Event()
    gate = threading.Event()

    def tell(line: str) -> None:
        told.append(line)
        retried.set()
        gate.wait(30)  # the second attempt waits until the build has begun

    early = EarlyOpen(camera, StreamOptions(reconnect_delay=FAST), tell)
    early.before_build()  # returns once the first attempt failed and is to be retried
    gate.set()
    assert retried.is_set() and told[0].startswith("camera 0 is not up yet (connection refused)")
    assert early.result(threading.Event()) is False
    assert told[-1] == "camera 0 is up"  # the live view's page no longer says it is not
    assert camera.opens == 4 and camera.reads == 1 and not camera.is_open


def test_a_camera_open_before_a_build_is_let_go_for_it() -> None:
    camera = Camera()
    early = EarlyOpen(camera, StreamOptions(wait=0))
    early.before_build()
    assert early.result(threading.Event()) is False and not camera.is_open


def test_without_a_build_the_stream_takes_the_source_open() -> None:
    """A cached engine or a CPU model: no second open. A live camera's frame read to check it is dropped, and so are
    those read until the stream takes it (see the test of the first result's frame below); then it is the stream's
    alone to read."""
    camera = Camera()
    early = EarlyOpen(camera, StreamOptions(wait=0))
    assert early.result(threading.Event()) is True
    assert camera.is_open and camera.opens == 1 and camera.reads >= 1 and not early._thread.is_alive()


def _stored_clip(kind: str, uri: str) -> tuple[VideoCaptureSource, list[str]]:
    """A stored video's source whose opens and closes are recorded (and nothing else happens)."""
    clip = VideoCaptureSource(SourceSpec(kind, uri, live=False))
    opened: list[str] = []
    clip.open = lambda: opened.append("open")  # type: ignore[method-assign]
    clip.close = lambda: opened.append("close")  # type: ignore[method-assign]
    return clip, opened


def test_a_file_is_kept_open_through_a_build_and_never_read() -> None:
    clip, opened = _stored_clip("video", "clip.mp4")
    early = EarlyOpen(clip, StreamOptions())
    early.before_build()
    assert early.result(threading.Event()) is True and opened == ["open"]


def test_a_stream_stopped_while_it_waits_gets_nothing_and_the_source_is_closed() -> None:
    camera = Camera(down_for=10 ** 6)
    stop = threading.Event()
    stop.set()
    early = EarlyOpen(camera, StreamOptions(reconnect_delay=(30.0, 30.0)))
    assert early.result(stop) is None
    early.abandon()
    assert not camera.is_open


def test_a_stop_as_the_opening_fails_for_good_is_a_stop() -> None:
    """SIGTERM from systemd as the camera's --wait runs out: the stream ends as a stop (exit 143), not with the
    camera's error (exit 2)."""
    camera = Camera(down_for=1)
    early = EarlyOpen(camera, StreamOptions(wait=0))
    early._thread.join(30)
    stop = threading.Event()
    stop.set()
    assert early.result(stop) is None and not camera.is_open


def _camera_being_drained(camera: Camera | None = None, reads: int = 1) -> tuple[Camera, EarlyOpen]:
    """A camera opened early whose frames are being read and dropped (the model still opening): more than
    ``reads`` read."""
    camera = Camera() if camera is None else camera
    early = EarlyOpen(camera, StreamOptions(wait=0))
    for _ in range(3000):
        if camera.reads > reads:
            break
        threading.Event().wait(0.01)
    return camera, early


def test_an_abandoned_opening_closes_what_it_opened() -> None:
    """The model failed to open (or Ctrl-C during the build): the camera is not left open."""
    camera, early = _camera_being_drained()
    assert camera.is_open
    early.abandon()
    assert not camera.is_open and not early._thread.is_alive()


def test_only_unetrt_own_sources_are_opened_early() -> None:
    """A Python iterable or a caller's source may be readable once only: opened early, its frames would be lost."""
    assert opens_early(VideoCaptureSource(SourceSpec("camera", "/dev/video0", live=True)))
    assert not opens_early(IterableSource([])) and not opens_early(Camera())  # type: ignore[arg-type]


def test_a_model_that_fails_to_open_waits_for_the_source_opening_beside_it(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad model option fails while the video is still opening: the open was counted as a hung read, and
    unet-stream's exit then skipped the interpreter's shutdown (os._exit), killing a test runner calling main()."""
    from unetrt.stream import pipeline, sources

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0")
    model_failed = threading.Event()
    states: list[str] = []

    def slow_open(self: VideoCaptureSource) -> None:
        assert model_failed.wait(30)  # still opening when the model fails
        states.append("open")

    def failing_model(*args: object) -> list[object]:
        model_failed.set()
        raise ValueError("precision 'bf16' is OpenVINO's inference-precision hint")

    monkeypatch.setattr(sources.VideoCaptureSource, "open", slow_open)
    monkeypatch.setattr(sources.VideoCaptureSource, "close", lambda self: states.append("closed"))
    monkeypatch.setattr(pipeline, "open_segmenters", failing_model)
    with pytest.raises(ValueError, match="bf16"):
        pipeline.Stream(str(clip), "camvid")
    assert not reads_still_hung() and states[:2] == ["open", "closed"]


def test_a_camera_given_up_on_during_a_build_is_handed_back_for_one_more_attempt() -> None:
    """The failure is told when it comes (during the build); the stream's own open after the build decides."""
    camera = Camera(down_for=10 ** 6)
    told: list[str] = []
    gate = threading.Event()

    def tell(line: str) -> None:
        told.append(line)
        gate.wait(30)  # the retry waits until the build has begun

    early = EarlyOpen(camera, StreamOptions(reconnect_delay=FAST, max_reconnects=1), tell)
    early.before_build()
    gate.set()
    assert early.result(threading.Event()) is False and early.one_more_attempt
    assert told[-1] == ("connection refused; still not up after 1 retries (--max-reconnects); the model goes on "
                        "opening (a TensorRT engine being built is cached for the next start; Ctrl-C stops it), then "
                        "camera 0 is tried once more")


class _Sensor:
    """A camera's sensor: captures a frame every ``period_s`` into each open capture's driver buffers; its clock is
    the number of frames captured so far (a frame's stamp)."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.ticks = 0
        self.captures: list[_V4l2Capture] = []
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            with self.cond:
                self.ticks += 1
                for capture in self.captures:
                    capture.capture(self.ticks)
                self.cond.notify_all()

    def wait_for(self, ticks: int) -> int:
        """Wait until the sensor's clock reaches ``ticks``; its clock then."""
        with self.cond:
            assert self.cond.wait_for(lambda: self.ticks >= ticks, 30)
            return self.ticks

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class _V4l2Capture:
    """``cv2.VideoCapture`` of a V4L2 camera over :class:`_Sensor`: the driver fills its 4 buffers (OpenCV's V4L2
    default) in capture order, drops new frames while all are full, and a read returns the oldest buffered one,
    waiting for the next capture when none is. A frame's first two pixels' bytes carry its stamp."""

    BUFFERS = 4

    def __init__(self, sensor: _Sensor) -> None:
        self.sensor = sensor
        self.buffered: list[int] = []
        with sensor.cond:
            sensor.captures.append(self)

    def capture(self, stamp: int) -> None:
        if len(self.buffered) < self.BUFFERS:
            self.buffered.append(stamp)

    def isOpened(self) -> bool:  # noqa: N802  (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def set(self, prop: int, value: float) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        with self.sensor.cond:
            assert self.sensor.cond.wait_for(lambda: bool(self.buffered), 30)
            stamp = self.buffered.pop(0)
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 0], frame[..., 1] = stamp // 256, stamp % 256
        return True, frame

    def release(self) -> None:
        with self.sensor.cond:
            if self in self.sensor.captures:
                self.sensor.captures.remove(self)


def test_without_a_build_the_first_result_is_of_a_frame_captured_once_the_model_is_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached engine deserialising for seconds on a Jetson, OpenVINO compiling for a second or more: the camera,
    open meanwhile, was read once and then left, and its driver kept the frames captured right after that read (a
    full V4L2 queue drops the new ones). The robot's first masks were of frames as old as the model's opening (here
    100 frames older than the model; before the source opened beside the model, the first frame came after it)."""
    from stream_helpers import FakeSegmenter

    from unetrt.stream import pipeline, sources

    sensor = _Sensor()
    ready: list[int] = []

    def slow_model(*args: object) -> list[object]:
        ready.append(sensor.wait_for(sensor.ticks + 100))
        return [FakeSegmenter()]

    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: _V4l2Capture(sensor))
    monkeypatch.setattr(pipeline, "open_segmenters", slow_model)
    try:
        with pipeline.Stream("0", "camvid", wait=30, max_frames=1) as stream:
            first = next(iter(stream))
    finally:
        sensor.stop()
    stamp = int(first.frame[0, 0, 0]) * 256 + int(first.frame[0, 0, 1])
    # Half the model's opening as leeway for a busy machine's scheduling; the stale frame was 100 frames older.
    assert stamp > ready[0] - 50, (stamp, ready)
    assert sensor.captures == []  # the camera was released


def test_a_stream_dropped_before_it_starts_lets_its_camera_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """Robot code that makes a Stream and drops it unstarted, unclosed (an error before its loop): the camera opened
    beside the model stayed open (read without end, its frames dropped) until the process ended, as its live view's
    port does not."""
    import gc

    from stream_helpers import FakeSegmenter

    from unetrt.stream import pipeline, sources

    sensor = _Sensor()
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: _V4l2Capture(sensor))
    monkeypatch.setattr(pipeline, "open_segmenters", lambda *args: [FakeSegmenter()])
    try:
        stream = pipeline.Stream("0", "camvid", wait=30)
        sensor.wait_for(sensor.ticks + 3)
        del stream
        gc.collect()
        assert sensor.captures == []
    finally:
        sensor.stop()


def test_an_opening_interrupted_as_its_thread_starts_closes_what_it_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C or SIGTERM as the stream is made, while the opening's thread starts (it may already have opened the
    camera): no one held the opening to end it, and the camera stayed open, read, until the process ended."""
    camera = Camera()
    start = threading.Thread.start

    def interrupted(self: threading.Thread) -> None:
        start(self)
        for _ in range(3000):
            if camera.reads > 1:  # open, and its frames being dropped
                break
            threading.Event().wait(0.01)
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        EarlyOpen(camera, StreamOptions(wait=0))
    assert camera.opens == 1 and not camera.is_open


class _Page:
    """A live view's page: what it was told, in order."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, object]] = []

    def set_status(self, status: str, build: object = None) -> None:
        self.shown.append((status, build))


def test_a_camera_that_opens_at_once_tells_the_page_nothing() -> None:
    """A camera open at its first attempt tells the live view's page nothing: "is up" answers the page's "not up
    yet", and said without one it pushed the build's line aside for nothing."""
    told: list[str] = []
    early = EarlyOpen(Camera(), StreamOptions(wait=0), told.append)
    assert early.result(threading.Event()) is True and told == []


def test_a_stream_stopped_while_its_camera_is_retried_stops_the_retries() -> None:
    """stop() (Ctrl-C, a service's SIGTERM) while a camera is not up yet: the opening ends with it; its retries went
    on after the stream had ended, and a camera that came up then was held open by nobody's stream."""
    camera = Camera(down_for=10 ** 6)
    stop = threading.Event()
    stop.set()
    early = EarlyOpen(camera, StreamOptions(reconnect_delay=(30.0, 30.0)))
    assert early.result(stop) is None
    early._thread.join(10)
    assert not early._thread.is_alive() and not camera.is_open


def test_a_recorded_file_over_http_is_let_go_for_a_build() -> None:
    """http://server/clip.mp4 is read as a stored file, but through a connection: left unread for a build's minutes
    the server may drop it; only a file on this machine stays open through a build."""
    clip, opened = _stored_clip("rtsp", "http://127.0.0.1:8000/clip.mp4")
    early = EarlyOpen(clip, StreamOptions())
    early.before_build()
    assert early.result(threading.Event()) is False and opened == ["open", "close"]


def _patch_live_source(monkeypatch: pytest.MonkeyPatch, camera: Camera) -> None:
    """An RTSP camera's VideoCaptureSource that is ``camera``."""
    from unetrt.stream import sources

    monkeypatch.setattr(sources.VideoCaptureSource, "open", lambda self: camera.open())
    monkeypatch.setattr(sources.VideoCaptureSource, "read", lambda self: camera.read())
    monkeypatch.setattr(sources.VideoCaptureSource, "close", lambda self: camera.close())


def test_a_stream_closed_without_starting_closes_the_camera_opened_beside_its_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream(...) opens the camera while the model opens; close() before start() let it go on holding the camera."""
    from unetrt.stream import pipeline

    camera = Camera()
    _patch_live_source(monkeypatch, camera)
    stream = pipeline.Stream("rtsp://127.0.0.1:9/cam", "camvid", segmenter_options={"device": "cpu"})
    early = stream._early
    assert early is not None
    stream.close()
    early._thread.join(30)
    assert camera.opens == 1 and not camera.is_open


def test_a_stream_given_a_segmenter_object_opens_its_source_in_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is built for a segmenter that is already open: the camera is opened by start(), as before, not held
    from the moment the stream is made."""
    from unetrt.stream import pipeline

    camera = Camera()
    _patch_live_source(monkeypatch, camera)
    stream = pipeline.Stream("rtsp://127.0.0.1:9/cam", FakeSegmenter())
    try:
        assert stream._early is None and camera.opens == 0
    finally:
        stream.close()


def test_the_page_shows_the_build_and_the_source_and_nothing_after_the_model_opened() -> None:
    """A new engine cache line replaces the last build step; the source's news follows the build's line; once the
    model is open the stream says what it does, and a late line of the opening no longer overwrites it."""
    from unetrt.build_watch import BuildStep, tell_note, tell_step
    from unetrt.stream.pipeline import _watching_on_page

    page = _Page()
    step = BuildStep("building", 1, 3, 0.5)
    with _watching_on_page(page, "loading the model camvid") as shown:  # type: ignore[arg-type]
        tell_step(step)
        assert page.shown[-1] == ("loading the model camvid", step)
        tell_note("cached /engines/camvid.plan")
        assert page.shown[-1] == ("cached /engines/camvid.plan", None)
        shown.source_news("camera 0 is up")
        assert page.shown[-1] == ("cached /engines/camvid.plan; camera 0 is up", None)
    told = len(page.shown)
    shown.source_news("camera 0 is not up yet")
    assert len(page.shown) == told


def test_a_first_attempt_that_never_answers_holds_a_build_back_ffmpeg_s_30_s_without_an_open_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Stream made in Python without open_timeout: the build waits for a first attempt that does not answer (a
    wedged nvargus-daemon) for FFmpeg's default open timeout, 30 s, the one a network stream's attempt ends at then
    (streaming.md), and says so. The stream's clock is a stand-in that moves 10 s at each look."""
    from types import SimpleNamespace

    from unetrt.stream import early_open

    answer = threading.Event()

    class Wedged(Camera):
        def open(self) -> None:
            answer.wait(60)
            super().open()

    seconds = iter(range(0, 10 ** 6, 10))
    monkeypatch.setattr(early_open, "time", SimpleNamespace(monotonic=lambda: float(next(seconds))))
    camera = Wedged()
    told: list[str] = []
    early = EarlyOpen(camera, StreamOptions(wait=0), told.append)
    try:
        early.before_build()
    finally:
        answer.set()
    assert told == ["camera 0 has not answered after 30 s (--open-timeout); the model goes on opening, and so does "
                    "the source beside it"]
    assert early.result(threading.Event()) is False and not camera.is_open  # let go for the build


def test_a_corrupt_frame_while_the_model_opens_does_not_stop_the_dropping() -> None:
    """A corrupt frame (a damaged H.264 slice) among those dropped while the model opens is dropped as the others:
    had the reading stopped there, the camera's driver would queue stale frames again until the stream started."""
    from unetrt.stream.sources import CorruptFrameError

    class Glitchy(Camera):
        def read(self) -> np.ndarray | None:
            if self.reads == 3:
                self.reads += 1
                raise CorruptFrameError("corrupt frame")
            return super().read()

    camera, early = _camera_being_drained(Glitchy(), reads=10)
    assert camera.reads > 10
    assert early.result(threading.Event()) is True and camera.is_open
    camera.close()


def test_a_camera_that_stops_while_the_model_opens_is_closed_then_and_said(caplog: pytest.LogCaptureFixture) -> None:
    """A camera that stops delivering while the model opens (unplugged) is closed at once, said in a line, and the
    stream opens it again under its retry policy."""

    class Unplugged(Camera):
        def read(self) -> np.ndarray | None:
            return super().read() if self.reads < 3 else None

    camera = Unplugged()
    early = EarlyOpen(camera, StreamOptions(wait=0))
    for _ in range(3000):
        if not early._thread.is_alive():
            break
        threading.Event().wait(0.01)
    assert not early._thread.is_alive() and not camera.is_open
    assert early.result(threading.Event()) is False
    assert ("camera 0 failed while the model opened ('camera 0' stopped delivering frames); it is opened again when "
            "the stream starts") in caplog.messages


def test_an_opening_abandoned_during_a_hung_read_closes_the_camera_once_the_read_returns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The model failed to open (or Ctrl-C) while a read of the frames being dropped hangs (a network stream
    stalling): the capture is not closed under that read (OpenCV's capture is not thread-safe), and it is closed as
    soon as the read returns, not left open."""
    from unetrt.stream import early_open

    class Stalling(Camera):
        def __init__(self) -> None:
            super().__init__()
            self.stalled = threading.Event()
            self.resume = threading.Event()
            self.reading = False
            self.closed_under_a_read = False

        def read(self) -> np.ndarray | None:
            if self.reads >= 2:
                self.reading = True
                self.stalled.set()
                self.resume.wait(60)
                self.reading = False
            return super().read()

        def close(self) -> None:
            self.closed_under_a_read |= self.reading
            super().close()

    monkeypatch.setattr(early_open, "RELEASE_WAIT_S", 0.05)
    camera = Stalling()
    early = EarlyOpen(camera, StreamOptions(wait=0))
    assert camera.stalled.wait(30)
    early.abandon()  # the read goes on past the wait: given up on, as a hung read
    assert camera.is_open and not camera.closed_under_a_read
    camera.resume.set()
    early._thread.join(30)
    assert not early._thread.is_alive() and not camera.is_open and not camera.closed_under_a_read
    assert not reads_still_hung()


def test_abandoning_an_opening_waits_for_its_thread_only_as_long_as_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream closed unstarted, or a model that failed to open: the opening's thread, reading and dropping frames,
    ends at once, and abandon() returns then, not after the release wait meant for a read that hangs (every such
    close took it). The wait is made an hour here: a close that sat it out fails the test at its 30 s bound."""
    from unetrt.stream import early_open

    monkeypatch.setattr(early_open, "RELEASE_WAIT_S", 3600.0)
    camera, early = _camera_being_drained()
    closing = threading.Thread(target=early.abandon, daemon=True)
    closing.start()
    closing.join(30)
    assert not closing.is_alive() and not camera.is_open and not early._thread.is_alive()


def test_a_started_stream_dropped_unclosed_does_not_close_its_camera_under_a_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream started on a camera opened beside its model, then dropped without close() (robot code that keeps
    no reference): its capture is told to stop and releases the camera once its read returns. The opening's own
    let-go on a drop is for a stream never started: left armed, it closed the camera under the capture's read in
    progress (OpenCV's capture is not thread-safe)."""
    import gc

    from stream_helpers import FakeSegmenter

    from unetrt.stream import pipeline, sources

    class HeldCapture(_V4l2Capture):
        """A read that, once ``hold`` is set, waits inside until ``resume``; release() notes a read in progress."""

        def __init__(self, sensor: _Sensor) -> None:
            super().__init__(sensor)
            self.hold = threading.Event()
            self.in_read = threading.Event()
            self.resume = threading.Event()
            self.released_under_a_read = False

        def read(self) -> tuple[bool, np.ndarray]:
            if self.hold.is_set():
                self.in_read.set()
                self.resume.wait(30)
            frame = super().read()
            self.in_read.clear()
            return frame

        def release(self) -> None:
            self.released_under_a_read |= self.in_read.is_set()
            super().release()

    sensor = _Sensor()
    made: list[HeldCapture] = []

    def capture(*args: object) -> HeldCapture:
        made.append(HeldCapture(sensor))
        return made[-1]

    monkeypatch.setattr(sources.cv2, "VideoCapture", capture)
    monkeypatch.setattr(pipeline, "open_segmenters", lambda *args: [FakeSegmenter()])
    try:
        stream = pipeline.Stream("0", "camvid", wait=30).start()
        camera = made[-1]  # opened beside the model, taken open by start()
        camera.hold.set()
        assert camera.in_read.wait(30)  # the capture's thread is inside a read
        del stream
        gc.collect()
        released_under_the_read = camera.released_under_a_read
        camera.resume.set()
        for _ in range(3000):
            if not sensor.captures:
                break
            threading.Event().wait(0.01)
        assert len(made) == 1 and sensor.captures == []  # released, once the read returned
        assert not released_under_the_read
    finally:
        sensor.stop()
