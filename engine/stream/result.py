"""``StreamResult``: one segmented frame, as a stream hands it to the caller, the callback and the sink."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..segmenter import SegmentationResult
from .rosbag import FrameHeader


@dataclass
class StreamResult:
    """One segmented frame.

    Attributes:
        index: the frame's position among all frames the source delivered (gaps: dropped frames);
            results come in increasing index order whatever the number of workers.
        frame: the frame as captured (after the input resize and flip, which happen at capture).
        mask: HxW uint8 class ids at the frame's size.
        segmentation: the segmenter's full result (probabilities when asked for, timings).
        captured_at: ``time.perf_counter()`` when the frame was read.
        wall_time: ``time.time()`` when the frame was read, to match it with other sensors.
        latency_ms: capture to mask, end to end: the wait in the hand-off plus the segmentation.
        timings_ms: 'capture', 'preprocess', 'inference', 'postprocess'.
        fps: results per second over the last 30 results (0 during the first second, while not yet measured).
        header: the input message's header (stamp, frame_id, log time) when the source is a ROS 2 bag, else None.

    Example:
        >>> for result in Stream("sample", "camvid"):  # doctest: +SKIP
        ...     print(result.index, result.mask.shape, f"{result.latency_ms:.0f} ms")
        0 (360, 480) 31 ms
    """

    index: int
    frame: np.ndarray
    mask: np.ndarray
    segmentation: SegmentationResult
    captured_at: float
    wall_time: float
    latency_ms: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    fps: float = 0.0
    header: FrameHeader | None = None
