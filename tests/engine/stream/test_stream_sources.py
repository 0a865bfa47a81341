from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from stream_helpers import write_video

from unetrt.bundled import sample_clip
from unetrt.stream import sinks
from unetrt.stream.sinks import DisplaySink, ImageSequenceSink, VideoFileSink, fit_into, open_sink, opencv_has_gui
from unetrt.stream.sources import (
    MAX_CONSECUTIVE_FILE_FAILURES,
    CorruptFrameError,
    ImageSequenceSource,
    IterableSource,
    SourceError,
    VideoCaptureSource,
    check_stream_frame,
    csi_pipeline,
    open_source,
    opencv_has_gstreamer,
)
from unetrt.stream.uri import SourceSpec


def read_all(source: object) -> list[np.ndarray]:
    frames = []
    source.open()  # type: ignore[attr-defined]
    while (frame := source.read()) is not None:  # type: ignore[attr-defined]
        frames.append(frame)
    source.close()  # type: ignore[attr-defined]
    return frames


def test_video_file_reads_every_frame_then_ends(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 7, fps=12)
    source = open_source(str(video))
    assert isinstance(source, VideoCaptureSource) and not source.live
    frames = read_all(source)
    assert len(frames) == 7 and frames[0].shape == (48, 64, 3)
    assert source.fps == pytest.approx(12)


def test_unreadable_video_is_a_source_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot open"):
        open_source(str(broken)).open()


def test_folder_in_name_order_and_corrupt_image(tmp_path: Path) -> None:
    for index in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"f{index}.png"), np.full((4, 5, 3), index, np.uint8))
    (tmp_path / "f1b.png").write_bytes(b"garbage")
    (tmp_path / "notes.txt").write_text("ignored")
    source = ImageSequenceSource(tmp_path)
    source.open()
    assert source.read()[0, 0, 0] == 0
    assert source.read()[0, 0, 0] == 1
    with pytest.raises(CorruptFrameError, match=r"f1b\.png"):
        source.read()
    assert source.read()[0, 0, 0] == 2
    assert source.read() is None


def test_16_bit_images_become_8_bit(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((4, 5, 3), 0xFFFF, np.uint16))
    (frame,) = read_all(ImageSequenceSource(tmp_path))
    assert frame.dtype == np.uint8 and frame.max() == 255


def test_a_tiff_stack_is_refused_before_its_first_page_alone_is_segmented(tmp_path: Path) -> None:
    # unet-stream stack.tif out/ wrote one mask for a 5-slice EM stack and exited 0.
    assert cv2.imwritemulti(str(tmp_path / "stack.tif"), [np.full((6, 8), i, np.uint8) for i in range(5)])
    with pytest.raises(ValueError, match=r"image '.*stack\.tif' is a stack of 5 pages, of which only the first"):
        ImageSequenceSource(tmp_path / "stack.tif")
    with pytest.raises(ValueError, match="is a stack of 5 pages"):
        ImageSequenceSource(tmp_path)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageSequenceSource(tmp_path)


def test_iterable_once_and_factory_many_times() -> None:
    frames = [np.zeros((2, 2, 3), np.uint8)] * 3
    once = IterableSource(iter(frames))
    assert len(read_all(once)) == 3
    with pytest.raises(SourceError, match="only once"):
        once.open()
    again = IterableSource(lambda: frames)
    assert len(read_all(again)) == 3 and len(read_all(again)) == 3


def test_iterable_failure_is_a_source_error() -> None:
    def failing() -> object:
        yield np.zeros((2, 2, 3), np.uint8)
        raise RuntimeError("cable pulled")

    source = IterableSource(failing)
    source.open()
    source.read()
    with pytest.raises(SourceError, match="cable pulled"):
        source.read()


def test_an_iterable_that_raises_names_the_item_it_failed_at() -> None:
    # 'python frames: RuntimeError(...)' left the robot's author to guess which frame the camera loop failed at.
    def failing() -> Iterator[np.ndarray]:
        yield np.zeros((2, 2, 3), np.uint8)
        yield np.zeros((2, 2, 3), np.uint8)
        raise RuntimeError("cable pulled")

    source = IterableSource(failing)
    source.open()
    source.read(), source.read()
    with pytest.raises(SourceError, match=r"item 2 raised RuntimeError\('cable pulled'\)"):
        source.read()


def test_a_none_item_is_a_corrupt_frame_not_the_end() -> None:
    # read() returning None means the end, so a None item ended the stream silently after the frames before it.
    source = IterableSource([np.zeros((2, 2, 3), np.uint8), None, np.zeros((2, 2, 3), np.uint8)])
    source.open()
    assert source.read() is not None
    with pytest.raises(CorruptFrameError, match="item 1 is None"):
        source.read()
    assert source.read() is not None and source.read() is None


def test_frames_of_an_iterable_that_refills_one_buffer_stay_apart() -> None:
    # A camera loop that fills one buffer for every frame (a RealSense frame's get_data(), cap.read(image=buf)):
    # the stream reads frames ahead of inference, and every frame it held was the buffer's latest contents.
    buffer = np.zeros((2, 2, 3), np.uint8)

    def camera() -> Iterator[np.ndarray]:
        for value in (1, 2):
            buffer[...] = value
            yield buffer

    source = IterableSource(camera())
    source.open()
    first, second = source.read(), source.read()
    assert first is not None and second is not None
    assert (first == 1).all() and (second == 2).all()


def test_a_function_returning_one_frame_rather_than_frames_is_refused() -> None:
    # Iterated, the array gave its rows: a stream segmented each (W x 3) as a gray frame, without a word.
    source = IterableSource(lambda: np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r"returned one frame \(array of shape \(4, 6, 3\)\); it must return an "
                                         "iterable of frames"):
        source.open()


def test_check_stream_frame() -> None:
    assert check_stream_frame(np.zeros((3, 4, 4), np.uint8)).shape == (3, 4, 3)
    for bad in (None, np.full((3, 4), 2.0, np.float32), np.zeros((3, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(CorruptFrameError):
            check_stream_frame(bad)


def test_one_frame_is_not_a_source() -> None:
    with pytest.raises(ValueError, match="one frame"):
        open_source(np.zeros((4, 4, 3), np.uint8))


def test_csi_needs_gstreamer() -> None:
    assert "nvarguscamerasrc sensor-id=1" in csi_pipeline(1, (640, 480), 30)
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer; the error path cannot be reached")
    with pytest.raises(ValueError, match="GStreamer"):
        VideoCaptureSource(SourceSpec("csi", "0", live=True))



def test_the_csi_pipeline_asks_argus_for_the_mode_and_keeps_only_the_newest_frame() -> None:
    # Argus picks the sensor mode from the NVMM caps (size, rate); nvvidconv copies out of NVMM as BGRx, which
    # videoconvert turns into the BGR that OpenCV's appsink takes. GStreamer's appsink documentation: "The
    # "max-buffers" property can be used to limit the queue size. The "drop" property controls whether the
    # streaming thread blocks or if older buffers are dropped when the maximum queue size is reached": without
    # them a slow segmenter is fed ever older frames.
    assert csi_pipeline(1, (640, 480), 60) == (
        "nvarguscamerasrc sensor-id=1 ! "
        "video/x-raw(memory:NVMM), width=640, height=480, framerate=60/1, format=NV12 ! "
        "nvvidconv ! video/x-raw, width=640, height=480, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")
    assert "width=1280, height=720, framerate=30/1, format=NV12" in csi_pipeline(0)


def test_a_csi_camera_that_does_not_open_says_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from unetrt.stream import sources

    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: FakeClosedCapture())
    with pytest.raises(SourceError, match=r"cannot open csi 'csi://1'; check that a camera is connected as sensor 1, "
                                          r"that no other program uses it, and restart the camera daemon: "
                                          r"sudo systemctl restart nvargus-daemon"):
        VideoCaptureSource(SourceSpec("csi", "1", live=True)).open()


class FakeClosedCapture:
    """A cv2.VideoCapture that did not open, as OpenCV returns when GStreamer's pipeline fails to start."""

    released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return False

    def release(self) -> None:
        self.released = True


def test_a_capture_that_does_not_open_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    # A reconnecting stream opens a failing camera again and again: each failed pipeline must be torn down.
    from unetrt.stream import sources

    capture = FakeClosedCapture()
    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: capture)
    with pytest.raises(SourceError, match="cannot open csi"):
        VideoCaptureSource(SourceSpec("csi", "0", live=True)).open()
    assert capture.released


def test_a_network_stream_that_does_not_open_says_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    # With --wait 0 this line is all the user gets: it must say what to look at, not only that it failed.
    from unetrt.stream import sources

    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: FakeClosedCapture())
    with pytest.raises(SourceError) as caught:
        VideoCaptureSource(SourceSpec("rtsp", "http://127.0.0.1:1/missing.mp4", live=True)).open()
    assert "'http://127.0.0.1:1/missing.mp4'; check the address and that the server is up" in str(caught.value)
    assert "--wait" in str(caught.value)


def test_missing_camera_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="cannot open camera"):
        open_source("/dev/video99").open()


def test_video_sink_is_playable_and_keeps_size(tmp_path: Path) -> None:
    sink = VideoFileSink(tmp_path / "sub" / "out.mp4", fps=5)
    for index in range(6):
        sink.write(np.full((48, 64, 3), index * 40, np.uint8) if index != 3 else np.zeros((10, 10), np.uint8))
    sink.close()
    sink.close()
    capture = cv2.VideoCapture(str(tmp_path / "sub" / "out.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 64
    assert sum(1 for _ in iter(lambda: capture.read()[0], False)) == 6


def test_a_video_keeps_the_aspect_of_pictures_of_another_size_and_says_so(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A camera that renegotiated from 1280x720 to 640x480 (or turned portrait) mid-stream had its pictures stretched
    into the video's first size without a word, the scene and its overlay distorted alike."""
    sink = VideoFileSink(tmp_path / "out.avi", fps=5)
    white = np.full((48, 64, 3), 255, np.uint8)
    with caplog.at_level(logging.WARNING, logger="unetrt.stream.sinks"):
        sink.write(np.full((72, 128, 3), 255, np.uint8))
        sink.write(white)  # 4:3 into 16:9: 96x72 in the middle, black bars of 16 columns either side
        sink.write(white.transpose(1, 0, 2))  # portrait: 54x72 in the middle
    sink.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "picture 1 for" in warnings[0] and "is 64x48, the video 128x72" in warnings[0]
    assert "aspect kept" in warnings[0] and "image folder" in warnings[0]
    capture = cv2.VideoCapture(str(tmp_path / "out.avi"))
    pictures = []
    while (read := capture.read())[0]:
        pictures.append(read[1])
    assert [p.shape for p in pictures] == [(72, 128, 3)] * 3
    gray = [p.mean(axis=(0, 2)) for p in pictures]
    assert gray[0].min() > 200
    assert gray[1][:12].max() < 40 and gray[1][-12:].max() < 40 and gray[1][20:108].min() > 200
    assert gray[2][:33].max() < 40 and gray[2][-33:].max() < 40 and gray[2][41:87].min() > 200


def test_fit_into_keeps_the_aspect_and_centres() -> None:
    fitted = fit_into(np.full((3, 1, 3), 9, np.uint8), (8, 6))
    assert fitted.shape == (6, 8, 3)
    assert np.flatnonzero(fitted[:, :, 0].any(axis=0)).tolist() == [3, 4]
    assert fit_into(np.ones((1, 640), np.uint8), (64, 48)).shape == (48, 64)


def test_image_sink_numbers_frames(tmp_path: Path) -> None:
    sink = ImageSequenceSink(tmp_path / "out" / "f_%03d.png")
    for _ in range(3):
        sink.write(np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f_000.png", "f_001.png", "f_002.png"]
    with pytest.raises(ValueError, match="%d"):
        ImageSequenceSink(tmp_path / "plain.png")


def test_an_image_output_deletes_an_earlier_runs_frames_only_when_asked(tmp_path: Path) -> None:
    pattern = str(tmp_path / "f_%03d.png")
    for name in ("f_000.png", "f_001.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"earlier")
    assert isinstance(open_sink(pattern, replace_earlier=False), ImageSequenceSink)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_000.png", "f_001.png", "notes.txt"]
    open_sink(pattern)
    # Only files named like this output's frames go; anything else in the folder is the user's.
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_image_that_fails_to_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_write(path: str, image: np.ndarray) -> bool:
        Path(path).write_bytes(b"\x89PNG")  # what an encoder that fails midway leaves behind
        return False

    monkeypatch.setattr(cv2, "imwrite", half_write)
    sink = ImageSequenceSink(tmp_path / "f_%03d.png")
    with pytest.raises(OSError, match="cannot write image"):
        sink.write(np.zeros((4, 4, 3), np.uint8))
    # A half-written image would be a corrupt frame among the good ones.
    assert list(tmp_path.iterdir()) == []


def test_a_name_that_is_not_utf8_is_refused_before_opencv_sees_it(tmp_path: Path) -> None:
    # OpenCV crashed the process (a segmentation fault) on such a name: an image in a folder of frames, a video,
    # an output. A folder's files are listed when the source is made: an image with such a name is refused there,
    # naming it (renaming it is the fix), rather than skipped as a frame that does not decode.
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((4, 4, 3), np.uint8))
    (folder / os.fsdecode(b"b\xff.png")).write_bytes((folder / "a.png").read_bytes())
    for make in (lambda: ImageSequenceSource(folder), lambda: open_source(str(folder / "*.png"))):
        with pytest.raises(ValueError, match=r"image '.*b\\xff\.png' has a name that is not valid UTF-8"):
            make()
    video = str(tmp_path / os.fsdecode(b"v\xff.mp4"))
    with pytest.raises(ValueError, match=r"input '.*v\\xff\.mp4' has a name that is not valid UTF-8"):
        VideoCaptureSource(SourceSpec("video", video, live=False))
    with pytest.raises(ValueError, match=r"video output '.*o\\xfe\.avi' has a name that is not valid UTF-8"):
        VideoFileSink(tmp_path / os.fsdecode(b"o\xfe.avi"))
    with pytest.raises(ValueError, match=r"image output '.*fr\\xfe/f_%04d\.png' has a name that is not valid UTF-8"):
        ImageSequenceSink(tmp_path / os.fsdecode(b"fr\xfe") / "f_%04d.png")
    assert [path.name for path in tmp_path.iterdir()] == ["frames"]


def test_a_wayland_session_is_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "opencv_has_gui", lambda: True)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert sinks.display_available()
    monkeypatch.delenv("WAYLAND_DISPLAY")
    assert not sinks.display_available()


def test_display_without_gui_is_a_clear_error() -> None:
    if opencv_has_gui():
        pytest.skip("this OpenCV has a GUI")
    with pytest.raises(ValueError, match="headless"):
        DisplaySink(0)


def test_bundled_sample_clip_decodes() -> None:
    clip = sample_clip()
    assert clip.stat().st_size <= 5 * 1024 * 1024
    frames = read_all(open_source("sample"))
    assert len(frames) == 101 and frames[0].shape == (360, 480, 3)


class FakeFileCapture:
    """A cv2.VideoCapture of a video file that announces ``len(decodes)`` frames at ``fps``; frame i decodes when
    ``decodes[i]`` (its pixels carry i), and every read past the last frame fails, as at a file's end."""

    def __init__(self, decodes: list[bool], fps: float = 25.0) -> None:
        self.decodes = decodes
        self.fps = fps
        self.position = 0

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: float(len(self.decodes))}.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        index, self.position = self.position, self.position + 1
        if index < len(self.decodes) and self.decodes[index]:
            return True, np.full((4, 5, 3), index, np.uint8)
        return False, None

    def release(self) -> None:
        pass


def _open_fake_file(monkeypatch: pytest.MonkeyPatch, capture: FakeFileCapture) -> VideoCaptureSource:
    from unetrt.stream import sources

    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: capture)
    source = VideoCaptureSource(SourceSpec("video", "clip.mp4", live=False))
    source.open()
    return source


def test_a_video_with_damaged_frames_here_and_there_is_read_to_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    # 31 frames, every third one whole: 20 damaged ones in all but never more than 2 in a row, so the limit of
    # MAX_CONSECUTIVE_FILE_FAILURES (10) in a row is never reached; each damaged one is named by its own number, and
    # the reads past the last frame are the end, not more damaged frames.
    frames, damaged = _read_reporting(_open_fake_file(monkeypatch, FakeFileCapture([True, False, False] * 10 + [True])))
    assert frames == list(range(0, 31, 3))
    assert damaged == [index for index in range(31) if index % 3]


def test_a_frame_rate_no_video_has_is_taken_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    # Some streams announce their 90 kHz clock as the rate: an output video written at 90000 FPS plays as a flash.
    assert _open_fake_file(monkeypatch, FakeFileCapture([True], fps=90000.0)).fps is None
    assert _open_fake_file(monkeypatch, FakeFileCapture([True], fps=29.97)).fps == pytest.approx(29.97)


def test_images_with_upper_case_suffixes_are_read(tmp_path: Path) -> None:
    # Cameras and Windows tools name their files IMG_0001.JPG; such a folder is not empty.
    cv2.imwrite(str(tmp_path / "IMG_0001.PNG"), np.full((4, 5, 3), 7, np.uint8))
    (frame,) = read_all(ImageSequenceSource(tmp_path))
    assert frame[0, 0, 0] == 7


def test_live_false_makes_a_camera_a_source_that_drops_nothing() -> None:
    # Not opened here: only what the stream will do with its frames is asked.
    assert open_source("/dev/video0").live
    assert not open_source("/dev/video0", live=False).live


def _read_reporting(source: VideoCaptureSource) -> tuple[list[int], list[int]]:
    """The frames a source gives (by the index their pixels carry) and the damaged ones it reports, in one pass."""
    frames, damaged = [], []
    while True:
        try:
            frame = source.read()
        except CorruptFrameError as error:
            damaged.append(int(str(error).split()[1]))
            continue
        if frame is None:
            return frames, damaged
        frames.append(int(frame[0, 0, 0]))


def test_a_video_cut_short_ends_where_it_was_cut_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    # A recording whose writer died announces 30 frames and holds 12: its first 9 missing frames were reported as
    # damaged ("frame 12 ... did not decode", one line each) and counted as corrupt, and its end went unsaid.
    source = _open_fake_file(monkeypatch, FakeFileCapture([True] * 12 + [False] * 18))
    with caplog.at_level(logging.WARNING):
        frames, damaged = _read_reporting(source)
    assert frames == list(range(12)) and damaged == []
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and "ended at frame 12 of the 30 it announces" in lines[0], lines


def test_damaged_frames_before_a_cut_are_reported_and_the_cut_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    source = _open_fake_file(monkeypatch, FakeFileCapture([True, False, False, True] + [False] * 20))
    assert _read_reporting(source) == ([0, 3], [1, 2])


def test_a_video_of_which_no_frame_decodes_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    source = _open_fake_file(monkeypatch, FakeFileCapture([False] * 30))
    with pytest.raises(SourceError, match="has no frame that decodes \\(none of the 30 it announces\\)"):
        source.read()


def test_a_video_that_announces_no_frame_and_sends_none_is_not_an_empty_finished_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    source = _open_fake_file(monkeypatch, FakeFileCapture([]))  # no count: an index FFmpeg could not read
    with pytest.raises(SourceError, match=r"'clip\.mp4' opened but sent no frame; the file may be damaged"):
        source.read()


class _UncountedCapture(FakeFileCapture):
    """A video that announces no frame count (a file over HTTP whose index FFmpeg could not read first)."""

    def get(self, prop: int) -> float:
        return 0.0 if prop == cv2.CAP_PROP_FRAME_COUNT else super().get(prop)


def test_a_video_that_announces_no_frame_count_but_sends_frames_ends_as_a_file_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a video that sent nothing is an error: one that sent its frames and then ended has simply ended.
    source = _open_fake_file(monkeypatch, _UncountedCapture([True, True, True]))
    assert _read_reporting(source) == ([0, 1, 2], [])


def test_a_network_stream_taken_as_stored_reads_on_past_a_damaged_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    # live=False on an rtsp:// source reads it through its reader thread, which the read past a failure uses too.
    from unetrt.stream import sources

    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: FakeFileCapture([True, False, True, True]))
    source = VideoCaptureSource(SourceSpec("rtsp", "rtsp://127.0.0.1:1/cam", live=False), open_timeout=30.0)
    source.open()
    try:
        assert _read_reporting(source) == ([0, 2, 3], [1])
    finally:
        source.close()


def test_a_run_of_damaged_frames_is_reported_frame_by_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three in a row, then a frame: each of the three is named once, in order, before that frame.
    source = _open_fake_file(monkeypatch, FakeFileCapture([True, False, False, False, True, True]))
    assert _read_reporting(source) == ([0, 4, 5], [1, 2, 3])


def test_the_limit_of_failed_reads_in_a_row_is_the_files_end(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    # MAX_CONSECUTIVE_FILE_FAILURES reads failing in a row end the file; one fewer are damaged frames read past.
    limit = MAX_CONSECUTIVE_FILE_FAILURES
    source = _open_fake_file(monkeypatch, FakeFileCapture([True] + [False] * (limit - 1) + [True] * 3))
    assert _read_reporting(source) == ([0, limit, limit + 1, limit + 2], list(range(1, limit)))
    source = _open_fake_file(monkeypatch, FakeFileCapture([True] + [False] * limit + [True] * 3))
    with caplog.at_level(logging.WARNING):
        assert _read_reporting(source) == ([0], [])
    assert f"ended at frame 1 of the {limit + 4} it announces" in caplog.text


def test_a_video_announcing_one_frame_more_than_it_holds_ends_without_a_word(monkeypatch: pytest.MonkeyPatch,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    # Counts are often one more than the frames a file holds: that is its end, not a file cut short.
    source = _open_fake_file(monkeypatch, FakeFileCapture([True] * 5 + [False]))
    with caplog.at_level(logging.WARNING):
        assert _read_reporting(source) == ([0, 1, 2, 3, 4], [])
    assert caplog.records == []


def test_the_cut_after_damaged_frames_is_named_by_its_place_in_the_file(monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    # Frames 1 and 2 damaged, 3 whole, the rest missing: the file ends at frame 4, not at the 2nd frame decoded.
    source = _open_fake_file(monkeypatch, FakeFileCapture([True, False, False, True] + [False] * 20))
    with caplog.at_level(logging.WARNING):
        _read_reporting(source)
    assert "ended at frame 4 of the 24 it announces" in caplog.text, caplog.text


def test_a_video_closed_amid_damaged_frames_reads_from_its_start_when_opened_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The damaged frames still to be reported and the frame after them belong to the read that closed: reopened
    # (another stream on the same source), the file is read afresh.
    from unetrt.stream import sources

    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: FakeFileCapture([True, False, False, True, True]))
    source = VideoCaptureSource(SourceSpec("video", "clip.mp4", live=False))
    source.open()
    assert int(source.read()[0, 0, 0]) == 0
    with pytest.raises(CorruptFrameError, match="frame 1 "):
        source.read()
    source.close()
    source.open()
    assert _read_reporting(source) == ([0, 3, 4], [1, 2])


class _QuietHandler(SimpleHTTPRequestHandler):
    """Python's own file server, which answers a range request with the whole file, without its log lines."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class _RangeHandler(_QuietHandler):
    """Serves files with HTTP range requests, as a web server or object store does."""

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if asked is None:
            start, end = 0, len(data) - 1
            self.send_response(200)
        else:
            start = int(asked.group(1))
            end = min(int(asked.group(2) or len(data) - 1), len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with contextlib.suppress(ConnectionError):  # FFmpeg hangs up once it has what it wants
            self.wfile.write(data[start : end + 1])


@contextlib.contextmanager
def serving(folder: Path, handler: type[SimpleHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_video_over_http_is_read_whole_as_a_stored_file() -> None:
    clip = sample_clip()
    expected = read_all(open_source(str(clip)))
    with serving(clip.parent, _RangeHandler) as address:
        source = open_source(f"{address}/{clip.name}?token=abc", open_timeout=10.0)
        assert not source.live  # no frame dropped, the end is the end (not a reconnect)
        frames = read_all(source)
    assert len(frames) == len(expected) == 101
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected))


def test_a_video_over_http_without_range_requests_is_one_line_naming_the_fix() -> None:
    # The clip's index is at its end (as ffmpeg and most encoders write it): FFmpeg seeks there with a range
    # request, which Python's own server answers with the whole file from its first byte.
    clip = sample_clip()
    with serving(clip.parent, _QuietHandler) as address:
        source = open_source(f"{address}/{clip.name}", open_timeout=10.0)
        with pytest.raises(SourceError, match=r"answers HTTP range requests .* -movflags \+faststart"):
            read_all(source)
        source.close()


def test_a_live_http_stream_stays_live() -> None:
    assert open_source("http://192.168.1.20:8080/video").live
    assert open_source("https://cam.example/live.m3u8").live
