"""Parsing jetson-inference-style resource URIs into what to open.

Inputs: ``0`` (camera index), ``/dev/video0`` or ``v4l2:///dev/video0``, ``csi://0``,
``rtsp://host/path``, ``file://clip.mp4`` or a plain video path, ``https://host/clip.mp4`` (a recorded file
on a web server, read as a stored one), an image folder or glob,
``sample`` (the bundled clip), a ROS 2 bag (a rosbag2 folder, ``.mcap`` or ``.db3``).
Outputs: ``display://0``, a ``.mp4``/``.avi`` file, an image folder or an ``image_%04d.png`` pattern,
a ``.mcap`` ROS 2 bag, or ``http://127.0.0.1:8080`` (a live view in the browser;
``http://0.0.0.0:8080`` serves every network interface).
"""

from __future__ import annotations

import glob
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..bundled import sample_clip
from ..paths import check_utf8_name, probe_path

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")
OUTPUT_VIDEO_SUFFIXES = (".mp4", ".avi")
# ROS 2 bags (engine/stream/rosbag.py): storage files read alone, a rosbag2 folder by its metadata file.
ROSBAG_SUFFIXES = (".mcap", ".db3")
ROSBAG_METADATA = "metadata.yaml"
OUTPUT_ROSBAG_SUFFIX = ".mcap"
SAMPLE_NAME = "sample"

logger = logging.getLogger(__name__)

_GLOB_CHARS = re.compile(r"[*?\[]")
_PRINTF_PATTERN = re.compile(r"%0?\d*d")


@dataclass(frozen=True)
class SourceSpec:
    """What an input URI names.

    Attributes:
        kind: 'camera' (V4L2 index or device), 'csi', 'rtsp', 'video' (a file), 'images' (folder or glob) or
            'rosbag' (a ROS 2 bag: rosbag2 folder, .mcap or .db3).
        location: the device path, camera index, URL, file path, folder or glob.
        live: whether frames come in real time (stale ones may be dropped) or from storage (none dropped).
    """

    kind: str
    location: str
    live: bool


@dataclass(frozen=True)
class SinkSpec:
    """What an output URI names.

    Attributes:
        kind: 'display', 'video' (a file), 'images' (a folder or printf pattern), 'rosbag' (a .mcap file),
            'http' (a live view) or 'none'.
        location: the window index, file path, folder or pattern, ``HOST:PORT`` for 'http'; '' for 'none'.
        address: ``(host, port)`` of an 'http' live view (the host without IPv6 brackets), else None.
    """

    kind: str
    location: str
    address: tuple[str, int] | None = None


def parse_source(uri: str) -> SourceSpec:
    """Turn an input URI into a :class:`SourceSpec`.

    Raises:
        ValueError: on an unknown protocol, a URI that names no camera, stream, video or images, a name
            longer than the file system takes, or one that is not valid UTF-8 (except a ROS 2 bag's, which
            OpenCV does not open).
        FileNotFoundError: when a file, folder or glob names nothing that exists.

    Example:
        >>> parse_source("v4l2:///dev/video1")
        SourceSpec(kind='camera', location='/dev/video1', live=True)
    """
    text = uri.strip()
    if not text:
        raise ValueError("input is empty; give a camera index (0), /dev/video0, csi://0, rtsp://..., a video, a folder")
    spec = _parse_source_text(text)
    if spec.kind != "rosbag":
        # OpenCV opens the others, and crashes the process on a name that is not UTF-8.
        check_utf8_name(spec.location, "input")
    return spec


def _parse_source_text(text: str) -> SourceSpec:
    if text == SAMPLE_NAME:
        if Path(SAMPLE_NAME).exists():
            # A folder of the user's own frames called "sample" would otherwise go unread without a word.
            logger.warning("'%s' is the bundled clip, which is what is read: give ./%s for the %s of that name here",
                           SAMPLE_NAME, SAMPLE_NAME, "folder" if Path(SAMPLE_NAME).is_dir() else "file")
        return SourceSpec("video", str(sample_clip()), live=False)
    if text.isdigit():
        return SourceSpec("camera", text, live=True)
    scheme, sep, rest = text.partition("://")
    if sep:
        return _parse_source_scheme(scheme.lower(), rest, text)
    if text.startswith("/dev/video"):
        return SourceSpec("camera", text, live=True)
    return _parse_source_path(text)


def _parse_source_scheme(scheme: str, rest: str, text: str) -> SourceSpec:
    if scheme == "v4l2":
        if rest.isdigit():
            return SourceSpec("camera", f"/dev/video{rest}", live=True)
        if not rest.startswith("/dev/"):
            raise ValueError(f"v4l2 URI must name a device, e.g. v4l2:///dev/video0, got {text!r}")
        return SourceSpec("camera", rest, live=True)
    if scheme == "csi":
        if not rest.isdigit():
            raise ValueError(f"csi URI must name a sensor number, e.g. csi://0, got {text!r}")
        return SourceSpec("csi", rest, live=True)
    if scheme in ("http", "https") and Path(rest.split("?", 1)[0].split("#", 1)[0]).suffix.lower() in VIDEO_SUFFIXES:
        # A recorded file a web server hands out: read it whole, as a local one, rather than as a live stream
        # whose stale frames are dropped and whose end is a failure to reconnect for ever.
        return SourceSpec("rtsp", text, live=False)
    if scheme in ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "rtp"):
        return SourceSpec("rtsp", text, live=True)
    if scheme == "file":
        return _parse_source_path(rest)
    raise ValueError(
        f"unknown input protocol {scheme + '://'!r} in {text!r}; use v4l2://, csi://, rtsp://, file:// or a path"
    )


def _parse_source_path(text: str) -> SourceSpec:
    path = Path(text).expanduser()
    if _GLOB_CHARS.search(text):
        if not glob.glob(str(path)):
            raise FileNotFoundError(f"no files match the glob {text!r}")
        return SourceSpec("images", str(path), live=False)
    if probe_path(path, "input", Path.is_dir):
        kind = "rosbag" if (path / ROSBAG_METADATA).is_file() else "images"
        return SourceSpec(kind, str(path), live=False)
    if not path.exists():
        raise FileNotFoundError(f"input {text!r} does not exist (expected a video file, an image folder or a glob)")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return SourceSpec("images", str(path), live=False)
    if suffix in VIDEO_SUFFIXES:
        return SourceSpec("video", str(path), live=False)
    if suffix in ROSBAG_SUFFIXES:
        return SourceSpec("rosbag", str(path), live=False)
    raise ValueError(
        f"cannot tell what {text!r} is from its suffix {suffix!r}; "
        f"videos: {', '.join(VIDEO_SUFFIXES)}; images: {', '.join(IMAGE_SUFFIXES)}; ROS 2 bags: "
        f"{', '.join(ROSBAG_SUFFIXES)} or a rosbag2 folder"
    )


def parse_sink(uri: str | None) -> SinkSpec:
    """Turn an output URI (or None for no output) into a :class:`SinkSpec`.

    A path ending in a video suffix is a video file; one containing a printf
    counter (``%04d``) or an image suffix is an image sequence; anything else
    without a suffix is a folder to write numbered PNGs into.

    Raises:
        ValueError: on an unknown protocol or suffix.

    Example:
        >>> parse_sink("out/frame_%04d.png")
        SinkSpec(kind='images', location='out/frame_%04d.png', address=None)
        >>> parse_sink("http://0.0.0.0:8080").address
        ('0.0.0.0', 8080)
    """
    if uri is None or uri.strip() == "":
        return SinkSpec("none", "")
    text = uri.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme == "display":
            if not rest.isdigit():
                raise ValueError(f"display URI must name a window number, e.g. display://0, got {text!r}")
            return SinkSpec("display", rest)
        if scheme == "http":
            return _parse_http_sink(rest, text)
        if scheme != "file":
            raise ValueError(
                f"unknown output protocol {scheme + '://'!r} in {text!r}; "
                "use display://0, http://127.0.0.1:8080 or a path"
            )
        text = rest
    suffix = Path(text).suffix.lower()
    if suffix in OUTPUT_VIDEO_SUFFIXES:
        return SinkSpec("video", text)
    if suffix == OUTPUT_ROSBAG_SUFFIX:
        return SinkSpec("rosbag", text)
    if _PRINTF_PATTERN.search(text):
        if suffix not in IMAGE_SUFFIXES:
            raise ValueError(f"image pattern {text!r} must end in an image suffix such as .png or .jpg")
        return SinkSpec("images", text)
    if suffix in IMAGE_SUFFIXES:
        raise ValueError(f"output {text!r} is a single image; use a pattern such as frame_%04d{suffix} or a folder")
    if suffix:
        raise ValueError(
            f"cannot write output {text!r}: use a {' or '.join(OUTPUT_VIDEO_SUFFIXES)} video, "
            f"a {OUTPUT_ROSBAG_SUFFIX} ROS 2 bag, an image pattern such as frame_%04d.png, a folder or display://0"
        )
    return SinkSpec("images", str(Path(text) / "frame_%06d.png"))


def _parse_http_sink(rest: str, text: str) -> SinkSpec:
    """``HOST:PORT`` of a live view; the path must be empty or '/' (the page is always at '/')."""
    address, _, path = rest.partition("/")
    if path:
        raise ValueError(f"a live view is served at '/', drop the path from {text!r} (e.g. http://127.0.0.1:8080)")
    host, colon, port = address.rpartition(":") if not address.endswith("]") else (address, "", "")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"live view URI needs a port from 0 to 65535, e.g. http://127.0.0.1:8080 or "
                         f"http://0.0.0.0:8080, got {text!r}")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"live view URI needs a host: http://127.0.0.1:{port} (this machine) or "
                         f"http://0.0.0.0:{port} (every interface), got {text!r}")
    return SinkSpec("http", f"{host}:{port}", (host, int(port)))
