"""Helpers for the streaming tests: a fake segmenter with a set delay, synthetic videos and cameras."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from unetrt.segmenter import SegmentationResult


class FakeSegmenter:
    """Takes ``delay_s`` per frame and labels each pixel by its brightness (> 127: class 1)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.closed = False

    def segment(self, frame: np.ndarray) -> SegmentationResult:
        started = time.perf_counter()
        if self.delay_s:
            time.sleep(self.delay_s)
        gray = frame if frame.ndim == 2 else frame[..., 0]
        mask = (gray > 127).astype(np.uint8)
        self.calls += 1
        elapsed = (time.perf_counter() - started) * 1e3
        return SegmentationResult(mask, None, elapsed, {"preprocess": 0.0, "inference": elapsed, "postprocess": 0.0})

    def colorize(self, result: SegmentationResult) -> np.ndarray:
        return np.stack([result.mask * 255] * 3, axis=-1)

    def close(self) -> None:
        self.closed = True


class CollectingSink:
    """A sink that keeps every picture the stream writes."""

    name = "collector"
    wants_stop = False

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def write(self, image: np.ndarray) -> None:
        self.images.append(image)

    def close(self) -> None:
        pass


def frame_with_index(index: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A BGR frame whose pixels all carry ``index % 256`` (so a result tells which frame it was)."""
    return np.full((size[1], size[0], 3), index % 256, dtype=np.uint8)


def camera(count: int, rate_hz: float, size: tuple[int, int] = (64, 48)) -> Iterator[np.ndarray]:
    """A camera delivering ``count`` frames at ``rate_hz`` (paced on absolute times so it does not drift)."""
    start = time.perf_counter()
    for index in range(count):
        delay = start + (index + 1) / rate_hz - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield frame_with_index(index, size)


def write_video(path: Path, count: int, size: tuple[int, int] = (64, 48), fps: float = 10.0) -> Path:
    """An .mp4 or .avi of ``count`` frames with a moving bright square, written with OpenCV."""
    fourcc = cv2.VideoWriter.fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for index in range(count):
        frame = np.full((size[1], size[0], 3), 30, dtype=np.uint8)
        x = (index * 4) % (size[0] - 16)
        frame[8:24, x : x + 16] = 230
        writer.write(frame)
    writer.release()
    return path


def count_video_frames(path: Path) -> int:
    """Frames that actually decode (not the container's claim)."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def signal_once_writing(child: subprocess.Popen[str], out: Path, sig: int, wait_s: float, settle_s: float,
                        exit_s: float) -> tuple[str, str]:
    """Send ``sig`` to a running ``unet-stream`` once its output file has data; return its stdout and stderr.

    Waits up to ``wait_s`` for the first bytes of ``out``, lets it run ``settle_s`` more, then gives it ``exit_s``
    to finish; the child is killed if it is still running after that.
    """
    try:
        deadline = time.monotonic() + wait_s
        while not (out.exists() and out.stat().st_size > 0) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(settle_s)
        assert child.poll() is None, child.communicate()
        child.send_signal(sig)
        return child.communicate(timeout=exit_s)
    finally:
        if child.poll() is None:
            child.kill()
