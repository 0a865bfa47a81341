"""Each frame is checked and transformed once, at capture; the sink is parsed once; a video is opened once."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from stream_helpers import FakeSegmenter, write_video

import unetrt.segmenter
import unetrt.stream.sources
from unetrt.preprocessing import check_frame
from unetrt.stream import Stream, StreamResult
from unetrt.stream.capture import CaptureThread, CaptureTransform, FrameQueue
from unetrt.stream.cli import main
from unetrt.stream.sinks import open_sink
from unetrt.stream.sources import IterableSource, stored_frame_count
from unetrt.stream.stats import StreamStats
from unetrt.stream.uri import SinkSpec, parse_sink
from unetrt.stream.webview import HttpViewSink


def test_capture_checks_resizes_and_flips_each_frame() -> None:
    frame = np.zeros((8, 16, 4), np.uint8)  # BGRA: the alpha goes at capture
    frame[:, :8] = 255  # bright on the left
    handoff = FrameQueue(4)
    source = IterableSource([frame])
    source.open()
    capture = CaptureThread(source, handoff, StreamStats(), threading.Event(),
                            transform=CaptureTransform((4, 2), "horizontal"))
    capture.run()
    image = handoff.get(1.0).image  # type: ignore[attr-defined]
    assert image.shape == (2, 4, 3)
    assert (image[:, 2:] == 255).all() and (image[:, :2] == 0).all(), "flipped after the resize"


def test_a_rotated_camera_is_resized_to_the_input_size_then_turned() -> None:
    # The documented order: --input-width/--input-height size the frame as the camera gives it, then the flip.
    frame = np.zeros((8, 16, 3), np.uint8)
    frame[:, :8] = 255  # bright on the left
    image = CaptureTransform((4, 2), "clockwise").apply(frame)
    assert image.shape == (4, 2, 3)
    assert (image[:2] == 255).all() and (image[2:] == 0).all(), "the left side is on top after a clockwise turn"


def test_stream_checks_each_frame_once(monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path]) -> None:
    checks = []

    def counting_check(frame: object) -> np.ndarray:
        checks.append(1)
        return check_frame(frame)

    monkeypatch.setattr(unetrt.segmenter, "check_frame", counting_check)
    monkeypatch.setattr(unetrt.stream.sources, "check_frame", counting_check)
    frames = [np.full((48, 64, 3), i, np.uint8) for i in range(3)]
    segmenter = unetrt.segmenter.Segmenter(tiny_model_files["onnx"], threads=1)
    try:
        results = list(Stream(frames, segmenter))
        assert len(results) == 3 and len(checks) == 3
        checks.clear()
        segmenter.segment(frames[0])  # a direct call is still checked
        assert len(checks) == 1
    finally:
        segmenter.close()


def test_live_view_address_is_parsed_once() -> None:
    spec = parse_sink("http://[::1]:0")
    assert spec.address == ("::1", 0) and spec.location == "::1:0"
    with pytest.raises(ValueError, match="parse_sink"):
        open_sink(SinkSpec("http", "127.0.0.1:0"))
    sink = open_sink(parse_sink("http://127.0.0.1:0"))
    assert isinstance(sink, HttpViewSink)
    sink.close()


def test_video_is_opened_once_by_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             tiny_model_files: dict[str, Path]) -> None:
    video = write_video(tmp_path / "in.avi", 4)
    opened = []
    real = cv2.VideoCapture

    def counting_capture(*args: object) -> cv2.VideoCapture:
        opened.append(args[0])
        return real(*args)

    monkeypatch.setattr(cv2, "VideoCapture", counting_capture)
    assert main([str(video), "--headless", "--model", str(tiny_model_files["onnx"]), "--threads", "1"]) == 0
    assert opened == [str(video)]


def test_stored_frame_count_comes_from_the_open_source(tmp_path: Path) -> None:
    stream = Stream(str(write_video(tmp_path / "in.avi", 5)), FakeSegmenter())
    assert stored_frame_count(stream.source) is None, "unknown before the video is opened"
    stream.source.open()
    assert stored_frame_count(stream.source) == 5
    stream.source.close()
    assert stored_frame_count(IterableSource([])) is None


def _result(index: int, fps: float) -> StreamResult:
    segmentation = unetrt.segmenter.SegmentationResult(np.zeros((4, 4), np.uint8), None, 1.0)
    return StreamResult(index, np.zeros((4, 4, 3), np.uint8), segmentation.mask, segmentation, 0.0, 0.0, 12.34,
                        {"capture": 1.0, "inference": 9.5}, fps)


def test_live_page_shows_the_stats_as_text() -> None:
    sink = HttpViewSink("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(sink.url, timeout=10) as response:
            page = response.read().decode()
        assert 'fetch("/stats"' in page and 'id="stats"' in page
        with urllib.request.urlopen(sink.url + "stats", timeout=10) as response:
            assert response.headers["Content-Type"] == "application/json"
            # Before the first result: what the stream is doing (a first TensorRT build: HttpViewSink.set_status).
            assert json.load(response) == {"status": "waiting for the first frame"}
        sink.write_result(_result(0, 0.0), np.zeros((4, 4, 3), np.uint8))
        with urllib.request.urlopen(sink.url + "stats", timeout=10) as response:
            assert json.load(response)["fps"] is None  # not measured yet: the page leaves it out, not "0.0 FPS"
        sink.write_result(_result(3, 24.96), np.zeros((4, 4, 3), np.uint8))
        with urllib.request.urlopen(sink.url + "stats", timeout=10) as response:
            stats = json.load(response)
        assert stats == {"frame": 3, "fps": 25.0, "latency_ms": 12.3, "dropped": 2,
                         "timings_ms": {"capture": 1.0, "inference": 9.5}}
    finally:
        sink.close()
