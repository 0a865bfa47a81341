"""Live cameras as a Jetson user meets them: a USB camera's pixel format and size (OpenCV's V4L2 backend driven by
a fake that answers as a UVC camera on USB 2 does), a CSI camera whose Argus session fails after it opened, and a
camera unplugged mid-run, which still leaves the summary of what was streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from unetrt.stream import SourceError, VideoCaptureSource, sources
from unetrt.stream.cli import main
from unetrt.stream.sources import MJPG, IterableSource, fourcc_text
from unetrt.stream.uri import SourceSpec

YUYV = cv2.VideoWriter.fourcc(*"YUYV")
# A Logitech C920-like camera on USB 2: uncompressed 1280x720 fits 10 FPS into the bus, MJPG 30.
Modes = dict[int, dict[tuple[int, int], float]]
USB2_MODES: Modes = {
    YUYV: {(640, 480): 30.0, (1280, 720): 10.0},
    MJPG: {(640, 480): 30.0, (1280, 720): 30.0},
}


class FakeUsbCamera:
    """``cv2.VideoCapture(device, cv2.CAP_V4L2)`` of a UVC camera, as OpenCV's V4L2 backend drives one: it opens in
    YUYV at 640x480 (its formats tried in that order), keeps the size asked for and asks it again when the format
    changes, and the driver answers a size it lacks with its nearest one."""

    def __init__(self, modes: Modes) -> None:
        self.modes = modes
        self.fourcc = YUYV
        self.asked = (640, 480)
        self.pending_width: int | None = None
        self.size = self._nearest(self.asked)
        self.buffer_size: int | None = None
        self.released = False

    def _nearest(self, asked: tuple[int, int]) -> tuple[int, int]:
        return min(self.modes[self.fourcc], key=lambda size: abs(size[0] * size[1] - asked[0] * asked[1]))

    def isOpened(self) -> bool:  # noqa: N802  (OpenCV's name)
        return True

    def set(self, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_BUFFERSIZE:
            self.buffer_size = int(value)
            return True
        if prop == cv2.CAP_PROP_FOURCC:
            if int(value) not in self.modes:
                return False  # OpenCV restores the format it had
            self.fourcc = int(value)
        elif prop == cv2.CAP_PROP_FRAME_WIDTH:
            self.pending_width = int(value)
            return True
        elif prop == cv2.CAP_PROP_FRAME_HEIGHT and self.pending_width is not None:
            self.asked, self.pending_width = (self.pending_width, int(value)), None
        else:
            return False
        self.size = self._nearest(self.asked)
        return True

    def get(self, prop: int) -> float:
        values = {cv2.CAP_PROP_FOURCC: float(self.fourcc), cv2.CAP_PROP_FRAME_WIDTH: float(self.size[0]),
                  cv2.CAP_PROP_FRAME_HEIGHT: float(self.size[1]), cv2.CAP_PROP_FPS: self.modes[self.fourcc][self.size]}
        return values.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray]:
        return True, np.zeros((self.size[1], self.size[0], 3), np.uint8)

    def release(self) -> None:
        self.released = True


def _open_camera(monkeypatch: pytest.MonkeyPatch, size: tuple[int, int] | None,
                 modes: Modes = USB2_MODES, location: str = "/dev/video1",
                 opened: list[tuple[object, ...]] | None = None) -> tuple[VideoCaptureSource, FakeUsbCamera]:
    """Open ``location`` as a camera on a :class:`FakeUsbCamera`; ``opened`` collects cv2.VideoCapture's arguments."""
    camera = FakeUsbCamera(modes)
    calls = [] if opened is None else opened
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: calls.append(args) or camera)
    source = VideoCaptureSource(SourceSpec("camera", location, live=True), size)
    source.open()
    return source, camera


def test_a_camera_index_opens_that_v4l2_device_with_a_one_frame_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenCV's other backends (GStreamer on JetPack's OpenCV) take an index too, but not the V4L2 controls below;
    # a deeper driver queue hands the capture thread frames that are seconds old on a slow Jetson.
    opened: list[tuple[object, ...]] = []
    _, camera = _open_camera(monkeypatch, None, location="2", opened=opened)
    assert opened == [(2, cv2.CAP_V4L2)]
    assert camera.buffer_size == 1


def test_closing_a_camera_releases_its_device(monkeypatch: pytest.MonkeyPatch) -> None:
    source, camera = _open_camera(monkeypatch, (640, 480))
    source.close()
    assert camera.released


def test_a_usb_camera_runs_mjpg_where_uncompressed_frames_come_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    source, camera = _open_camera(monkeypatch, (1280, 720))
    assert fourcc_text(camera.fourcc) == "MJPG" and camera.size == (1280, 720)
    assert source.fps == 30.0


@pytest.mark.parametrize(("modes", "size"), [
    (USB2_MODES, (640, 480)),
    ({YUYV: USB2_MODES[YUYV]}, (1280, 720)),
    ({YUYV: USB2_MODES[YUYV], MJPG: {(640, 480): 30.0, (1920, 1080): 30.0}}, (1280, 720)),
    ({YUYV: USB2_MODES[YUYV], MJPG: USB2_MODES[YUYV]}, (1280, 720)),
], ids=["as fast", "no MJPG", "MJPG at other sizes only", "MJPG as slow"])
def test_a_usb_camera_keeps_its_format_where_mjpg_is_no_faster_or_missing(
        monkeypatch: pytest.MonkeyPatch, modes: Modes, size: tuple[int, int]) -> None:
    source, camera = _open_camera(monkeypatch, size, modes)
    assert fourcc_text(camera.fourcc) == "YUYV" and camera.size == size
    assert source.fps == modes[YUYV][size]


def test_a_size_the_camera_lacks_is_reported_once(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    source, _ = _open_camera(monkeypatch, (1920, 1080))
    source.close()
    source.open()  # a reconnect does not repeat it
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == ["/dev/video1 delivers 1280x720 MJPG at 30 FPS, not the 1920x1080 asked for "
                        "(--input-width/--input-height): its frames are resized to 1920x1080; list the sizes it has "
                        "with v4l2-ctl -d /dev/video1 --list-formats-ext"]


class EndedCapture:
    """A ``cv2.VideoCapture`` of a GStreamer pipeline that started and ended at once: nvarguscamerasrc's
    "Failed to create CaptureSession" (nvargus-daemon down, or the sensor held by another process) is an EOS."""

    def isOpened(self) -> bool:  # noqa: N802  (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def read(self) -> tuple[bool, None]:
        return False, None

    def release(self) -> None:
        pass


def test_a_csi_camera_opens_the_sensor_and_size_asked_for_through_gstreamer(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[object, ...]] = []
    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: opened.append(args) or EndedCapture())
    VideoCaptureSource(SourceSpec("csi", "1", live=True), (1920, 1080)).open()
    assert opened == [(sources.csi_pipeline(1, (1920, 1080)), cv2.CAP_GSTREAMER)]


def test_a_csi_camera_that_opens_but_sends_no_frame_says_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: EndedCapture())
    source = VideoCaptureSource(SourceSpec("csi", "0", live=True), (3264, 2464))
    source.open()
    with pytest.raises(SourceError) as error:
        source.read()
    assert str(error.value) == (
        "'csi://0' opened but sent no frame; check that a camera is connected as sensor 0, that it has a mode of "
        "3264x2464 at 30 FPS (--input-width/--input-height; 1280x720 suits most sensors), that no other program "
        "uses it, and restart the camera daemon: sudo systemctl restart nvargus-daemon")


def _unplugged_after(frames: int) -> Iterator[np.ndarray]:
    for _ in range(frames):
        yield np.zeros((48, 64, 3), np.uint8)
    raise OSError("No such device")  # the USB camera is gone


def test_a_camera_unplugged_mid_run_still_gets_its_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           tiny_model_files: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.stream import pipeline

    camera = IterableSource(lambda: _unplugged_after(5), live=True, name="/dev/video1")
    monkeypatch.setattr(pipeline, "open_source", lambda *args: camera)
    stats, out = tmp_path / "run.json", tmp_path / "frames"
    code = main(["/dev/video1", str(out), "--model", str(tiny_model_files["onnx"]), "--threads", "1",
                 "--max-reconnects", "0", "--stats", str(stats)])
    captured = capsys.readouterr()
    assert code == 2
    summary = json.loads(stats.read_text())
    assert summary["processed"] >= 1 and summary["written"] == summary["processed"] == len(list(out.glob("*.png")))
    assert "processed" in captured.out
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("error: /dev/video1 failed and did not come back after 0 attempts"), captured.err


def test_a_source_that_never_streamed_gets_no_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      tiny_model_files: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.stream import pipeline

    camera = IterableSource(lambda: _unplugged_after(0), live=True, name="/dev/video1")
    monkeypatch.setattr(pipeline, "open_source", lambda *args: camera)
    stats = tmp_path / "run.json"
    code = main(["/dev/video1", "--headless", "--model", str(tiny_model_files["onnx"]), "--threads", "1",
                 "--max-reconnects", "0", "--stats", str(stats)])
    captured = capsys.readouterr()
    assert code == 2 and not stats.exists() and "processed" not in captured.out
    assert len(captured.err.strip().splitlines()) == 1, captured.err
