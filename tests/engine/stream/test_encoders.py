"""Output videos: H.264 where an encoder exists (checked with ffprobe), MPEG-4 Part 2 with a warning where not."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from stream_helpers import count_video_frames

from unetrt.stream import encoders
from unetrt.stream.cli import main
from unetrt.stream.sinks import VideoFileSink


def _probe_codec(path: Path) -> str:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("needs ffprobe (apt-get install ffmpeg)")
    out = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return out.strip()


def _h264_encoder_present(tmp_path: Path) -> bool:
    if encoders.ffmpeg_with_libx264() is not None:
        return True
    try:
        encoders.OpenCVEncoder(tmp_path / "probe.mp4", "avc1", encoders.H264, 10.0, (64, 48)).release()
    except OSError:
        return False
    return True


def test_main_job_writes_h264(tmp_path: Path) -> None:
    if not _h264_encoder_present(tmp_path):
        pytest.skip("no H.264 encoder here (neither OpenCV's FFmpeg nor ffmpeg with libx264)")
    out, stats = tmp_path / "camvid_annotated.mp4", tmp_path / "stats.json"
    assert main(["sample", str(out), "--model", "camvid", "--max-frames", "6", "--legend", "--stats", str(stats)]) == 0
    assert _probe_codec(out) == "h264"
    assert json.loads(stats.read_text())["output_codec"] == "h264"


def test_without_h264_encoder_falls_back_to_mpeg4_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    real_opencv_encoder = encoders.OpenCVEncoder

    def opencv_without_h264(path: Path, fourcc: str, codec: str, fps: float, size: tuple[int, int]) -> object:
        if fourcc == "avc1":
            raise OSError("no avc1 in this test")
        return real_opencv_encoder(path, fourcc, codec, fps, size)

    monkeypatch.setattr(encoders, "OpenCVEncoder", opencv_without_h264)
    monkeypatch.setattr(encoders, "ffmpeg_with_libx264", lambda: None)
    sink = VideoFileSink(tmp_path / "out.mp4", fps=10)
    with caplog.at_level(logging.WARNING, logger="unetrt.stream.encoders"):
        for shade in range(3):
            sink.write(np.full((48, 64, 3), shade * 60, np.uint8))
        sink.close()
    assert sink.codec == encoders.MPEG4
    assert "MPEG-4 Part 2" in caplog.text
    assert _probe_codec(tmp_path / "out.mp4") == "mpeg4"


def test_a_video_that_cannot_be_opened_leaves_no_file_where_it_claimed_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without overwrite the sink creates the file before the encoder opens it (so that no other run can); an
    # encoder that then fails must not leave that empty file behind to block the next run as "exists".
    def no_encoder(path: Path, fps: float, size: tuple[int, int]) -> encoders.VideoEncoder:
        raise OSError("no encoder in this test")

    monkeypatch.setattr("unetrt.stream.sinks.open_video_encoder", no_encoder)
    sink = VideoFileSink(tmp_path / "out.mp4", fps=10, overwrite=False)
    with pytest.raises(OSError, match="no encoder"):
        sink.write(np.zeros((48, 64, 3), np.uint8))
    assert not (tmp_path / "out.mp4").exists()
    # A file already there belongs to someone else, even when empty: refused, and left in place.
    (tmp_path / "out.mp4").write_bytes(b"")
    with pytest.raises(OSError, match="created by another program"):
        VideoFileSink(tmp_path / "out.mp4", fps=10, overwrite=False).write(np.zeros((48, 64, 3), np.uint8))
    assert (tmp_path / "out.mp4").exists()


def test_a_video_sink_replaces_an_earlier_video_by_default_and_keeps_it_when_its_encoder_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # VideoFileSink(path) of the Python API replaces what is there (overwrite defaults to True); the empty-file
    # clean-up is for a file the sink itself claimed, never for an earlier video it was asked to replace.
    out = tmp_path / "out.avi"
    out.write_bytes(b"an earlier run's video")

    def no_encoder(path: Path, fps: float, size: tuple[int, int]) -> encoders.VideoEncoder:
        raise OSError("no encoder in this test")

    with monkeypatch.context() as patched:
        patched.setattr("unetrt.stream.sinks.open_video_encoder", no_encoder)
        with pytest.raises(OSError, match="no encoder"):
            VideoFileSink(out, fps=10).write(np.zeros((48, 64, 3), np.uint8))
    assert out.read_bytes() == b"an earlier run's video"
    sink = VideoFileSink(out, fps=10)
    sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.close()
    assert count_video_frames(out) == 1


def test_a_name_that_is_not_utf8_never_reaches_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # cv2.VideoWriter crashed the process (a segmentation fault) on such a name.
    class Refused:
        fourcc = staticmethod(cv2.VideoWriter.fourcc)

        def __init__(self, *args: object) -> None:
            raise AssertionError("OpenCV was handed the name")

    monkeypatch.setattr(encoders.cv2, "VideoWriter", Refused)
    for name in (b"o\xfe.avi", b"o\xfe.mp4"):
        with pytest.raises(ValueError, match="has a name that is not valid UTF-8"):
            encoders.open_video_encoder(tmp_path / os.fsdecode(name), 10.0, (64, 48))


def test_odd_sized_frames_make_a_playable_h264_file_at_the_rate_asked_for(tmp_path: Path) -> None:
    ffmpeg = encoders.ffmpeg_with_libx264()
    if ffmpeg is None:
        pytest.skip("needs ffmpeg with libx264")
    encoder = encoders.FfmpegH264Encoder(ffmpeg, tmp_path / "odd.mp4", 25.0, (65, 47))
    for shade in range(4):
        encoder.write(np.full((47, 65, 3), shade * 50, np.uint8))
    encoder.release()
    assert _probe_codec(tmp_path / "odd.mp4") == "h264"
    # --output-fps (or the source's rate) is the file's rate: at another one it plays too fast or too slow.
    capture = cv2.VideoCapture(str(tmp_path / "odd.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    capture.release()


def test_h264_keeps_the_colours_and_pads_odd_sides(tmp_path: Path) -> None:
    ffmpeg = encoders.ffmpeg_with_libx264()
    if ffmpeg is None:
        pytest.skip("needs ffmpeg with libx264")
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (40, 120, 200)]  # BGR
    encoder = encoders.FfmpegH264Encoder(ffmpeg, tmp_path / "colours.mp4", 10.0, (65, 47))
    for colour in colours:
        encoder.write(np.full((47, 65, 3), colour, np.uint8))
    encoder.release()
    capture = cv2.VideoCapture(str(tmp_path / "colours.mp4"))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    assert len(decoded) == len(colours)
    for colour, frame in zip(colours, decoded, strict=True):
        assert frame.shape == (48, 66, 3)
        inside = frame[8:40, 8:56].reshape(-1, 3).mean(axis=0)
        assert np.abs(inside - np.array(colour)).max() < 8, (colour, inside)
        # The padding is black in luma; its chroma is shared with the last real row and column (4:2:0).
        luma = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV)[..., 0]
        assert luma[47, 8:56].max() < luma[46, 8:56].min() or luma[46, 8:56].max() < 40


def test_avi_is_motion_jpeg(tmp_path: Path) -> None:
    sink = VideoFileSink(tmp_path / "out.avi", fps=10)
    sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.close()
    assert sink.codec == encoders.MJPEG
    # The output checks take OUT.AVI as a video; its suffix picks the codec whatever its case.
    shouting = encoders.open_video_encoder(tmp_path / "OUT.AVI", 10.0, (64, 48))
    shouting.release()
    assert shouting.codec == encoders.MJPEG


def test_the_encoder_runs_below_this_process_priority(tmp_path: Path) -> None:
    ffmpeg = encoders.ffmpeg_with_libx264()
    if ffmpeg is None or not hasattr(os, "getpriority"):
        pytest.skip("needs ffmpeg with libx264 and POSIX priorities")
    encoder = encoders.FfmpegH264Encoder(ffmpeg, tmp_path / "nice.mp4", 10.0, (64, 48))
    try:
        expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + encoders.ENCODER_NICENESS)
        assert os.getpriority(os.PRIO_PROCESS, encoder._process.pid) == expected
    finally:
        encoder.write(np.zeros((48, 64, 3), np.uint8))
        encoder.release()


def test_an_existing_mp4_is_replaced_by_ffmpeg(tmp_path: Path) -> None:
    # The output checks refuse an existing file unless --overwrite; once allowed, ffmpeg must not stop to ask.
    ffmpeg = encoders.ffmpeg_with_libx264()
    if ffmpeg is None:
        pytest.skip("needs ffmpeg with libx264")
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    encoder = encoders.FfmpegH264Encoder(ffmpeg, out, 10.0, (64, 48))
    for shade in range(3):
        encoder.write(np.full((48, 64, 3), shade * 60, np.uint8))
    encoder.release()
    assert _probe_codec(out) == "h264"
    assert count_video_frames(out) == 3


@pytest.mark.skipif(os.name == "nt", reason="the stand-in ffmpeg is a shell script")
@pytest.mark.parametrize(("ending", "words"), [
    # ffmpeg takes every frame, then cannot finish the file: the video is not whole, and release() says so.
    ("echo 'Conversion failed!' >&2\nexit 1\n", r"\(exit 1\): Conversion failed!"),
    # The out-of-memory killer ends ffmpeg with SIGKILL: its exit status is negative, and the file has no index.
    ("kill -9 $$\n", r"\(exit -9\)"),
], ids=["fails", "killed"])
def test_an_ffmpeg_that_does_not_finish_the_file_is_an_error(tmp_path: Path, ending: str, words: str) -> None:
    stand_in = tmp_path / "ffmpeg"
    stand_in.write_text("#!/bin/sh\ncat > /dev/null\n" + ending)
    stand_in.chmod(0o755)
    encoder = encoders.FfmpegH264Encoder(str(stand_in), tmp_path / "out.mp4", 10.0, (64, 48))
    encoder.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(OSError, match=r"ffmpeg failed to write .*out\.mp4' " + words):
        encoder.release()


def test_opening_an_encoder_gives_the_process_its_stderr_back(tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    # The probe silences file descriptor 2 while OpenCV opens the file; every later error message needs it back.
    encoders.open_video_encoder(tmp_path / "out.avi", 10.0, (64, 48)).release()
    os.write(2, b"written after the probe\n")
    assert "written after the probe" in capfd.readouterr().err
