"""Streaming runner: sources, sinks and the capture/inference/write pipeline.

Example:
    >>> from unetrt.stream import Stream
    >>> with Stream("/dev/video0", "camvid") as stream:  # doctest: +SKIP
    ...     for result in stream:
    ...         print(result.index, result.latency_ms)
"""

from .options import StreamOptions
from .pipeline import Stream, StreamResult
from .rosbag import FrameHeader, RosbagSink, RosbagSource
from .sinks import DisplaySink, FrameSink, ImageSequenceSink, ResultSink, VideoFileSink, open_sink
from .sources import (
    CorruptFrameError,
    FrameSource,
    ImageSequenceSource,
    IterableSource,
    SourceError,
    VideoCaptureSource,
    open_source,
)
from .stats import StreamStats, format_summary
from .writer import OutputError

__all__ = [
    "CorruptFrameError",
    "DisplaySink",
    "FrameHeader",
    "FrameSink",
    "FrameSource",
    "ImageSequenceSink",
    "ImageSequenceSource",
    "IterableSource",
    "OutputError",
    "ResultSink",
    "RosbagSink",
    "RosbagSource",
    "SourceError",
    "Stream",
    "StreamOptions",
    "StreamResult",
    "StreamStats",
    "VideoCaptureSource",
    "VideoFileSink",
    "format_summary",
    "open_sink",
    "open_source",
]
