"""Helpers for the ROS 2 bag tests: write image bags with rosbags, read messages back."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.LATEST)
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
FRAME_ID = "camera_optical"


def stamp_of(index: int) -> tuple[int, int]:
    """The header stamp of message ``index``: 10 Hz from 1700000000 s, nanoseconds that need all their digits."""
    return 1_700_000_000 + index // 10, (index % 10) * 100_000_000 + 123_457


def log_time_of(index: int) -> int:
    """The bag's log time of message ``index``: 5 ms after its stamp."""
    sec, nanosec = stamp_of(index)
    return sec * 1_000_000_000 + nanosec + 5_000_000


def image_message(frame: np.ndarray, encoding: str, index: int) -> Any:
    """A sensor_msgs/msg/Image of a BGR or gray frame in ``encoding`` (with one padding byte per row)."""
    types = TYPESTORE.types
    if encoding == "rgb8":
        pixels = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    elif encoding == "mono16":
        pixels = (frame.astype(np.uint16) * 256 + 255).astype(">u2").view(np.uint8).reshape(frame.shape[0], -1)
    else:
        pixels = frame
    rows = pixels.reshape(frame.shape[0], -1)
    padded = np.zeros((rows.shape[0], rows.shape[1] + 1), np.uint8)
    padded[:, :-1] = rows
    sec, nanosec = stamp_of(index)
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                          frame_id=FRAME_ID)
    return types[IMAGE](header=header, height=frame.shape[0], width=frame.shape[1], encoding=encoding,
                        is_bigendian=int(encoding == "mono16"), step=padded.shape[1], data=padded.ravel())


def compressed_message(frame: np.ndarray, index: int, suffix: str = ".png") -> Any:
    """A sensor_msgs/msg/CompressedImage holding the frame as PNG (lossless) or JPEG (``suffix='.jpg'``)."""
    types = TYPESTORE.types
    ok, data = cv2.imencode(suffix, frame)
    assert ok
    sec, nanosec = stamp_of(index)
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                          frame_id=FRAME_ID)
    return types[COMPRESSED](header=header, format=suffix.lstrip(".").replace("jpg", "jpeg"), data=data.ravel())


def write_bag(path: Path, topics: dict[str, Sequence[Any]], storage: str) -> Path:
    """Write ``{topic: messages}`` (interleaved by index) as a rosbag2 folder (storage 'sqlite3' or 'mcap'),
    or, for a path ending in .mcap, as one bare MCAP file."""
    bare = path.suffix == ".mcap"
    folder = path.with_suffix(".folder") if bare else path
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(folder, version=9, storage_plugin=plugin)
    writer.open()
    connections = {topic: writer.add_connection(topic, messages[0].__msgtype__, typestore=TYPESTORE)
                   for topic, messages in topics.items()}
    for index in range(max(len(messages) for messages in topics.values())):
        for topic, messages in topics.items():
            if index < len(messages):
                message = messages[index]
                writer.write(connections[topic], log_time_of(index),
                             TYPESTORE.serialize_cdr(message, message.__msgtype__))
    writer.close()
    if bare:
        (folder / f"{folder.name}.mcap").rename(path)
        shutil.rmtree(folder)
    return path


def read_topic(path: Path, topic: str) -> list[tuple[int, Any]]:
    """``(log time, message)`` of every message of ``topic``, in log-time order."""
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [(log_time, TYPESTORE.deserialize_cdr(raw, connection.msgtype))
                for connection, log_time, raw in reader.messages(connections=connections)]


def mask_of(message: Any) -> np.ndarray:
    """The class ids of a mono8 sensor_msgs/msg/Image."""
    assert message.encoding == "mono8" and message.step == message.width
    return np.asarray(message.data, np.uint8).reshape(message.height, message.width)
