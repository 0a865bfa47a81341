"""ROS 2 bags as a stream's input and output, through ``rosbags`` (pure Python: no ROS install needed).

Input: a rosbag2 folder (``metadata.yaml`` beside MCAP or SQLite storage), or a bare ``.mcap`` or ``.db3`` file;
one image topic of ``sensor_msgs/msg/Image`` (``bgr8``, ``rgb8``, ``mono8``, ``mono16``) or
``sensor_msgs/msg/CompressedImage`` is read in log-time order, every message, with its header.
Output: a single ``.mcap`` file (Foxglove and ``ros2 bag play`` open it) with ``/unetrt/mask`` (``mono8`` class ids)
and ``/unetrt/overlay`` (JPEG), each message with the input message's header stamp and frame_id and log time.

``rosbags`` is imported only when a bag is opened; without it the error says how to install it.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import re
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .output_path import claim_new_file
from .sources import CorruptFrameError, SourceError
from .uri import OUTPUT_ROSBAG_SUFFIX

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .result import StreamResult

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
# Raw encodings read (sensor_msgs/image_encodings.hpp names): channels and numpy dtype of one pixel.
RAW_ENCODINGS: dict[str, tuple[int, str]] = {"bgr8": (3, "u1"), "rgb8": (3, "u1"), "mono8": (1, "u1"),
                                             "mono16": (1, "u2")}
MASK_TOPIC = "/unetrt/mask"
OVERLAY_TOPIC = "/unetrt/overlay"
JPEG_QUALITY = 90
ROSBAG2_VERSION = 9
# Messages whose log times give a bag's frame rate: enough to average out jitter, few enough to read at once.
RATE_SAMPLE = 100
# The folder a bag output is written in until it is finished, beside its target: named by the process and machine
# writing it, so that a later run can tell one left by a killed process (SIGKILL, a power cut) from one being written.
BAG_FOLDER_PREFIX = ".unetrt-bag-"
_BAG_FOLDER = re.compile(re.escape(BAG_FOLDER_PREFIX) + r"(\d+)@(.+)-[^-]+")
INSTALL_HINT = "ROS 2 bags need the rosbags package: pip install 'unetrt[ros]' (or pip install rosbags)"


@dataclass(frozen=True)
class FrameHeader:
    """When and where a frame was taken (its ROS message header) and when the bag logged it.

    Attributes:
        stamp_sec: ``header.stamp.sec``.
        stamp_nanosec: ``header.stamp.nanosec``.
        frame_id: ``header.frame_id`` (the camera's coordinate frame).
        log_time_ns: the bag's receive time of the message, in nanoseconds.

    Example:
        >>> header = FrameHeader(stamp_sec=1700000000, stamp_nanosec=250_000_000, frame_id="front_camera",
        ...                      log_time_ns=1700000000_260_000_000)
        >>> header.stamp_sec + header.stamp_nanosec / 1e9  # what result.header carries from a bag's frame
        1700000000.25
    """

    stamp_sec: int
    stamp_nanosec: int
    frame_id: str
    log_time_ns: int


def _rosbags(submodule: str) -> ModuleType:
    """``rosbags.<submodule>``, or an ImportError that says how to install it."""
    try:
        return importlib.import_module(f"rosbags.{submodule}")
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "rosbags":
            raise ImportError(INSTALL_HINT) from exc
        raise


def _typestore() -> Any:
    """The message types of ROS 2 (sensor_msgs/Image and CompressedImage are the same in every release)."""
    typesys = _rosbags("typesys")
    return typesys.get_typestore(typesys.Stores.LATEST)


# What reading a damaged bag raises: rosbags' own errors, and the storage's (a cut MCAP ends mid-record,
# a cut SQLite file is "not a database" or "malformed") which rosbags passes on.
def _read_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [_rosbags("rosbag2").ReaderError, OSError, EOFError, struct.error,
                                         KeyError, IndexError, ValueError]
    with contextlib.suppress(ImportError):
        errors.append(importlib.import_module("apsw").Error)
    with contextlib.suppress(ImportError):
        errors.append(importlib.import_module("sqlite3").Error)
    return tuple(errors)


def _open_reader(path: Path) -> Any:
    """An opened ``rosbags.rosbag2.Reader``.

    Raises:
        ValueError: when the bag cannot be opened (damaged, truncated or not a rosbag2 bag).
    """
    reader = _rosbags("rosbag2").Reader(path)
    try:
        reader.open()
    except _read_errors() as exc:
        raise ValueError(f"cannot read the ROS 2 bag {str(path)!r}: {exc} (is it truncated, or still being "
                         "recorded?)") from exc
    return reader


def _describe_topics(topics: dict[str, Any]) -> str:
    return ", ".join(f"{name} ({info.msgtype})" for name, info in sorted(topics.items())) or "none"


def pick_image_topic(path: Path, topic: str | None) -> tuple[str, str, int, float | None]:
    """The image topic to read: ``topic``, or the bag's only image topic.

    Returns:
        ``(topic, message type, message count, frames per second or None)``.

    Raises:
        ValueError: when the bag cannot be read, has no image topic, lacks ``topic``, ``topic`` is not an
            image topic, the bag has several image topics and ``topic`` is None, or the topic's first image has an
            encoding unetrt does not read.

    Example:
        >>> pick_image_topic(Path("recording.mcap"), None)  # doctest: +SKIP
        ('/camera/image_raw', 'sensor_msgs/msg/Image', 120, 10.0)
    """
    reader = _open_reader(path)
    try:
        topics = dict(reader.topics)
        topic, msgtype, count = _choose_image_topic(path, topics, topic)
        times, first = _first_messages(path, reader, topic)
        # The first image's encoding now, so that one unetrt does not read is refused before a model loads.
        if first is not None and msgtype == IMAGE_TYPE:
            _check_encoding(first, topic)
        # The topic's own times, not the bag's duration: the other topics of a recording start before the camera
        # and run on after it (ros2 bag record -a), which made the rate, and an output video's speed, wrong.
        span_ns = times[-1] - times[0] if len(times) > 1 else 0
        fps = (len(times) - 1) / (span_ns / 1e9) if span_ns > 0 else None
    finally:
        reader.close()
    return topic, msgtype, count, fps


def _choose_image_topic(path: Path, topics: dict[str, Any], topic: str | None) -> tuple[str, str, int]:
    """``(topic, message type, message count)`` of ``topic``, or of the bag's only image topic (see
    :func:`pick_image_topic`)."""
    images = {name: info for name, info in topics.items() if info.msgtype in IMAGE_TYPES}
    if topic is None:
        if not images:
            raise ValueError(f"the ROS 2 bag {str(path)!r} has no image topic (sensor_msgs/msg/Image or "
                             f"CompressedImage); its topics: {_describe_topics(topics)}")
        if len(images) > 1:
            raise ValueError(f"the ROS 2 bag {str(path)!r} has several image topics: {', '.join(sorted(images))}; "
                             "choose one with --topic (topic= in Python)")
        topic = next(iter(images))
    elif topic not in topics:
        raise ValueError(f"topic {topic!r} is not in the ROS 2 bag {str(path)!r}; its image topics: "
                         f"{', '.join(sorted(images)) or 'none'}")
    elif topic not in images:
        raise ValueError(f"topic {topic!r} of {str(path)!r} carries {topics[topic].msgtype}, not images; its image "
                         f"topics: {', '.join(sorted(images)) or 'none'}")
    return topic, images[topic].msgtype, int(images[topic].msgcount)


def _first_messages(path: Path, reader: Any, topic: str) -> tuple[list[int], bytes | None]:
    """The log times of the topic's first ``RATE_SAMPLE`` messages, and the first message's raw bytes (None for a
    topic without messages).

    Raises:
        ValueError: when the bag breaks off before those messages.
    """
    connections = [c for c in reader.connections if c.topic == topic]
    times: list[int] = []
    first: bytes | None = None
    try:
        for _, log_time, raw in itertools.islice(reader.messages(connections=connections), RATE_SAMPLE):
            first = raw if first is None else first
            times.append(log_time)
    except _read_errors() as exc:
        raise ValueError(f"cannot read the ROS 2 bag {str(path)!r}: {exc} (is it truncated, or still being "
                         "recorded?)") from exc
    return times, first


def _check_encoding(raw: bytes, topic: str) -> None:
    """Refuse a raw image message whose encoding unetrt does not read (a message that does not decode passes: it
    is counted as corrupt when read).

    Raises:
        ValueError: naming the encoding, the topic and the encodings read.
    """
    try:
        encoding = str(_typestore().deserialize_cdr(raw, IMAGE_TYPE).encoding)
    except _read_errors():
        return
    if encoding.lower() not in RAW_ENCODINGS:
        raise ValueError(_unsupported_encoding(encoding) + f" (topic {topic})")


def _unsupported_encoding(encoding: str) -> str:
    return (f"image encoding {encoding!r} is not supported; unetrt reads {', '.join(RAW_ENCODINGS)} and "
            "sensor_msgs/msg/CompressedImage")


def decode_image(message: Any, msgtype: str) -> np.ndarray:
    """A ``sensor_msgs`` Image or CompressedImage as an OpenCV frame (BGR or gray uint8).

    ``mono16`` is scaled to 8 bits (value / 256, rounded), as a 16-bit image file in a folder source is.

    Raises:
        SourceError: on an encoding unetrt does not read (the whole topic has it).
        CorruptFrameError: when the message's data does not hold the image it announces.
    """
    if msgtype == COMPRESSED_IMAGE_TYPE:
        frame = cv2.imdecode(np.asarray(message.data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if frame is None:
            raise CorruptFrameError(f"a CompressedImage ({message.format or 'no format'}) did not decode")
    else:
        frame = _raw_image(message)
    if frame.dtype == np.uint16:
        frame = cv2.convertScaleAbs(frame, alpha=1 / 256)
    return frame


def _raw_image(message: Any) -> np.ndarray:
    encoding = str(message.encoding).lower()
    if encoding not in RAW_ENCODINGS:
        raise SourceError(_unsupported_encoding(str(message.encoding)))
    channels, kind = RAW_ENCODINGS[encoding]
    dtype = np.dtype(kind).newbyteorder(">" if message.is_bigendian else "<")
    height, width, step = int(message.height), int(message.width), int(message.step)
    row_bytes = width * channels * dtype.itemsize
    data = np.asarray(message.data, dtype=np.uint8)
    if height < 1 or width < 1 or step < row_bytes or data.size < step * height:
        raise CorruptFrameError(f"a {width}x{height} {encoding} image with step {step} holds {data.size} bytes")
    rows = data[:step * height].reshape(height, step)[:, :row_bytes]
    frame = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels).astype(dtype.newbyteorder("="))
    if encoding == "rgb8":
        return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    return frame if channels == 3 else frame[..., 0]


class RosbagSource:
    """The images of one topic of a ROS 2 bag, every message in log-time order (a stored source: none dropped).

    After each :meth:`read`, :attr:`last_header` holds that message's header; the stream carries it to the
    result (:attr:`unetrt.stream.StreamResult.header`) and to a bag output. Opened again after its end (``loop``),
    the bag's stamps and log times are moved forward past the last pass's by one frame interval, pass after
    pass, so that they keep increasing as a recorder's would (ROS tools refuse stamps that go back).

    Args:
        path: a rosbag2 folder, or a ``.mcap`` / ``.db3`` file.
        topic: the image topic; None picks the bag's only one.

    Raises:
        ValueError: when the bag cannot be read or the topic cannot be chosen (see :func:`pick_image_topic`).
        ImportError: when ``rosbags`` is not installed.

    Example:
        >>> source = RosbagSource("recording.mcap", "/camera/image_raw")  # doctest: +SKIP
    """

    live = False
    color_order = "bgr"  # rgb8 images are converted to BGR when read
    fresh_frames = True  # every message is decoded into a new array

    def __init__(self, path: str | Path, topic: str | None = None) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.topic, self.msgtype, self.frame_count, self.fps = pick_image_topic(self.path, topic)
        self.last_header: FrameHeader | None = None
        self._typestore = _typestore()
        self._reader: Any = None
        self._messages: Iterator[tuple[Any, int, bytes]] | None = None
        self._read_count = 0
        self._ended = False  # the last pass reached the bag's end: the next one is a replay
        self._shift_ns = 0  # added to this pass's stamps and log times
        # This pass's lowest and highest stamp and log time (unshifted, in ns); None before its first frame.
        self._extent: tuple[int, int, int, int] | None = None

    @property
    def files(self) -> list[Path]:
        """The files of the bag (the bag file, or every file of a rosbag2 folder): an output may not be one."""
        return sorted(self.path.iterdir()) if self.path.is_dir() else [self.path]

    def open(self) -> None:
        """Start again from the first message.

        Raises:
            SourceError: when the bag cannot be opened.
        """
        self.close()
        try:
            reader = _open_reader(self.path)
        except ValueError as exc:
            raise SourceError(str(exc)) from exc
        connections = [c for c in reader.connections if c.topic == self.topic]
        self._reader = reader
        self._messages = iter(reader.messages(connections=connections))
        self._read_count = 0
        if self._ended and self._extent is not None:
            self._shift_ns += self._replay_shift_ns(self._extent)
        self._ended, self._extent = False, None

    def _replay_shift_ns(self, extent: tuple[int, int, int, int]) -> int:
        """How far the next pass's stamps and log times move beyond this one's: the longer of the two spans of this
        pass and one frame interval (the bag's rate; a second for a bag of one frame, which has none)."""
        low_stamp, high_stamp, low_log, high_log = extent
        return max(high_stamp - low_stamp, high_log - low_log) + (round(1e9 / self.fps) if self.fps else 10**9)

    def read(self) -> np.ndarray | None:
        """The next image; None after the last message.

        Raises:
            SourceError: when the source is not open, the bag breaks off (truncated) or the encoding is unsupported.
            CorruptFrameError: when one message does not hold a readable image.
        """
        if self._messages is None:
            raise SourceError(f"source {self.name!r} is not open")
        try:
            item = next(self._messages, None)
        except _read_errors() as exc:
            raise SourceError(f"the ROS 2 bag {self.name!r} breaks off after {self._read_count} messages of "
                              f"{self.topic} ({exc}); is it truncated?") from exc
        if item is None:
            self._ended = True
            return None
        _, log_time_ns, raw = item
        self._read_count += 1
        try:
            message = self._typestore.deserialize_cdr(raw, self.msgtype)
        except _read_errors() as exc:
            raise CorruptFrameError(f"message {self._read_count - 1} of {self.topic} does not decode: {exc}") from exc
        stamp = message.header.stamp
        stamp_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        log_ns = int(log_time_ns)
        low_stamp, high_stamp, low_log, high_log = self._extent or (stamp_ns, stamp_ns, log_ns, log_ns)
        self._extent = (min(low_stamp, stamp_ns), max(high_stamp, stamp_ns), min(low_log, log_ns),
                        max(high_log, log_ns))
        sec, nanosec = divmod(stamp_ns + self._shift_ns, 1_000_000_000)
        self.last_header = FrameHeader(sec, nanosec, str(message.header.frame_id), log_ns + self._shift_ns)
        return decode_image(message, self.msgtype)

    def close(self) -> None:
        """Close the bag (idempotent)."""
        reader, self._reader, self._messages = self._reader, None, None
        if reader is not None:
            reader.close()


class RosbagSink:
    """A ``.mcap`` file with ``/unetrt/mask`` (Image, mono8 class ids) and ``/unetrt/overlay`` (CompressedImage, JPEG).

    Each result is written with the input frame's header (stamp, frame_id) and log time when the input is a
    bag; frames from other sources get their capture time as stamp and an empty frame_id. The file is
    written beside the target and moved into place when the sink closes, so a bag read as input may be
    overwritten, and a half-written file is never left under the target's name.

    Args:
        path: the ``.mcap`` file to write; its folder is created.
        overwrite: replace a file that is there when the bag is finished; without it the bag is not moved over a
            file that appeared since the stream's start checked the path (another run writing it), and closing
            fails naming it.

    Raises:
        ValueError: on another suffix. ImportError: when ``rosbags`` is not installed.

    Example:
        >>> sink = RosbagSink("segmented.mcap")  # doctest: +SKIP
    """

    wants_stop = False

    def __init__(self, path: str | Path, overwrite: bool = True) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        if self.path.suffix.lower() != OUTPUT_ROSBAG_SUFFIX:
            raise ValueError(f"a ROS 2 bag output must end in {OUTPUT_ROSBAG_SUFFIX}, got {str(path)!r}")
        self.name = str(path)
        self._typestore = _typestore()
        self._writer: Any = None
        self._folder: Path | None = None
        self._connections: dict[str, Any] = {}
        self._closed = False

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_bag_folders(self.path.parent)
        self._folder = Path(tempfile.mkdtemp(prefix=f"{BAG_FOLDER_PREFIX}{os.getpid()}@{socket.gethostname()}-",
                                             dir=self.path.parent))
        rosbag2 = _rosbags("rosbag2")
        writer = rosbag2.Writer(self._folder / "bag", version=ROSBAG2_VERSION,
                                storage_plugin=rosbag2.StoragePlugin.MCAP)
        writer.open()
        self._connections = {
            MASK_TOPIC: writer.add_connection(MASK_TOPIC, IMAGE_TYPE, typestore=self._typestore),
            OVERLAY_TOPIC: writer.add_connection(OVERLAY_TOPIC, COMPRESSED_IMAGE_TYPE, typestore=self._typestore),
        }
        self._writer = writer

    def write_result(self, result: StreamResult, image: np.ndarray) -> None:
        """Write the result's mask and ``image`` (the rendered overlay) with the input's header.

        Raises:
            OSError: when the bag cannot be written or the overlay cannot be encoded.
        """
        if self._writer is None:
            self._open()
        header = result.header or _capture_header(result.wall_time)
        types = self._typestore.types
        ros_header = types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=header.stamp_sec, nanosec=header.stamp_nanosec),
            frame_id=header.frame_id)
        mask = np.ascontiguousarray(result.mask, dtype=np.uint8)
        mask_message = types[IMAGE_TYPE](header=ros_header, height=mask.shape[0], width=mask.shape[1],
                                         encoding="mono8", is_bigendian=0, step=mask.shape[1], data=mask.ravel())
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"cannot encode the overlay of frame {result.index} as JPEG")
        overlay_message = types[COMPRESSED_IMAGE_TYPE](header=ros_header, format="jpeg", data=jpeg.ravel())
        for topic, message, msgtype in ((MASK_TOPIC, mask_message, IMAGE_TYPE),
                                        (OVERLAY_TOPIC, overlay_message, COMPRESSED_IMAGE_TYPE)):
            self._writer.write(self._connections[topic], header.log_time_ns,
                               self._typestore.serialize_cdr(message, msgtype))

    def discard_if_empty(self) -> None:
        """Write no bag at all when no result was written (a stream that failed before its first one); else
        nothing changes and :meth:`close` finishes the bag."""
        if self._writer is None:
            self._closed = True

    def close(self) -> None:
        """Finish the bag and move it into place (idempotent; a stream without results writes an empty bag).

        Raises:
            OSError: when the bag cannot be finished or moved into place.
        """
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            self._open()
        writer, folder, self._writer, self._folder = self._writer, self._folder, None, None
        assert folder is not None
        try:
            writer.close()
            if not self.overwrite:
                claim_new_file(self.path)
            try:
                os.replace(folder / "bag" / "bag.mcap", self.path)
            except BaseException:
                if not self.overwrite:
                    self.path.unlink(missing_ok=True)  # the empty file claimed above, nobody else's
                raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _process_is_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this machine (one of another user's still runs: it cannot be signalled)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def remove_stale_bag_folders(folder: Path) -> list[Path]:
    """Remove the unfinished bag folders in ``folder`` left by processes of this machine that are gone (a run
    killed by SIGKILL or a power cut, whose clean-up never ran); say so in one line. Those of running processes,
    and of other machines sharing the folder, stay.

    Returns:
        The folders removed.

    Example:
        >>> remove_stale_bag_folders(Path("out"))  # doctest: +SKIP
        [PosixPath('out/.unetrt-bag-41234@robot-k2j4x9qa')]
    """
    host = socket.gethostname()
    stale = []
    with contextlib.suppress(OSError):
        for entry in sorted(folder.iterdir()):
            match = _BAG_FOLDER.fullmatch(entry.name)
            if match and match[2] == host and _process_is_gone(int(match[1])) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                stale.append(entry)
    if stale:
        log.warning("removed %d unfinished bag folder%s of runs that were killed (%s)", len(stale),
                    "" if len(stale) == 1 else "s", ", ".join(str(entry) for entry in stale))
    return stale


def _capture_header(wall_time: float) -> FrameHeader:
    nanoseconds = round(wall_time * 1e9)
    return FrameHeader(nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000, "", nanoseconds)
