"""Frame sources: cameras, CSI sensors, network streams, video files, image folders and Python iterables
(ROS 2 bags: :mod:`unetrt.stream.rosbag`).

Every source has the same small life cycle: :meth:`open`, :meth:`read` until it
returns None (end of stream), :meth:`close`. A live source that fails raises
:class:`SourceError`; the capture thread then closes and reopens it with backoff.
A frame that cannot be decoded raises :class:`CorruptFrameError` and is skipped.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from ..datasets import check_single_page
from ..paths import check_utf8_name
from ..preprocessing import check_frame
from .uri import IMAGE_SUFFIXES, SourceSpec, parse_source

log = logging.getLogger(__name__)

# A video file that fails this many reads in a row before its announced frame count has ended.
MAX_CONSECUTIVE_FILE_FAILURES = 10
DEFAULT_CSI_CAPTURE = (1280, 720, 30)
# A network stream still opening after this long gets a log line saying what it waits for.
SLOW_OPEN_NOTICE_S = 3.0
# The rate OpenCV's V4L2 backend asks a camera for when it opens it (DEFAULT_V4L_FPS).
V4L2_ASKED_FPS = 30.0
MJPG = cv2.VideoWriter.fourcc(*"MJPG")


class SourceError(ConnectionError):
    """A source could not be opened or stopped delivering frames (a live one is reopened).

    Example:
        >>> try:  # doctest: +SKIP
        ...     Stream("/dev/video9", "camvid").run()
        ... except SourceError as error:
        ...     print(error)  # names the camera and what to check
    """


class CorruptFrameError(ValueError):
    """One frame could not be decoded or is malformed; the stream skips it.

    Example:
        >>> def read(self) -> np.ndarray | None:  # in a FrameSource of one's own
        ...     frame = self.sdk.grab()
        ...     if frame.size == 0:  # skipped and counted; the stream goes on with the next frame
        ...         raise CorruptFrameError("the camera SDK returned an empty frame")
        ...     return frame
    """


@runtime_checkable
class FrameSource(Protocol):
    """Where frames come from.

    A source that decodes its frames itself may also say in which colour order, as a ``color_order`` attribute
    ('bgr' for unetrt's OpenCV and ROS 2 bag sources): a :class:`~unetrt.stream.Stream` refuses it with a
    segmenter that takes the other order. Without one, the frames are taken to be in the segmenter's order. A live
    source that can never be opened again after a failure says so with ``reopenable = False`` (a plain iterable): it
    then ends the stream at its first failure rather than being retried for ever.

    A source whose every read returns a new array that it never writes again may say so with ``fresh_frames =
    True`` (unetrt's own sources do); the stream copies the frames of any other source as it reads them, since it
    reads ahead of inference and a source may fill one buffer again for every frame (a camera SDK's).

    Attributes:
        name: the source in words, for logs and the summary.
        live: frames arrive in real time (a camera): stale ones may be dropped to bound latency.
        fps: the nominal frame rate when known, else None.

    Example:
        >>> class SdkCamera:  # a camera SDK that fills one buffer again for every frame
        ...     name, live, fps = "sdk camera 0", True, 30.0
        ...     def open(self) -> None:
        ...         self.buffer = np.zeros((480, 640, 3), np.uint8)
        ...     def read(self) -> np.ndarray | None:
        ...         return self.buffer  # the SDK's grab fills it here
        ...     def close(self) -> None:
        ...         del self.buffer
        >>> isinstance(SdkCamera(), FrameSource)
        True
        >>> stream = Stream(SdkCamera(), "camvid")  # doctest: +SKIP
    """

    name: str
    live: bool
    fps: float | None

    def open(self) -> None:
        """Start delivering frames from the beginning (files) or from now (live sources).

        Raises:
            SourceError: when the device, stream or file cannot be opened.
        """
        ...

    def read(self) -> np.ndarray | None:
        """The next frame (HxWx3 colour, in the source's ``color_order`` where it has one, else the segmenter's; or
        HxW gray uint8), or None at the end of the stream.

        Raises:
            SourceError: when a live source stops delivering.
            CorruptFrameError: when this one frame is unusable.
        """
        ...

    def close(self) -> None:
        """Release the device or file (idempotent)."""
        ...


@runtime_checkable
class CountedSource(Protocol):
    """A source that knows how many frames it holds: ``frame_count`` (0: unknown; a video knows once open)."""

    frame_count: int


def stored_frame_count(source: FrameSource) -> int | None:
    """How many frames a stored source delivers in one pass, when it says (a video: once open); else None.

    Example:
        >>> stored_frame_count(IterableSource([])) is None
        True
    """
    if source.live or not isinstance(source, CountedSource) or source.frame_count <= 0:
        return None
    return int(source.frame_count)


def check_stream_frame(frame: object) -> np.ndarray:
    """Accept an OpenCV-style image; reject anything else as a corrupt frame.

    Raises:
        CorruptFrameError: naming what was wrong with it.

    Example:
        >>> check_stream_frame(np.zeros((2, 3, 1), np.uint8)).shape
        (2, 3)
    """
    # Cameras and files may deliver BGRA; a stream drops the alpha where Segmenter asks the caller to.
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    try:
        return check_frame(frame)
    except ValueError as error:
        raise CorruptFrameError(str(error)) from error


OPENCV_LOG_LEVEL_ERROR = 2  # cv::utils::logging::LOG_LEVEL_ERROR


def silence_video_library_logs() -> None:
    """Keep OpenCV's and FFmpeg's own log lines off stderr; the stream's log says what failed, in one line.

    A failed open of a network stream otherwise prints FFmpeg lines (``[tcp @ 0x...] Connection to
    tcp://... failed``) and OpenCV warnings (``VIDEOIO(FFMPEG): ... can't be used to capture by name``).
    OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` when it first starts FFmpeg, so call this before the
    first capture; a level set in the environment by the user is kept.

    Example:
        >>> silence_video_library_logs()
    """
    # -8 is FFmpeg's AV_LOG_QUIET: OpenCV then installs a log callback that passes nothing on.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if "OPENCV_LOG_LEVEL" in os.environ:
        return  # the user chose OpenCV's level
    # OpenCV 5 has only cv2.utils.logging.setLogLevel; Debian's and JetPack's OpenCV 4 builds have only
    # cv2.setLogLevel.
    logging_api = getattr(cv2.utils, "logging", None)
    set_level = getattr(cv2, "setLogLevel", None) if logging_api is None else logging_api.setLogLevel
    if set_level is not None:
        set_level(OPENCV_LOG_LEVEL_ERROR)


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines (needed for csi://)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def csi_pipeline(sensor: int, size: tuple[int, int] | None = None, fps: int | None = None) -> str:
    """The GStreamer pipeline that reads a Jetson CSI sensor through nvarguscamerasrc as BGR frames.

    Example:
        >>> csi_pipeline(0).startswith("nvarguscamerasrc sensor-id=0")
        True
    """
    width, height = size or DEFAULT_CSI_CAPTURE[:2]
    rate = fps or DEFAULT_CSI_CAPTURE[2]
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={rate}/1, format=NV12 ! "
        f"nvvidconv ! video/x-raw, width={width}, height={height}, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def fourcc_text(code: float) -> str:
    """A V4L2 pixel format code (``CAP_PROP_FOURCC``) as its four letters.

    Example:
        >>> fourcc_text(cv2.VideoWriter.fourcc(*"MJPG"))
        'MJPG'
    """
    value = int(code)
    return "".join(chr((value >> shift) & 0xFF) for shift in (0, 8, 16, 24)).strip("\x00 ") or "?"


def prefer_faster_format(capture: cv2.VideoCapture) -> None:
    """Switch an opened V4L2 camera to MJPG where that gives more frames per second at the same size.

    OpenCV's V4L2 backend tries YUYV before MJPG, and a USB 2 camera sends uncompressed 1280x720 or 1920x1080 at
    5 to 10 FPS only; in MJPG the same camera gives 30. A camera without MJPG at that size keeps its format
    (OpenCV restores it when the switch fails), and so does one that is as fast without it.

    Args:
        capture: an opened ``cv2.VideoCapture`` of a V4L2 camera, set to the size asked for.

    Example:
        >>> capture = cv2.VideoCapture("/dev/video0", cv2.CAP_V4L2)  # doctest: +SKIP
        >>> prefer_faster_format(capture)  # doctest: +SKIP
    """
    rate = capture.get(cv2.CAP_PROP_FPS)
    previous = capture.get(cv2.CAP_PROP_FOURCC)
    if int(previous) == MJPG or rate >= V4L2_ASKED_FPS:
        return
    size = (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not capture.set(cv2.CAP_PROP_FOURCC, MJPG):
        return
    # The driver answers a size its MJPG lacks with another one: a faster rate at another size is no gain.
    same_size = (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == size
    if not same_size or capture.get(cv2.CAP_PROP_FPS) <= rate:
        # OpenCV keeps the size asked for and asks it again with the old format: the camera is back as it was.
        capture.set(cv2.CAP_PROP_FOURCC, previous)


# How long closing a timed reader waits for a read in progress and the release after it.
RELEASE_WAIT_S = 5.0
# Reader threads still inside a read that was given up on. FFmpeg cannot be interrupted, so such a thread
# may outlive the stream; a command checks this before it exits (see :func:`reads_still_hung`).
_HUNG_READS: set[threading.Thread] = set()


def give_up_on(thread: threading.Thread) -> None:
    """Count ``thread``, left inside a capture read when its stream ended, as hung (see :func:`reads_still_hung`).

    Example:
        >>> give_up_on(capture_thread)  # doctest: +SKIP
    """
    _HUNG_READS.add(thread)


def reads_still_hung() -> bool:
    """Whether a capture read given up on (:class:`TimedReader`, or a stream's capture thread) is still blocked
    inside OpenCV.

    The interpreter's shutdown unwinds such a thread through OpenCV's C++ frames when the read returns, which
    aborts the process ("FATAL: exception not rethrown"); a command that sees True leaves with ``os._exit``.

    Example:
        >>> reads_still_hung()
        False
    """
    return any(thread.is_alive() for thread in _HUNG_READS)


class TimedReader:
    """Reads a ``cv2.VideoCapture`` in a thread of its own, so a read that hangs can be given up on.

    FFmpeg's read timeout does not bound a read from a frozen RTSP server (one that keeps its connection
    open but sends nothing): a SIGSTOPped server was noticed after 20 s with a 10 s timeout, 9 s with 3 s.
    The thread owns the capture from here on and releases it when it ends; a read given up on ends
    when FFmpeg's own timeout fires.

    Example (``read`` gives None instead after 10 s without a frame):
        >>> reader = TimedReader(capture)  # doctest: +SKIP
        >>> ok, frame = reader.read(timeout=10.0)  # doctest: +SKIP
    """

    def __init__(self, capture: cv2.VideoCapture) -> None:
        self._capture = capture
        self._request = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._result: tuple[bool, np.ndarray | None] = (False, None)
        self._abandoned = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="unetrt-capture-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                self._request.wait()
                self._request.clear()
                if self._closing:
                    return
                ok, frame = self._capture.read()
                with self._lock:
                    self._result = (bool(ok), frame)
                    self._done.set()
                    if self._abandoned:
                        return
        finally:
            self._capture.release()

    def read(self, timeout: float) -> tuple[bool, np.ndarray | None] | None:
        """The capture's next ``(ok, frame)``, or None when none came within ``timeout`` seconds.

        After None the reader is abandoned: make a new capture.
        """
        self._done.clear()
        self._request.set()
        if not self._done.wait(timeout):
            with self._lock:
                if not self._done.is_set():
                    self._abandoned = True
                    give_up_on(self._thread)
                    return None
        return self._result

    def release(self, wait: float = RELEASE_WAIT_S) -> None:
        """Release the capture once no read is in progress (at once when idle); idempotent.

        Waits up to ``wait`` seconds for the reader thread to end: its read, then the release (an RTSP
        capture's says goodbye to the server over the network). A thread still in them after that counts as
        hung (:func:`reads_still_hung`): returning from OpenCV into an interpreter that has shut down aborts
        the process ("terminate called without an active exception", seen in 2 of 39 runs of the RTSP test
        under load before this wait).
        """
        self._closing = True
        self._request.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(wait)
            if self._thread.is_alive():
                give_up_on(self._thread)


class VideoCaptureSource:
    """A camera, CSI sensor, network stream or video file read through ``cv2.VideoCapture``.

    Args:
        spec: what to open (from :func:`unetrt.stream.uri.parse_source`).
        size: ``(width, height)`` to ask a camera for; None keeps its default.
        open_timeout: seconds a network stream may take to open, and to deliver each frame, before it
            counts as failed (None: FFmpeg's default, 30 s). Past ``SLOW_OPEN_NOTICE_S`` a log line says
            the open is still waiting.

    Raises:
        ValueError: for csi:// when OpenCV was built without GStreamer, or a location that is not valid UTF-8
            (OpenCV would crash on it).

    Example:
        >>> source = VideoCaptureSource(parse_source("clip.mp4"))  # doctest: +SKIP
    """

    color_order = "bgr"  # OpenCV decodes to BGR
    fresh_frames = True  # VideoCapture.read() returns a new array every time

    def __init__(self, spec: SourceSpec, size: tuple[int, int] | None = None,
                 open_timeout: float | None = None) -> None:
        if open_timeout is not None and not open_timeout > 0:
            raise ValueError(f"open timeout must be a positive number of seconds, got {open_timeout}")
        if spec.kind not in ("camera", "csi", "rtsp", "video"):
            raise ValueError(f"VideoCaptureSource cannot open a {spec.kind!r} source")
        check_utf8_name(spec.location, "input")
        if spec.kind == "csi" and not opencv_has_gstreamer():
            raise ValueError(
                "csi:// needs OpenCV built with GStreamer (cv2.getBuildInformation() says 'GStreamer: NO'); "
                "on a Jetson use the system OpenCV from JetPack (apt package nvidia-opencv), not opencv-python from pip"
            )
        self.spec = spec
        self.size = size
        self.open_timeout = open_timeout
        self.live = spec.live
        self.name = spec.location if spec.kind != "csi" else f"csi://{spec.location}"
        self.fps: float | None = None
        self._capture: cv2.VideoCapture | None = None
        # A network stream is read through a TimedReader, so a frozen server is noticed within open_timeout.
        self._reader: TimedReader | None = None
        # Frames the file announces, read when it opens (0: unknown, a live source, or not open yet).
        self.frame_count = 0
        self._frames_read = 0
        # Reads that gave no frame, in all: with the frames read, where in the file the next read is.
        self._skipped = 0
        # A file's failed reads that a later frame showed to be damaged frames, each still to be reported, and that
        # later frame, returned after them.
        self._damaged: deque[int] = deque()
        self._held: np.ndarray | None = None
        # The camera mode last warned about, so a camera reopened after a failure does not repeat the warning.
        self._warned_mode: str | None = None

    def open(self) -> None:
        """Open the device, stream or file.

        Raises:
            SourceError: when OpenCV cannot open it.
        """
        self.close()
        notice = self._slow_open_notice()
        try:
            capture = self._make_capture()
        finally:
            if notice is not None:
                notice.cancel()
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.spec.kind} {self.name!r}" + self._open_hint())
        if self.spec.kind == "camera":
            prefer_faster_format(capture)
            self._report_camera_mode(capture)
        rate = capture.get(cv2.CAP_PROP_FPS)
        self.fps = rate if 0 < rate < 1000 else None
        self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not self.live else 0
        self._frames_read = 0
        self._skipped = 0
        if self.spec.kind == "rtsp" and self.open_timeout is not None:
            self._reader = TimedReader(capture)
        else:
            self._capture = capture

    def _make_capture(self) -> cv2.VideoCapture:
        kind, location = self.spec.kind, self.spec.location
        if kind == "csi":
            return cv2.VideoCapture(csi_pipeline(int(location), self.size), cv2.CAP_GSTREAMER)
        if kind == "camera":
            capture = cv2.VideoCapture(int(location) if location.isdigit() else location, cv2.CAP_V4L2)
            # The capture thread always takes the newest frame; a deep driver queue would only add latency.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if self.size is not None:
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            return capture
        if kind == "rtsp":
            params: list[int] = []
            if self.open_timeout is not None:
                milliseconds = round(self.open_timeout * 1000)
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds, cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds]
            return cv2.VideoCapture(location, cv2.CAP_FFMPEG, params)
        return cv2.VideoCapture(location)

    def _slow_open_notice(self) -> threading.Timer | None:
        """A host that does not answer keeps OpenCV silent until the timeout: say so while it waits."""
        if self.spec.kind != "rtsp":
            return None
        limit = f"{self.open_timeout:g} s" if self.open_timeout is not None else "FFmpeg's default of 30 s"
        notice = threading.Timer(SLOW_OPEN_NOTICE_S, log.warning, args=(
            "still connecting to %s after %.0f s: no answer yet; giving up after %s (--open-timeout)",
            self.name, SLOW_OPEN_NOTICE_S, limit))
        notice.daemon = True
        notice.start()
        return notice

    def _open_hint(self) -> str:
        if self.spec.kind == "camera":
            return "; check the device exists (ls /dev/video*) and is not in use by another program"
        if self.spec.kind == "video":
            return "; the file may be damaged or use a codec this OpenCV build cannot decode"
        if self.spec.kind == "csi":
            # Argus picks the sensor mode nearest the caps asked for; without one at that rate the pipeline fails.
            mode = ("" if self.size is None else f", that it has a mode of {self.size[0]}x{self.size[1]} at "
                    f"{DEFAULT_CSI_CAPTURE[2]} FPS (--input-width/--input-height; 1280x720 suits most sensors)")
            # Argus serves every CSI camera through one daemon, which a crashed client can leave holding a sensor.
            return (f"; check that a camera is connected as sensor {self.spec.location}{mode}, that no other program "
                    "uses it, and restart the camera daemon: sudo systemctl restart nvargus-daemon")
        if self.spec.kind == "rtsp" and not self.live:
            # FFmpeg seeks to an .mp4's index, which ffmpeg and most encoders write at the end of the file.
            return ("; check the address, and that the server answers HTTP range requests (python -m http.server "
                    "does not) or that the file has its index first (ffmpeg -i IN -c copy -movflags +faststart OUT)")
        if self.spec.kind == "rtsp":
            return ("; check the address and that the server is up and serving it (--wait SECONDS waits for a "
                    "stream that is still starting)")
        return ""

    def _report_camera_mode(self, capture: cv2.VideoCapture) -> None:
        """Log the mode a V4L2 camera runs in; warn (once per mode) when it is not the size asked for.

        A driver answers a size it lacks with its nearest one and OpenCV says nothing; the capture then resizes
        every frame to the size asked for, so without this line an upscaled 640x480 passes for 1920x1080.
        """
        width, height = round(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), round(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        pixel_format = fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
        mode = f"{width}x{height} {pixel_format} at {capture.get(cv2.CAP_PROP_FPS):g} FPS"
        log.info("%s delivers %s", self.name, mode)
        if self.size is None or (width, height) == tuple(self.size) or mode == self._warned_mode:
            return
        self._warned_mode = mode
        log.warning("%s delivers %s, not the %dx%d asked for (--input-width/--input-height): its frames are resized "
                    "to %dx%d; list the sizes it has with v4l2-ctl -d %s --list-formats-ext", self.name, mode,
                    *self.size, *self.size, self.spec.location)

    def read(self) -> np.ndarray | None:
        """The next frame; None when a file has ended.

        Raises:
            SourceError: when a live source delivers nothing, the source is not open, or not one frame of a file
                decodes.
            CorruptFrameError: when a file frame fails to decode before the file's end (one a later frame
                follows).
        """
        if self._damaged:
            raise CorruptFrameError(f"frame {self._damaged.popleft()} of {self.name!r} did not decode")
        if self._held is not None:
            held, self._held = self._held, None
            return held
        ok, frame = self._read_once()
        if ok and frame is not None:
            self._frames_read += 1
            return frame
        if self.live:
            if self._frames_read == 0:
                # A CSI camera whose Argus session fails (nvargus-daemon down, the sensor held by another process)
                # opens and then ends at once: the first read, not the open, is where the hint belongs.
                raise SourceError(f"{self.name!r} opened but sent no frame" + self._open_hint())
            raise SourceError(f"{self.name!r} stopped delivering frames")
        return self._read_past_failure()

    def _read_once(self) -> tuple[bool, np.ndarray | None]:
        """One read of the capture, through the reader thread for a network stream.

        Raises:
            SourceError: when the source is not open, or a network stream sends nothing within ``open_timeout``.
        """
        if self._reader is not None:
            assert self.open_timeout is not None
            outcome = self._reader.read(self.open_timeout)
            if outcome is None:
                self._reader = None  # it releases the capture once FFmpeg's read returns
                raise SourceError(f"{self.name!r} sent no frame for {self.open_timeout:g} s (--open-timeout); "
                                  "the server or camera may be frozen")
            return outcome
        if self._capture is not None:
            return self._capture.read()
        raise SourceError(f"source {self.name!r} is not open")

    def _read_past_failure(self) -> np.ndarray | None:
        """After a file's failed read: read on until a frame decodes (the failed reads were damaged frames, reported
        one by one before it) or the file ends (they were its end; None).

        Only a later frame tells a damaged frame from the end: a file cut short (a recording whose writer died) was
        reported as its first 9 missing frames, each "did not decode", and counted as corrupt.

        Raises:
            CorruptFrameError: for the first damaged frame (:meth:`read` reports the others, then the frame).
            SourceError: when not one frame of a file that announces frames decodes.
        """
        failed: list[int] = []
        ok, frame = False, None
        while not (ok and frame is not None):
            position = self._frames_read + self._skipped
            self._skipped += 1
            failed.append(position)
            # Not the last announced frame: counts are often one more than the frames a file holds.
            if position + 1 >= self.frame_count or len(failed) >= MAX_CONSECUTIVE_FILE_FAILURES:
                self._report_early_end(failed[0])
                return None
            ok, frame = self._read_once()
        self._frames_read += 1
        self._held = frame
        self._damaged.extend(failed[1:])
        raise CorruptFrameError(f"frame {failed[0]} of {self.name!r} did not decode")

    def _report_early_end(self, position: int) -> None:
        """Say, once, that a file ended at ``position`` before the frames it announces.

        Raises:
            SourceError: when no frame decoded at all.
        """
        if self._frames_read == 0 and self.frame_count <= 0:
            # No count announced (a file over HTTP whose index could not be read): ending here would report an
            # empty stream as a finished one.
            raise SourceError(f"{self.name!r} opened but sent no frame" + self._open_hint())
        if position + 1 >= self.frame_count:
            return  # the file's own end
        if self._frames_read == 0:
            raise SourceError(f"{self.name!r} has no frame that decodes (none of the {self.frame_count} it "
                              "announces)" + self._open_hint())
        log.warning("%r ended at frame %d of the %d it announces: the rest did not decode (a file cut short, or "
                    "damaged at its end)", self.name, position, self.frame_count)

    def close(self) -> None:
        """Release the capture (idempotent)."""
        self._damaged.clear()
        self._held = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        if self._reader is not None:
            self._reader.release()
            self._reader = None


class ImageSequenceSource:
    """The images of a folder or glob, in name order.

    Args:
        location: a folder (every image file in it) or a glob such as ``frames/*.png``.

    Raises:
        FileNotFoundError: when no image matches.
        ValueError: when an image's name is not valid UTF-8 (OpenCV would crash on it): refused here, with the
            name, rather than skipped as a frame that does not decode, since renaming it is the fix; or when an
            image is a TIFF of several pages, of which OpenCV would read only the first
            (:func:`unetrt.datasets.check_single_page`).

    Example:
        >>> source = ImageSequenceSource("camvid/val")  # doctest: +SKIP
    """

    live = False
    fps: float | None = None
    color_order = "bgr"  # cv2.imread decodes to BGR
    fresh_frames = True  # every image is decoded into a new array

    def __init__(self, location: str | Path) -> None:
        path = Path(location)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files = [path]
        else:
            files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"no images in {str(location)!r} (suffixes: {', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            check_utf8_name(file, "image")
            check_single_page(file, "image")
        self.name = str(location)
        self.files = files
        self.frame_count = len(files)
        self._next: int | None = None

    def open(self) -> None:
        """Start again from the first image."""
        self._next = 0

    def read(self) -> np.ndarray | None:
        """The next image; None after the last.

        Raises:
            SourceError: when the source is not open.
            CorruptFrameError: when an image file cannot be decoded.
        """
        if self._next is None:
            raise SourceError(f"source {self.name!r} is not open")
        if self._next >= len(self.files):
            return None
        path = self.files[self._next]
        self._next += 1
        frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if frame is None:
            raise CorruptFrameError(f"cannot decode image {str(path)!r}")
        if frame.dtype == np.uint16:
            frame = cv2.convertScaleAbs(frame, alpha=1 / 256)
        return frame

    def close(self) -> None:
        """Forget the position (idempotent)."""
        self._next = None


FrameIterable = Iterable[np.ndarray]


class IterableSource:
    """Frames from Python: a list, a generator, or a function returning a fresh iterable.

    A function can be reopened (after a failure, or to loop); a plain iterable is read once. Each frame is copied
    as it is read, so the iterable may fill one buffer again for every frame.

    Args:
        frames: the frames, or a zero-argument function that returns them.
        live: frames arrive in real time (a camera loop): stale ones may be dropped.
        fps: the nominal rate, used as the output video's rate.
        name: how logs and the summary call it.

    Example:
        >>> source = IterableSource(lambda: (np.zeros((4, 4, 3), np.uint8) for _ in range(3)))
        >>> source.open(); [source.read().shape for _ in range(3)], source.read()
        ([(4, 4, 3), (4, 4, 3), (4, 4, 3)], None)
    """

    fresh_frames = True  # read() copies each frame

    def __init__(self, frames: FrameIterable | Callable[[], FrameIterable], live: bool = False,
                 fps: float | None = None, name: str = "python frames") -> None:
        self._factory = frames if callable(frames) else None
        self._frames = None if callable(frames) else frames
        self._opened_once = False
        self._iterator: Iterator[np.ndarray] | None = None
        self._items_read = 0
        self.live = live
        self.fps = fps
        self.name = name
        # Only a function can make the frames again: a plain iterable failed once has failed for good.
        self.reopenable = self._factory is not None

    def open(self) -> None:
        """Start iterating.

        Raises:
            SourceError: when the factory raises, or a one-shot iterable is opened a second time.
            ValueError: when the factory returns one frame (an array) rather than an iterable of frames.
        """
        self._items_read = 0
        if self._factory is not None:
            try:
                frames = self._factory()
            except Exception as exc:  # the factory is user code: any failure is a failed open
                raise SourceError(f"{self.name}: opening failed: {exc!r}") from exc
            if isinstance(frames, np.ndarray):
                # Iterated, an array gives its rows: each (W x 3) was segmented as a W x 3 gray frame.
                raise ValueError(f"{self.name}: the function returned one frame (array of shape {frames.shape}); "
                                 "it must return an iterable of frames, e.g. lambda: (read_frame() for _ in "
                                 "itertools.count()), or pass a list or generator of frames")
            try:
                self._iterator = iter(frames)
            except Exception as exc:
                raise SourceError(f"{self.name}: opening failed: {exc!r}") from exc
            return
        if self._opened_once:
            raise SourceError(
                f"{self.name}: a plain iterable can be read only once; pass a function returning a new iterable "
                "to loop or to reopen after a failure"
            )
        self._opened_once = True
        self._iterator = iter(self._frames or ())

    def read(self) -> np.ndarray | None:
        """The next item; None when the iterable is exhausted.

        Raises:
            SourceError: when the iterable raises (it is then finished; a factory can reopen it).
            CorruptFrameError: when the item is None.
        """
        if self._iterator is None:
            raise SourceError(f"source {self.name!r} is not open")
        try:
            frame = next(self._iterator)
        except StopIteration:
            return None
        except Exception as exc:  # user code failing mid-stream is a source failure, like a camera dropping out
            self._iterator = None
            # Numbered from 0 as the frames are: which frame the camera loop failed at is the first thing to know.
            raise SourceError(f"{self.name}: item {self._items_read} raised {exc!r}") from exc
        self._items_read += 1
        if isinstance(frame, np.ndarray):
            # Frames are read ahead of inference, so a buffer the iterable fills again for its next frame (a
            # driver's ring buffer, a RealSense frame's get_data(), cap.read(image=buf)) had been overwritten by
            # then: every mask and StreamResult.frame was of a later frame. The stream keeps a copy of its own.
            frame = frame.copy()
        if frame is None:
            # Returned, it would read as the end of the source: a failed cv2.imread in a list of frames ended the
            # stream there without a word. It is a frame that does not decode, skipped and counted as one.
            raise CorruptFrameError(f"item {self._items_read - 1} is None, not a frame (cv2.imread and "
                                    "VideoCapture.read give None when they fail)")
        return frame

    def close(self) -> None:
        """Drop the iterator (generators are closed)."""
        iterator, self._iterator = self._iterator, None
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


SourceLike = str | int | Path | FrameSource | FrameIterable | Callable[[], FrameIterable]


def input_files(source: FrameSource) -> list[Path]:
    """The files a source reads (a video file, or every image of a folder or glob); [] for the others.

    Example:
        >>> input_files(IterableSource([]))
        []
    """
    files = getattr(source, "files", None)
    if files is not None:
        return [Path(path) for path in files]
    spec = getattr(source, "spec", None)
    if isinstance(spec, SourceSpec) and spec.kind == "video":
        return [Path(spec.location)]
    return []


def missing_local_device(source: FrameSource) -> str | None:
    """The device path of a local camera that does not exist (``/dev/video3``, or index 3 on Linux), else None.

    Example:
        >>> missing_local_device(VideoCaptureSource(SourceSpec("camera", "/dev/video99", live=True)))
        '/dev/video99'
    """
    spec = getattr(source, "spec", None)
    if not isinstance(spec, SourceSpec) or spec.kind != "camera":
        return None
    if spec.location.isdigit():
        if not sys.platform.startswith("linux"):
            return None  # other systems number their cameras without a device file
        device = f"/dev/video{spec.location}"
    else:
        device = spec.location
    return None if os.path.exists(device) else device


def open_source(source: SourceLike, size: tuple[int, int] | None = None, live: bool | None = None,
                open_timeout: float | None = None, topic: str | None = None) -> FrameSource:
    """Make a :class:`FrameSource` from a URI, a camera index, a source object or Python frames.

    Args:
        source: a URI (see :func:`unetrt.stream.uri.parse_source`), a camera index, a ready
            :class:`FrameSource`, an iterable of frames or a function returning one.
        size: ``(width, height)`` to ask cameras for.
        live: override whether stale frames may be dropped; None keeps the source's own answer
            (cameras and streams are live, files and Python iterables are not).
        open_timeout: seconds a network stream may take to open or to deliver a frame (None: FFmpeg's 30 s).
        topic: the image topic of a ROS 2 bag (None: the bag's only image topic); only for bags.

    Returns:
        The source, not yet opened.

    Raises:
        ValueError: on a URI that cannot be served; FileNotFoundError when a path does not exist.

    Example:
        >>> open_source("0").live  # doctest: +SKIP
        True
    """
    opened: FrameSource
    if topic is not None and not (isinstance(source, str | Path) and parse_source(str(source)).kind == "rosbag"):
        what = repr(str(source)) if isinstance(source, str | Path | int) else f"a {type(source).__name__}"
        raise ValueError(f"a topic ({topic!r}, --topic) picks the image topic of a ROS 2 bag, and {what} is not "
                         "one (a rosbag2 folder, .mcap or .db3)")
    if isinstance(source, FrameSource) and not isinstance(source, str | Path):
        opened = source
    elif isinstance(source, int) and not isinstance(source, bool):
        opened = VideoCaptureSource(SourceSpec("camera", str(source), live=True), size, open_timeout)
    elif isinstance(source, str | Path):
        spec = parse_source(str(source))
        if spec.kind == "rosbag":
            from .rosbag import RosbagSource  # rosbag.py imports this module's errors

            opened = RosbagSource(spec.location, topic)
        elif spec.kind == "images":
            opened = ImageSequenceSource(spec.location)
        else:
            opened = VideoCaptureSource(spec, size, open_timeout)
    elif isinstance(source, np.ndarray):
        raise ValueError(f"got one frame (array of shape {source.shape}); pass a list or generator of frames")
    elif callable(source) or isinstance(source, Iterable):
        opened = IterableSource(source, live=bool(live))
    else:
        raise ValueError(
            f"cannot read frames from a {type(source).__name__}; give a URI, a camera index, "
            "a FrameSource, an iterable of frames or a function returning one"
        )
    if live is not None:
        opened.live = live
    return opened
