"""Video encoders for the file sink: H.264 where an encoder exists, else MPEG-4 Part 2 (or Motion JPEG in .avi).

Browsers and most players refuse MPEG-4 Part 2 in .mp4, so an .mp4 is written as H.264 by the first
encoder that works: OpenCV's own FFmpeg (fourcc ``avc1``; Debian's and JetPack's OpenCV have one, the
pip wheels do not), then the ``ffmpeg`` command with libx264, fed raw frames through a pipe. Only when
neither exists does the file fall back to MPEG-4 Part 2 (``mp4v``), with a warning.

A write that fails (a full disk) raises ``OSError`` at that frame, so the stream stops and the file
keeps what was written: ffmpeg writes a fragmented MP4 (a self-contained fragment each second), which
plays up to the last whole fragment even when the disk filled before the end; OpenCV's Motion JPEG
.avi plays up to the failure without its index. OpenCV's own MP4 writer needs its index (the ``moov``
atom) at the end, which a full disk cannot take.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

import cv2
import numpy as np

from ..paths import check_utf8_name

log = logging.getLogger(__name__)

H264 = "h264"
MPEG4 = "mpeg4"
MJPEG = "mjpeg"
# The encoder shares the cores with inference. On the 101 frames of the bundled clip (480x360) libx264's
# 'superfast' takes 3.9 ms of CPU per frame for a 1.40 MB file, 'veryfast' 5.8 ms for 1.36 MB, 'ultrafast'
# 1.9 ms for 2.30 MB.
X264_PRESET = "superfast"
ENCODER_NICENESS = 10
# ffmpeg's MP4 fragments: an index with every second of video, so a file cut short (a full disk, a killed
# process) plays up to its last whole fragment. Players and browsers play fragmented MP4 as any other.
FRAGMENT_US = 1_000_000
# OpenCV 4's VideoWriter.write returns nothing: a writer whose file stopped growing for this many frames
# while its disk is full has failed (OpenCV 5 returns False from the failed write itself).
STALLED_FRAMES = 8


class VideoEncoder(Protocol):
    """An open video file that takes BGR frames of one size.

    Attributes:
        codec: the codec written ('h264', 'mpeg4' or 'mjpeg').
        how: the encoder in words, for the log line.
    """

    codec: str
    how: str

    def write(self, image: np.ndarray) -> None:
        """Append one HxWx3 BGR uint8 frame of the size the file was opened with.

        Raises:
            OSError: when the encoder fails.
        """
        ...

    def release(self) -> None:
        """Finish the file (its index is written and it becomes playable)."""
        ...


class OpenCVEncoder:
    """A ``cv2.VideoWriter`` with a known codec.

    Raises:
        OSError: when OpenCV cannot open a writer with this fourcc.
    """

    def __init__(self, path: Path, fourcc: str, codec: str, fps: float, size: tuple[int, int]) -> None:
        with _quiet_native_stderr():
            # A missing encoder makes FFmpeg print errors from C; the failure is handled and reported below.
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
        if not writer.isOpened():
            writer.release()
            raise OSError(f"OpenCV cannot write {fourcc!r} video to {str(path)!r}")
        self._writer = writer
        self.path = path
        self.codec = codec
        self.how = f"OpenCV, fourcc {fourcc}"
        self._frames = 0
        self._size_on_disk = 0
        self._stalled = 0

    def write(self, image: np.ndarray) -> None:
        """Append one frame.

        Raises:
            OSError: when OpenCV says the write failed (OpenCV 5), or the file stopped growing on a full
                disk or is not a regular file (OpenCV 4, whose write says nothing).
        """
        written = self._writer.write(image)
        self._frames += 1
        if written is False or (written is None and self._stopped_growing()):
            raise OSError(f"OpenCV could not write frame {self._frames} to {str(self.path)!r}"
                          f"{disk_full_reason(self.path)}")

    def _stopped_growing(self) -> bool:
        try:
            status = os.stat(self.path)
        except OSError:
            return True  # the file was removed or its folder is gone
        if not stat.S_ISREG(status.st_mode):
            return False  # a device or pipe: nothing to measure
        if status.st_size > self._size_on_disk:
            self._size_on_disk, self._stalled = status.st_size, 0
            return False
        self._stalled += 1
        return self._stalled >= STALLED_FRAMES and bool(disk_full_reason(self.path))

    def release(self) -> None:
        """Finish the file."""
        self._writer.release()


class FfmpegH264Encoder:
    """H.264 through the ``ffmpeg`` command (libx264): frames go to its stdin as raw YUV 4:2:0.

    The conversion from BGR happens here, with OpenCV's vectorised BT.601 (limited range, as ffmpeg's
    own): half the bytes through the pipe and no colour conversion in ffmpeg, whose CPU time comes out
    of the cores the inference runs on. YUV 4:2:0 needs even sides: an odd frame gets one black
    row or column of padding at the bottom or right.

    Raises:
        OSError: when ffmpeg cannot be started.
    """

    codec = H264
    how = "ffmpeg with libx264"

    def __init__(self, ffmpeg: str, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path = path
        self._padding = (size[1] % 2, size[0] % 2)
        even = (size[0] + self._padding[1], size[1] + self._padding[0])
        # ffmpeg's messages go to a file: a pipe nobody reads could fill and stall it. Closed in release().
        self._errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        command = [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{even[0]}x{even[1]}", "-r", f"{fps:g}", "-i", "-",
            "-c:v", "libx264", "-preset", X264_PRESET, "-pix_fmt", "yuv420p",
            "-movflags", "+empty_moov+default_base_moof", "-frag_duration", str(FRAGMENT_US), str(path),
        ]
        # A session of its own: Ctrl-C in a terminal and `kill -- -PGID` signal the whole process group, and
        # ffmpeg would quit before the stream has sent its last frames; release() ends it instead. (systemd
        # signals by cgroup, not group: its units need KillMode=mixed, see the README.)
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=self._errors, start_new_session=True)
        _lower_priority(self._process.pid)

    def write(self, image: np.ndarray) -> None:
        """Send one frame to ffmpeg.

        Raises:
            OSError: when ffmpeg has exited.
        """
        stdin = self._process.stdin
        assert stdin is not None
        bottom, right = self._padding
        if bottom or right:
            image = cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        try:
            stdin.write(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).data)
        except BrokenPipeError:
            self._process.wait()
            raise OSError(f"ffmpeg stopped while writing {str(self.path)!r}: {self._error_text()}") from None

    def release(self) -> None:
        """Close ffmpeg's input and wait for it to finish the file.

        Raises:
            OSError: when ffmpeg failed.
        """
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        code = self._process.wait()
        message = self._error_text()
        self._errors.close()
        if code != 0:
            raise OSError(f"ffmpeg failed to write {str(self.path)!r} (exit {code}): {message}")

    def _error_text(self) -> str:
        self._errors.seek(0)
        return " ".join(self._errors.read().decode(errors="replace").split())[-300:]


def disk_full_reason(path: Path, needed: int = 0) -> str:
    """``": no space left on the disk of 'FOLDER'"`` when the file system that will hold ``path`` has no more than
    ``needed`` bytes free, else ''.

    A writer that failed may have removed its partial file already (OpenCV's ``imwrite`` does), so
    "full" means "not enough left for what was being written".

    Example:
        >>> disk_full_reason(Path("/no/such/folder/out.mp4"))
        ''
    """
    try:
        status = os.statvfs(path.parent)
    except (OSError, AttributeError):  # statvfs is POSIX only
        return ""
    free = status.f_bavail * status.f_frsize
    return f": no space left on the disk of {str(path.parent)!r} ({free // 1024} KiB free)" if free <= needed else ""


def _lower_priority(pid: int) -> None:
    """Give the encoder process less CPU priority than this one (``ENCODER_NICENESS`` more).

    The encoder is the one stage whose delay no result waits for: at equal priority its threads preempt
    the inference workers on a 2-core machine (main job with a training run sharing the cores: 60-67
    frames per second at equal priority, 65-70 with the encoder 10 below).
    """
    if not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + ENCODER_NICENESS))


@functools.cache
def ffmpeg_with_libx264() -> str | None:
    """The path of an ``ffmpeg`` command that has the libx264 encoder, or None."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    try:
        listed = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30,
                                check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return ffmpeg if " libx264 " in listed else None


def open_video_encoder(path: Path, fps: float, size: tuple[int, int]) -> VideoEncoder:
    """Open the best encoder for ``path``: H.264 for .mp4 where possible, MPEG-4 Part 2 otherwise, MJPEG for .avi.

    Args:
        path: the .mp4 or .avi file to write (its folder must exist).
        fps: frames per second stored in the file.
        size: ``(width, height)`` of every frame.

    Returns:
        The open encoder; its ``codec`` says what it writes.

    Raises:
        OSError: when no encoder can write the file.
        ValueError: when its name is not valid UTF-8 (OpenCV's writer would crash on it).

    Example:
        >>> encoder = open_video_encoder(Path("out.mp4"), 10.0, (480, 360))  # doctest: +SKIP
        >>> encoder.codec  # doctest: +SKIP
        'h264'
    """
    check_utf8_name(path, "video output")
    if path.suffix.lower() == ".avi":
        return OpenCVEncoder(path, "MJPG", MJPEG, fps, size)
    with contextlib.suppress(OSError):
        return OpenCVEncoder(path, "avc1", H264, fps, size)
    ffmpeg = ffmpeg_with_libx264()
    if ffmpeg is not None:
        return FfmpegH264Encoder(ffmpeg, path, fps, size)
    log.warning("no H.264 encoder (this OpenCV has none and no ffmpeg with libx264 is installed): writing %s as "
                "MPEG-4 Part 2, which some players and browsers refuse; apt-get install ffmpeg to get H.264", path)
    return OpenCVEncoder(path, "mp4v", MPEG4, fps, size)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (where FFmpeg's C code writes) for the duration of a probe."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
