"""Frame sinks: a video file, an image sequence, a window, a live view in the browser or a ROS 2 bag."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import cv2
import numpy as np

from ..paths import check_utf8_name
from .encoders import H264, MJPEG, MPEG4, VideoEncoder, disk_full_reason, open_video_encoder
from .output_path import claim_new_file, frame_files, frame_name
from .rosbag import RosbagSink
from .uri import SinkSpec, parse_sink
from .webview import HttpViewSink

if TYPE_CHECKING:
    from .result import StreamResult

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi")
CODEC_NAMES = {H264: "H.264", MPEG4: "MPEG-4 Part 2", MJPEG: "Motion JPEG"}
DEFAULT_OUTPUT_FPS = 30.0
QUIT_KEYS = (27, ord("q"))


@runtime_checkable
class FrameSink(Protocol):
    """Where rendered frames go.

    Attributes:
        name: the sink in words.
        wants_stop: True once the user asked to end the stream (closed the window).

    Example:
        >>> class Pictures:  # keeps what the stream draws, in memory
        ...     name, wants_stop = "pictures in memory", False
        ...     def __init__(self) -> None:
        ...         self.images: list[np.ndarray] = []
        ...     def write(self, image: np.ndarray) -> None:
        ...         self.images.append(image.copy())
        ...     def close(self) -> None:
        ...         pass
        >>> isinstance(Pictures(), FrameSink)
        True
        >>> stream = Stream("sample", "camvid", output=Pictures())  # doctest: +SKIP
    """

    name: str
    wants_stop: bool

    def write(self, image: np.ndarray) -> None:
        """Write one HxWx3 BGR uint8 frame.

        Raises:
            OSError: when the frame cannot be written.
        """
        ...

    def close(self) -> None:
        """Finish the output (a video gets its index written and becomes playable); idempotent."""
        ...


@runtime_checkable
class ResultSink(Protocol):
    """Where whole results go, not only pictures (a ROS 2 bag stores each mask and the input's header).

    Attributes:
        name: the sink in words.
        wants_stop: True once the sink asks to end the stream.

    Example:
        >>> class CarPixels:  # counts each frame's car pixels, for a log of one's own
        ...     name, wants_stop = "car pixel counts", False
        ...     def __init__(self, car_id: int) -> None:
        ...         self.car_id, self.counts = car_id, []
        ...     def write_result(self, result: StreamResult, image: np.ndarray) -> None:
        ...         self.counts.append((result.index, int((result.mask == self.car_id).sum())))
        ...     def close(self) -> None:
        ...         pass
        >>> isinstance(CarPixels(car_id=8), ResultSink)
        True
    """

    name: str
    wants_stop: bool

    def write_result(self, result: StreamResult, image: np.ndarray) -> None:
        """Write one result and its rendered picture (HxWx3 BGR uint8).

        Raises:
            OSError: when it cannot be written.
        """
        ...

    def close(self) -> None:
        """Finish the output; idempotent."""
        ...


Sink = FrameSink | ResultSink


class VideoFileSink:
    """An .mp4 (H.264 where an encoder exists, else MPEG-4 Part 2) or .avi (Motion JPEG) file.

    The file is opened on the first frame, which fixes its size; ``codec`` then says what is written
    (see :func:`unetrt.stream.encoders.open_video_encoder`). A later picture of another size (a camera that
    changed its resolution, a folder of mixed sizes) is scaled to fit that size with its aspect kept, centred on
    black, and the first such picture is named in one warning line.

    Args:
        path: the file to write; its folder is created.
        fps: the frame rate stored in the file.
        overwrite: replace a file that is there when the first frame comes; without it the file must still not
            exist then (another run may have taken the path since the stream's start checked it).

    Raises:
        ValueError: on another suffix, a non-positive rate, or a name that is not valid UTF-8 (OpenCV would
            crash on it).

    Example:
        >>> sink = VideoFileSink("out.mp4", fps=10)  # doctest: +SKIP
    """

    wants_stop = False

    def __init__(self, path: str | Path, fps: float = DEFAULT_OUTPUT_FPS, overwrite: bool = True) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise ValueError(f"video output must end in {' or '.join(VIDEO_SUFFIXES)}, got {str(path)!r}")
        check_utf8_name(path, "video output")
        if not fps > 0:
            raise ValueError(f"output fps must be positive, got {fps}")
        self.name = str(path)
        self.fps = fps
        self.codec: str | None = None
        self._encoder: VideoEncoder | None = None
        self._size: tuple[int, int] | None = None
        self._written = 0
        self._told_of_sizes = False

    def write(self, image: np.ndarray) -> None:
        """Append a frame (one of another size than the first scaled to fit it, its aspect kept: :func:`fit_into`).

        Raises:
            OSError: when no encoder can be opened, the encoder fails, or (without ``overwrite``) the file exists
                at the first frame.
        """
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if self._encoder is None:
            self._size = (image.shape[1], image.shape[0])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.overwrite:
                claim_new_file(self.path)
            try:
                self._encoder = open_video_encoder(self.path, self.fps, self._size)
            except BaseException:
                if not self.overwrite:
                    self.path.unlink(missing_ok=True)  # the empty file claimed above, nobody else's
                raise
            self.codec = self._encoder.codec
            log.info("writing %s as %s (%s)", self.name, CODEC_NAMES[self.codec], self._encoder.how)
        assert self._size is not None  # fixed with the encoder above
        if (image.shape[1], image.shape[0]) != self._size:
            if not self._told_of_sizes:
                self._told_of_sizes = True
                log.warning("picture %d for %s is %dx%d, the video %dx%d (its first picture's): pictures of another "
                            "size are scaled to fit with their aspect kept, on black; write an image folder "
                            "(OUTPUT out/) to keep each frame's size", self._written, self.name, image.shape[1],
                            image.shape[0], *self._size)
            image = fit_into(image, self._size)
        self._encoder.write(image)
        self._written += 1

    def close(self) -> None:
        """Finish the file so its index is written (idempotent).

        Raises:
            OSError: when the encoder cannot finish the file.
        """
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.release()


def fit_into(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size`` (width, height) with its aspect kept, centred on black.

    A video holds one size: stretching a picture of another aspect ratio into it (a 640x480 camera into a
    1280x720 video, a portrait frame into a landscape one) would distort the scene and its overlay alike.

    Example:
        >>> fitted = fit_into(np.full((480, 640, 3), 255, np.uint8), (1280, 720))
        >>> fitted.shape, int(fitted[:, :160].max()), int(fitted[:, 160:1120].min())
        ((720, 1280, 3), 0, 255)
    """
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    fitted_w = min(width, max(1, round(image.shape[1] * scale)))
    fitted_h = min(height, max(1, round(image.shape[0] * scale)))
    # INTER_AREA averages what shrinking drops (as the sink resized before); enlarging, it would copy pixels.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    fitted = cv2.resize(image, (fitted_w, fitted_h), interpolation=interpolation)
    canvas = np.zeros((height, width, *image.shape[2:]), image.dtype)
    top, left = (height - fitted_h) // 2, (width - fitted_w) // 2
    canvas[top : top + fitted_h, left : left + fitted_w] = fitted.reshape(fitted_h, fitted_w, *image.shape[2:])
    return canvas


class ImageSequenceSink:
    """Numbered images from a printf pattern such as ``out/frame_%04d.png``.

    Args:
        pattern: the printf pattern of the file names.
        replace_earlier: delete the files an earlier run wrote with this pattern first, so no stale frame
            is left among the new ones (other files in the folder are kept); without it the first frame's file
            must not exist when it is written (another run may have started on the same pattern).

    Raises:
        ValueError: when the pattern does not hold exactly one ``%d`` counter, or is not valid UTF-8 (OpenCV
            would crash on it).

    Example:
        >>> sink = ImageSequenceSink("out/frame_%04d.png")  # doctest: +SKIP
    """

    wants_stop = False

    def __init__(self, pattern: str | Path, replace_earlier: bool = True) -> None:
        pattern = str(pattern)
        frame_name(pattern, 0)  # a pattern without its counter is refused here, not at the first frame
        check_utf8_name(pattern, "image output")
        self.pattern = pattern
        self.name = pattern
        self.replace_earlier = replace_earlier
        self._index = 0
        Path(pattern).parent.mkdir(parents=True, exist_ok=True)
        if replace_earlier:
            earlier = frame_files(pattern)
            for path in earlier:
                path.unlink()
            if earlier:
                log.info("deleted %d frames of an earlier run from %s", len(earlier), Path(pattern).parent)

    def write(self, image: np.ndarray) -> None:
        """Write the next numbered image.

        Raises:
            OSError: when OpenCV cannot write it, or (without ``replace_earlier``) the first frame's file exists.
        """
        path = self.pattern % self._index
        if self._index == 0 and not self.replace_earlier:
            claim_new_file(Path(path))
        try:
            written = cv2.imwrite(path, image)
        except cv2.error as exc:  # OpenCV raises for some encoder failures instead of returning False
            written, reason = False, " ".join(str(exc).split())
        else:
            reason = disk_full_reason(Path(path), needed=image.nbytes)
        if not written:
            # A half-written image would be a corrupt frame among the good ones.
            Path(path).unlink(missing_ok=True)
            raise OSError(f"cannot write image {path!r}{reason}")
        self._index += 1

    def close(self) -> None:
        """Nothing to finish: every image is complete when written."""


def opencv_has_gui() -> bool:
    """Whether this OpenCV build can open windows (opencv-python-headless cannot)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return "NONE" not in line.upper()
    return False


def display_available() -> bool:
    """A window can be shown: OpenCV has a GUI and there is a display to show it on."""
    return opencv_has_gui() and bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class DisplaySink:
    """An OpenCV window; Esc, 'q' or closing the window ends the stream.

    Args:
        index: the display's number (``display://0``).
        title: the window's title.

    Raises:
        ValueError: when OpenCV has no GUI or there is no display.

    Example:
        >>> Stream("/dev/video0", "camvid", output=DisplaySink(title="front camera")).run()  # doctest: +SKIP
    """

    def __init__(self, index: int = 0, title: str = "unetrt") -> None:
        if not opencv_has_gui():
            raise ValueError(
                "display:// needs OpenCV with GUI support; this is opencv-python-headless. "
                "Install opencv-python instead, or write to a file (out.mp4) or run --headless"
            )
        if not display_available():
            raise ValueError("display:// needs a display (DISPLAY is not set); write to a file or run --headless")
        self.title = f"{title} {index}"
        self.name = f"display://{index}"
        self.wants_stop = False
        self._shown = False

    def write(self, image: np.ndarray) -> None:
        """Show the frame and poll the keyboard and the window."""
        cv2.imshow(self.title, image)
        self._shown = True
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        if key in QUIT_KEYS or closed:
            self.wants_stop = True

    def close(self) -> None:
        """Close the window (idempotent)."""
        if self._shown:
            cv2.destroyWindow(self.title)
            self._shown = False


def open_sink(output: str | SinkSpec | Sink | None, fps: float | None = None,
              replace_earlier: bool = True) -> Sink | None:
    """Make a sink from an output URI, a spec or a ready sink; None means no output.

    Args:
        output: ``display://0``, a .mp4/.avi path, an image folder or pattern, ``http://HOST:PORT`` (a live
            view in the browser, see :class:`~unetrt.stream.webview.HttpViewSink`), a .mcap ROS 2 bag (see
            :class:`~unetrt.stream.rosbag.RosbagSink`), a sink, or None.
        fps: the rate to store in a video file (default 30).
        replace_earlier: replace what an earlier run wrote: its frames, deleted first (see
            :class:`ImageSequenceSink`), or a video or bag file; without it a file output that appears after
            this call (another run writing it) is not written over.

    Raises:
        ValueError: on an output that cannot be written.

    Example:
        >>> open_sink(None) is None
        True
    """
    if output is None:
        return None
    if isinstance(output, FrameSink | ResultSink):
        return output
    spec = output if isinstance(output, SinkSpec) else parse_sink(output)
    if spec.kind == "none":
        return None
    if spec.kind == "display":
        return DisplaySink(int(spec.location))
    if spec.kind == "http":
        if spec.address is None:
            raise ValueError(f"live view output {spec.location!r} has no address; make its spec with parse_sink")
        return HttpViewSink(*spec.address)
    if spec.kind == "rosbag":
        return RosbagSink(spec.location, overwrite=replace_earlier)
    if spec.kind == "video":
        return VideoFileSink(spec.location, fps or DEFAULT_OUTPUT_FPS, overwrite=replace_earlier)
    return ImageSequenceSink(spec.location, replace_earlier)
