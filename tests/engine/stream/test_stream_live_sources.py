"""Live sources in the Python API (issue 21): a frozen network stream is noticed within open_timeout, a camera
device that does not exist fails at once unless waiting was asked for, and OpenCV's log stays off stderr."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from stream_helpers import FakeSegmenter

from unetrt.stream import SourceError, Stream, VideoCaptureSource
from unetrt.stream.sources import TimedReader, missing_local_device, reads_still_hung
from unetrt.stream.uri import SourceSpec

# Generous: only a hang (the defect) ever reaches it.
HANG_S = 30.0


class FrozenCapture:
    """A ``cv2.VideoCapture`` of a server that sends ``frames`` frames and then freezes (SIGSTOP): ``read`` blocks
    until ``thaw`` is set, as FFmpeg's does."""

    def __init__(self, frames: int) -> None:
        self.left = frames
        self.thaw = threading.Event()
        self.released = threading.Event()
        self.blocked = threading.Event()  # a read is waiting for the thaw

    def isOpened(self) -> bool:  # noqa: N802  (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left > 0:
            self.left -= 1
            return True, np.full((48, 64, 3), 200, np.uint8)
        self.blocked.set()
        self.thaw.wait()
        return False, None

    def release(self) -> None:
        self.released.set()


class FrozenServer(VideoCaptureSource):
    """An RTSP source whose every open connects to the same frozen capture."""

    def __init__(self, capture: FrozenCapture, open_timeout: float) -> None:
        super().__init__(SourceSpec("rtsp", "rtsp://127.0.0.1:8554/frozen", live=True), open_timeout=open_timeout)
        self.capture = capture

    def _make_capture(self) -> FrozenCapture:  # type: ignore[override]
        return self.capture


def _run_in_thread(work: object) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = work()  # type: ignore[operator]
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_a_frozen_network_stream_is_noticed_within_the_open_timeout() -> None:
    capture = FrozenCapture(frames=3)
    stream = Stream(FrozenServer(capture, open_timeout=0.5), FakeSegmenter(), max_reconnects=0)
    thread, outcome = _run_in_thread(lambda: [result.index for result in stream])
    thread.join(HANG_S)
    try:
        assert not thread.is_alive(), "the stream still waits for the frozen server"
        error = outcome.get("error")
        assert isinstance(error, SourceError) and "sent no frame for 0.5 s (--open-timeout)" in str(error), outcome
    finally:
        stream.stop()
        capture.thaw.set()
    # The read given up on releases its capture as soon as it returns.
    assert capture.released.wait(HANG_S)


def test_a_timed_reader_returns_frames_and_releases_when_idle() -> None:
    capture = FrozenCapture(frames=2)
    reader = TimedReader(capture)  # type: ignore[arg-type]
    assert [reader.read(HANG_S)[0] for _ in range(2)] == [True, True]  # type: ignore[index]
    reader.release()
    assert capture.released.wait(HANG_S)


def test_a_camera_device_that_does_not_exist_fails_at_once() -> None:
    device = "/dev/video97"
    if os.path.exists(device) or not sys.platform.startswith("linux"):
        pytest.skip(f"needs Linux without {device}")
    stream = Stream(device, FakeSegmenter())
    thread, outcome = _run_in_thread(stream.start)
    thread.join(HANG_S)
    stream.stop()
    assert not thread.is_alive(), "the stream waits for a device that does not exist"
    error = outcome.get("error")
    assert isinstance(error, SourceError) and f"camera {device!r} does not exist" in str(error), outcome
    assert "wait=SECONDS (--wait SECONDS)" in str(error)
    assert missing_local_device(VideoCaptureSource(SourceSpec("camera", "97", live=True))) == device


def test_waiting_for_a_missing_camera_device_when_asked() -> None:
    device = "/dev/video97"
    if os.path.exists(device) or not sys.platform.startswith("linux"):
        pytest.skip(f"needs Linux without {device}")
    started = time.monotonic()
    with pytest.raises(SourceError, match="still not up after waiting"):
        Stream(device, FakeSegmenter(), wait=0.3, reconnect_delay=(0.1, 0.1)).start()
    assert time.monotonic() - started >= 0.3


def test_opencv_log_is_silenced_in_the_python_api() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The segmenter is never called (the stream does not open): a stub keeps the model out of the subprocess.
    script = ("from unetrt.stream import SourceError, Stream\n"
              "class Unused:\n"
              "    def segment(self, frame): raise AssertionError\n"
              "try:\n"
              f"    Stream('rtsp://127.0.0.1:{port}/cam', Unused(), wait=0, open_timeout=5).start()\n"
              "except SourceError:\n"
              "    print('refused')\n")
    env = {key: value for key, value in os.environ.items()
           if key not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                            check=False)
    assert result.stdout.strip() == "refused", result.stderr
    assert result.stderr == "", result.stderr



class SlowToReleaseCapture(FrozenCapture):
    """An RTSP capture whose release talks to the server first (FFmpeg's RTSP TEARDOWN)."""

    def release(self) -> None:
        time.sleep(0.3)
        super().release()


def _wait_until_no_read_hangs() -> None:
    deadline = time.monotonic() + HANG_S
    while reads_still_hung() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_releasing_a_timed_reader_waits_for_the_capture_release() -> None:
    # The reader thread releases the capture; returning from that into Python after the interpreter has shut
    # down aborts the process, so release() returns only once it is done.
    capture = SlowToReleaseCapture(frames=1)
    reader = TimedReader(capture)  # type: ignore[arg-type]
    assert reader.read(HANG_S)[0] is True  # type: ignore[index]
    reader.release()
    assert capture.released.is_set()
    assert not reads_still_hung()


def test_a_read_that_outlives_the_wait_on_release_counts_as_hung() -> None:
    capture = FrozenCapture(frames=0)
    reader = TimedReader(capture)  # type: ignore[arg-type]
    thread, outcome = _run_in_thread(lambda: reader.read(HANG_S))
    assert capture.blocked.wait(HANG_S)  # the reader thread is now inside the capture's read
    try:
        reader.release(wait=0.1)
        assert reads_still_hung()  # unet-stream leaves with os._exit instead of crashing at shutdown
    finally:
        capture.thaw.set()
    thread.join(HANG_S)
    assert outcome["value"] == (False, None)
    assert capture.released.wait(HANG_S)
    _wait_until_no_read_hangs()
    assert not reads_still_hung()
