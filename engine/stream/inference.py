"""The inference workers of a stream: each takes the next captured frame, segments it, and hands the
outcome on under its take-order number, so results leave in capture order whatever the worker count.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..frame_path import NonFiniteScoresError
from ..segmenter import SegmentationResult, Segmenter
from .capture import POLL_S, CapturedFrame, EndOfStream, Handoff, HandoffItem
from .ordered import OrderedResults
from .result import StreamResult
from .stats import StreamStats


class FrameSegmenter(Protocol):
    """What a stream needs from a segmenter (:class:`unetrt.segmenter.Segmenter` is one)."""

    def segment(self, frame: np.ndarray) -> SegmentationResult:
        """One frame -> its mask and stage timings."""
        ...

    def colorize(self, result: SegmentationResult) -> np.ndarray:
        """The mask in class colours (HxWx3 BGR)."""
        ...


# What a worker hands the consuming thread for one taken item, in take order.
WorkerOutcome = StreamResult | EndOfStream | BaseException


class InferenceWorkers:
    """One thread per segmenter; frames are taken from the hand-off one at a time, paced and counted.

    Args:
        segmenters: one per worker thread.
        handoff: where the capture thread puts frames (and, last, the end).
        stats: where the stage timings go.
        stop: set to end every worker (after the frame it is segmenting).
        max_fps: take at most this many frames per second (None: as fast as they come).
        max_frames: take at most this many frames, then end (None: until the source ends).
        waiting: how many finished results may wait for the consumer (None: one per worker). A live stream's is 1:
            each result waiting is one more period of a slow consumer's loop old when the loop gets it.

    Example:
        >>> workers = InferenceWorkers([segmenter], handoff, stats, stop, None, None)  # doctest: +SKIP
        >>> workers.start(); first = workers.outcome(0, timeout=1.0)  # doctest: +SKIP
    """

    def __init__(self, segmenters: Sequence[FrameSegmenter], handoff: Handoff, stats: StreamStats,
                 stop: threading.Event, max_fps: float | None, max_frames: int | None,
                 waiting: int | None = None) -> None:
        self._segmenters = list(segmenters)
        self._handoff = handoff
        self._stats = stats
        self._stop = stop
        self._max_fps = max_fps
        self._max_frames = max_frames
        self._ordered: OrderedResults[WorkerOutcome] = OrderedResults(waiting or len(self._segmenters))
        self._take_lock = threading.Lock()
        self._taken = 0
        self._source_ended = False
        self._next_due = 0.0
        self._threads = [threading.Thread(target=self._work, args=(segmenter,), name=f"unetrt-infer-{i}",
                                          daemon=True) for i, segmenter in enumerate(self._segmenters)]

    def start(self) -> None:
        """Start every worker thread."""
        self._next_due = time.perf_counter()
        for thread in self._threads:
            thread.start()

    def outcome(self, sequence: int, timeout: float) -> WorkerOutcome | None:
        """The outcome of the ``sequence``-th taken item (a result, the end, or the error segmenting it), waiting
        up to ``timeout`` seconds; None when it is not in yet."""
        return self._ordered.take(sequence, timeout)

    def join(self) -> None:
        """Wait for every worker: each ends within a poll interval of ``stop``, or after the frame in hand."""
        for thread in self._threads:
            if thread.ident is not None:
                thread.join()

    def _work(self, segmenter: FrameSegmenter) -> None:
        """One inference worker: take the next item, segment it, hand the outcome over in take order."""
        while True:
            self._ordered.wait_for_room(self._stop, POLL_S)
            taken = self._take()
            if taken is None:
                return
            sequence, item = taken
            outcome: WorkerOutcome
            if isinstance(item, CapturedFrame):
                try:
                    outcome = self._segment(item, segmenter)
                except Exception as exc:  # raised in the consuming thread, at this frame's turn
                    outcome = exc
            else:
                outcome = item
            self._ordered.put(sequence, outcome)
            if not isinstance(outcome, StreamResult):
                return

    def _take(self) -> tuple[int, HandoffItem] | None:
        """The next frame (or the end) with its take-order number; None when this worker should stop."""
        with self._take_lock:
            while not self._stop.is_set() and not self._source_ended:
                if self._max_frames is not None and self._taken >= self._max_frames:
                    return self._end_taking(EndOfStream())
                if self._max_fps is not None:
                    wait = self._next_due - time.perf_counter()
                    if wait > 0 and self._stop.wait(wait):
                        return None
                    self._next_due = max(self._next_due + 1.0 / self._max_fps, time.perf_counter())
                try:
                    item = self._handoff.get(POLL_S)
                except queue.Empty:
                    continue
                assert isinstance(item, CapturedFrame | EndOfStream)
                if isinstance(item, EndOfStream):
                    return self._end_taking(item)
                sequence, self._taken = self._taken, self._taken + 1
                return sequence, item
            return None

    def _end_taking(self, end: EndOfStream) -> tuple[int, HandoffItem]:
        """Called with the take lock held: ``end`` is the last item any worker takes."""
        self._source_ended = True
        sequence, self._taken = self._taken, self._taken + 1
        return sequence, end

    def _segment(self, item: CapturedFrame, segmenter: FrameSegmenter) -> StreamResult:
        taken_at = time.perf_counter()
        # The frame was checked at capture: a unetrt Segmenter is not asked to check it again.
        if isinstance(segmenter, Segmenter):
            try:
                segmentation = segmenter.segment_checked(item.image)
            except NonFiniteScoresError as error:
                # 'this frame' of a bag or a recording of hours: the one to look at is named by its index.
                raise error.restated(frame=f"frame {item.index} of the input") from None
        else:
            segmentation = segmenter.segment(item.image)
            if not isinstance(segmentation, SegmentationResult):
                # It failed further on with an AttributeError about timings_ms.
                raise ValueError(f"segmenter.segment(frame) must return a unetrt SegmentationResult, got "
                                 f"{type(segmentation).__name__}; wrap a mask as SegmentationResult(mask, None, 0.0)")
        done_at = time.perf_counter()
        latency = (done_at - item.captured_at) * 1e3
        self._stats.add("queue_wait", (taken_at - item.captured_at) * 1e3)
        self._stats.add("processing", (done_at - taken_at) * 1e3)
        timings = {"capture": item.capture_ms}
        for stage in ("preprocess", "inference", "postprocess"):
            if stage in segmentation.timings_ms:
                timings[stage] = segmentation.timings_ms[stage]
                self._stats.add(stage, timings[stage])
        self._stats.add("latency", latency)
        return StreamResult(item.index, item.image, segmentation.mask, segmentation, item.captured_at,
                            item.wall_time, latency, timings, header=item.header)
