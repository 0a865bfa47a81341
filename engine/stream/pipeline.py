"""``Stream``: capture, inference and writing as overlapping stages with bounded latency.

Capture fills a hand-off (the newest frame for live sources, a bounded queue for stored
ones); one or more inference workers take frames from it, each with its own segmenter;
results leave in capture order, to the caller's loop and to a writer thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import cv2
import numpy as np

from ..palette import Palette
from ..segmenter import SegmentationResult
from ..visualize import draw_legend
from .capture import (
    POLL_S,
    CapturedFrame,
    CaptureThread,
    EndOfStream,
    FrameQueue,
    Handoff,
    HandoffItem,
    LatestFrameSlot,
    open_when_up,
)
from .flip import check_flip, flip_frame
from .output_path import check_existing_output, check_not_input, check_output_path
from .render import compose, draw_caption, parse_visualize
from .rosbag import FrameHeader
from .sinks import DEFAULT_OUTPUT_FPS, ResultSink, Sink, open_sink
from .sources import (
    FrameSource,
    SourceError,
    SourceLike,
    input_files,
    missing_local_device,
    open_source,
    silence_video_library_logs,
)
from .stats import StreamStats, describe_runtime
from .uri import SinkSpec, parse_sink
from .workers import open_segmenters

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0


class FrameSegmenter(Protocol):
    """What a stream needs from a segmenter (:class:`unetrt.segmenter.Segmenter` is one)."""

    def segment(self, frame: np.ndarray) -> SegmentationResult:
        """One frame -> its mask and stage timings."""
        ...

    def colorize(self, result: SegmentationResult) -> np.ndarray:
        """The mask in class colours (HxWx3 BGR)."""
        ...


@dataclass
class StreamResult:
    """One segmented frame.

    Attributes:
        index: the frame's position among all frames the source delivered (gaps: dropped frames);
            results come in increasing index order whatever the number of workers.
        frame: the frame as captured (after any input resize).
        mask: HxW uint8 class ids at the frame's size.
        segmentation: the segmenter's full result (probabilities when asked for, timings).
        captured_at: ``time.perf_counter()`` when the frame was read.
        wall_time: ``time.time()`` when the frame was read, to match it with other sensors.
        latency_ms: capture to mask, end to end: the wait in the hand-off plus the segmentation.
        timings_ms: 'capture', 'preprocess', 'inference', 'postprocess'.
        fps: results per second over the last 30 results.
        header: the input message's header (stamp, frame_id, log time) when the source is a ROS 2 bag, else None.
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


_WRITER_DONE = object()


class OutputError(OSError):
    """Writing the output failed (a full disk, a stopped encoder); the frames written before it are kept."""

# What a worker hands the consuming thread for one taken item, in take order.
WorkerOutcome = StreamResult | EndOfStream | BaseException


class Stream:
    """Segments frames from a camera, stream, file, folder or Python iterable, live.

    Capture runs in its own thread; for live sources only the newest frame is kept
    (stale ones are dropped and counted), so latency stays bounded when inference is
    slower than the camera; stored sources lose no frame. Inference workers (one per
    CPU core by default, one on a GPU) segment frames side by side, each with its own
    segmenter. Results come out of iteration in capture order (and go to ``callback``)
    while a writer thread renders and writes them to ``output`` through a bounded queue.

    Args:
        source: a URI ('0', '/dev/video0', 'csi://0', 'rtsp://...', a video, a folder, a glob,
            'sample', a ROS 2 bag), a camera index, a :class:`FrameSource`, an iterable of frames or a function
            returning one.
        segmenter: a :class:`unetrt.segmenter.Segmenter` (or anything with ``segment``/``colorize``),
            or a model path or bundled name to open one per worker (then the stream closes them).
        output: None, 'display://0', a .mp4/.avi path, an image folder or pattern, a .mcap ROS 2 bag (each
            mask and JPEG overlay with the input's header), or a :class:`FrameSink`.
        live: override whether stale frames may be dropped (default: cameras and streams yes,
            files, folders and Python iterables no).
        visualize: panels to write: 'overlay', 'mask' or 'overlay,mask'.
        alpha: mask opacity in the overlay, in [0, 1].
        draw_stats: draw FPS and latency on written frames.
        legend: draw the class names and colours on written frames (needs a segmenter with ``info``).
        input_flip: 'none', 'horizontal', 'vertical', 'rotate-180', 'clockwise' or 'counterclockwise':
            how every frame is turned before it is segmented (a camera mounted upside down: 'rotate-180').
        input_size: ``(width, height)`` to resize every frame to (and ask cameras for).
        max_fps: process at most this many frames per second (None: as fast as possible).
        loop: replays of a stored source: 0 none, N more times, -1 forever.
        max_frames: stop after this many results.
        callback: called with every :class:`StreamResult` in the consuming thread.
        output_fps: rate stored in an output video (default: the source's, else ``max_fps``, else 30).
        queue_size: depth of the stored-source and writer queues.
        reconnect_delay: first and largest wait in seconds between reopen attempts of a failed live source.
        max_reconnects: reopen attempts in a row before a live source counts as gone (None: forever); also
            bounds the retries while a live source is not up yet at the start.
        wait: seconds to wait at the start for a live source that is not up yet, retrying with the
            reconnect backoff and a log line per attempt (None: as long as ``max_reconnects`` allows;
            0: fail at once). Stored sources never wait.
        open_timeout: seconds a network stream may take to open, or to deliver a frame, before the attempt
            counts as failed (None: FFmpeg's default, 30 s).
        segmenter_options: keyword arguments for :class:`~unetrt.segmenter.Segmenter` when ``segmenter``
            is a model name or path (e.g. ``{"backend": "onnxruntime", "threads": 2}``); without
            ``threads`` the CPU cores are shared out among the workers.
        workers: segmenters running side by side when ``segmenter`` is a model name or path (None: one per
            CPU core, at most 4, for CPU inference; one on a GPU). A segmenter object runs alone.
        overwrite: replace an existing output video, and delete an earlier run's frames (only files named
            like this output's frames) from an image output folder before writing; False refuses both.
        video_library_logs: let OpenCV and FFmpeg print their own log lines (``[ WARN:...]``) on stderr;
            by default they are silenced (as ``unet-stream`` does without ``--verbose``) and the stream's
            own log says what failed. A level set in ``OPENCV_LOG_LEVEL`` or ``OPENCV_FFMPEG_LOGLEVEL`` is kept.
        topic: the image topic of a ROS 2 bag source (None: the bag's only image topic).

    Raises:
        ValueError: on a bad option, source or output (one that is the input, or exists and ``overwrite`` is
            False), or ``workers`` above 1 with a segmenter object or a GPU model; FileNotFoundError when a path
            does not exist.

    Example:
        >>> with Stream("/dev/video0", "camvid") as stream:  # doctest: +SKIP
        ...     for result in stream:
        ...         steer(result.mask)
    """

    def __init__(self, source: SourceLike, segmenter: FrameSegmenter | str | Path = "camvid",
                 output: str | Sink | None = None, *, live: bool | None = None,
                 visualize: str | Sequence[str] = "overlay", alpha: float = 0.5, draw_stats: bool = True,
                 legend: bool = False, input_flip: str = "none",
                 input_size: tuple[int, int] | None = None, max_fps: float | None = None, loop: int = 0,
                 max_frames: int | None = None, callback: Callable[[StreamResult], object] | None = None,
                 output_fps: float | None = None, queue_size: int = 2,
                 reconnect_delay: tuple[float, float] = (0.5, 8.0), max_reconnects: int | None = None,
                 wait: float | None = None, open_timeout: float | None = None,
                 segmenter_options: dict[str, Any] | None = None, workers: int | None = None,
                 overwrite: bool = True, video_library_logs: bool = False, topic: str | None = None) -> None:
        _check_options(alpha, max_fps, loop, max_frames, queue_size, reconnect_delay, input_size, output_fps)
        if wait is not None and wait < 0:
            raise ValueError(f"wait must be >= 0 seconds (or None: as long as max_reconnects allows), got {wait}")
        if max_reconnects is not None and max_reconnects < 0:
            raise ValueError(f"max_reconnects must be >= 0 (or None: forever), got {max_reconnects}")
        self.visualize = parse_visualize(visualize)
        self.alpha = alpha
        self.draw_stats = draw_stats
        self.input_flip = check_flip(input_flip)
        self.input_size = input_size
        self.max_fps = max_fps
        self.loop = loop
        self.max_frames = max_frames
        self.callback = callback
        self.queue_size = queue_size
        self.reconnect_delay = reconnect_delay
        self.max_reconnects = max_reconnects
        self.wait = wait
        self.overwrite = overwrite
        if not video_library_logs:
            silence_video_library_logs()
        self.source: FrameSource = open_source(source, input_size, live, open_timeout, topic)
        # Parsed and checked now so a bad output is reported before a model is loaded.
        self._output: SinkSpec | Sink | None = parse_sink(output) if isinstance(output, str) else output
        if isinstance(self._output, SinkSpec):
            check_output_path(self._output)
            # Before the overwrite check: even with overwrite=True the input is never written over.
            check_not_input(self._output, input_files(self.source))
            check_existing_output(self._output, overwrite)
        self._output_fps = output_fps
        self._owns_segmenter = isinstance(segmenter, str | Path)
        if isinstance(segmenter, str | Path):
            self.segmenters: list[FrameSegmenter] = open_segmenters(segmenter, segmenter_options or {}, workers)
        else:
            if workers not in (None, 1):
                raise ValueError(f"workers={workers} needs one segmenter per worker, which the stream opens from a "
                                 "model name or path: pass the model rather than a segmenter object")
            self.segmenters = [segmenter]
        self.segmenter: FrameSegmenter = self.segmenters[0]
        self._legend = _legend_entries(self.segmenter) if legend else None
        self.stats = StreamStats()
        self.sink: Sink | None = None
        self._stop = threading.Event()
        self._handoff: Handoff | None = None
        self._capture: CaptureThread | None = None
        self._writer: threading.Thread | None = None
        self._writer_queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._writer_error: BaseException | None = None
        self._workers: list[threading.Thread] = []
        self._take_lock = threading.Lock()
        self._taken = 0
        self._source_ended = False
        self._next_due = 0.0
        self._outcomes: dict[int, WorkerOutcome] = {}
        self._outcome_ready = threading.Condition()
        self._state = "new"

    def start(self) -> Stream:
        """Open the source and output and start the capture and writer threads (iteration does this too).

        A live source that is not up yet is waited for (see ``wait``); when :meth:`stop` is called
        during that wait the stream ends without a frame.

        Raises:
            SourceError: when the source cannot be opened (a live one: within ``wait`` / ``max_reconnects``; a
                camera device path that does not exist: at once unless ``wait`` was given).
            ValueError: when the stream was already started, or the output cannot be opened.
        """
        if self._state != "new":
            raise ValueError(f"this stream is {self._state}; a Stream runs once, make a new one")
        device = missing_local_device(self.source)
        if device is not None and self.wait is None:
            raise SourceError(f"camera {device!r} does not exist (see ls /dev/video*); check the cable and the "
                              "number, or pass wait=SECONDS (--wait SECONDS) to wait for it to be plugged in")
        if not self.source.live:
            self.source.open()
        elif not open_when_up(self.source, self._stop, self.reconnect_delay, self.max_reconnects, self.wait):
            self._state = "finished"
            return self
        try:
            self.sink = open_sink(self._output, self._pick_output_fps(), replace_earlier=self.overwrite)
        except BaseException:
            self.source.close()
            raise
        self._state = "running"
        self.stats = StreamStats()
        self._handoff = LatestFrameSlot() if self.source.live else FrameQueue(self.queue_size)
        self._capture = CaptureThread(self.source, self._handoff, self.stats, self._stop, loop=self.loop,
                                      size=self.input_size, reconnect_delay=self.reconnect_delay,
                                      max_reconnects=self.max_reconnects)
        self._capture.start()
        if self.sink is not None:
            self._writer = threading.Thread(target=self._write_loop, name="unetrt-writer", daemon=True)
            self._writer.start()
        log.info("streaming %s (%s) -> %s", self.source.name, "live" if self.source.live else "stored",
                 self.sink.name if self.sink is not None else "no output")
        return self

    def _pick_output_fps(self) -> float:
        if self._output_fps is not None:
            return self._output_fps
        if self.source.live and self.max_fps is not None:
            return self.max_fps
        return self.source.fps or self.max_fps or DEFAULT_OUTPUT_FPS

    def __iter__(self) -> Iterator[StreamResult]:
        """Segment frames until the source ends, ``max_frames`` is reached, or :meth:`stop` is called.

        Raises:
            SourceError: when the source fails for good, or a stored one has no frame that decodes.
            OutputError: when the output fails (what was written before is finished and kept).
        """
        if self._state == "new":
            self.start()
            if self._state != "running":
                return  # stopped while waiting for a live source to come up
        elif self._state != "running":
            raise ValueError(f"this stream is {self._state}; a Stream runs once, make a new one")
        try:
            yield from self._results()
        finally:
            # Also on an exception, a break in the caller's loop or Ctrl-C: the output is always finished.
            self._shutdown()
        self._raise_writer_error()

    def _results(self) -> Iterator[StreamResult]:
        self._next_due = time.perf_counter()
        self._workers = [threading.Thread(target=self._work, args=(segmenter,), name=f"unetrt-infer-{i}", daemon=True)
                         for i, segmenter in enumerate(self.segmenters)]
        for worker in self._workers:
            worker.start()
        sequence = 0
        while True:
            outcome = self._next_outcome(sequence)
            if outcome is None:
                return
            sequence += 1
            if isinstance(outcome, EndOfStream):
                if outcome.error is not None:
                    raise outcome.error
                return
            if isinstance(outcome, BaseException):
                raise outcome
            self.stats.mark_result()
            outcome.fps = self.stats.live_fps()
            if self._writer is not None:
                self._send_to_writer(outcome)
            if self.callback is not None:
                self.callback(outcome)
            yield outcome

    def _next_outcome(self, sequence: int) -> WorkerOutcome | None:
        """The outcome of the ``sequence``-th taken item, waiting for it (None once the stream is stopped)."""
        while True:
            self._raise_writer_error()
            with self._outcome_ready:
                if sequence in self._outcomes:
                    outcome = self._outcomes.pop(sequence)
                    self._outcome_ready.notify_all()
                    return outcome
                if self._stop.is_set():
                    return None
                self._outcome_ready.wait(POLL_S)

    def _work(self, segmenter: FrameSegmenter) -> None:
        """One inference worker: take the next item, segment it, hand the outcome over in take order."""
        while True:
            with self._outcome_ready:
                # Run at most one result per worker ahead of the consumer, so a slow loop body holds frames
                # back in the hand-off (where a live source replaces them) rather than piling up results.
                while len(self._outcomes) >= len(self.segmenters) and not self._stop.is_set():
                    self._outcome_ready.wait(POLL_S)
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
            with self._outcome_ready:
                self._outcomes[sequence] = outcome
                self._outcome_ready.notify_all()
            if not isinstance(outcome, StreamResult):
                return

    def _take(self) -> tuple[int, HandoffItem] | None:
        """The next frame (or the end) with its take-order number; None when this worker should stop."""
        with self._take_lock:
            while not self._stop.is_set() and not self._source_ended:
                if self.max_frames is not None and self._taken >= self.max_frames:
                    return self._end_taking(EndOfStream())
                if self.max_fps is not None:
                    wait = self._next_due - time.perf_counter()
                    if wait > 0 and self._stop.wait(wait):
                        return None
                    self._next_due = max(self._next_due + 1.0 / self.max_fps, time.perf_counter())
                try:
                    item = self._handoff_item()
                except queue.Empty:
                    continue
                if isinstance(item, EndOfStream):
                    return self._end_taking(item)
                sequence, self._taken = self._taken, self._taken + 1
                return sequence, item
            return None

    def _handoff_item(self) -> HandoffItem:
        assert self._handoff is not None
        item = self._handoff.get(POLL_S)
        assert isinstance(item, CapturedFrame | EndOfStream)
        return item

    def _end_taking(self, end: EndOfStream) -> tuple[int, HandoffItem]:
        """Called with the take lock held: ``end`` is the last item any worker takes."""
        self._source_ended = True
        sequence, self._taken = self._taken, self._taken + 1
        return sequence, end

    def run(self) -> dict[str, Any]:
        """Consume the whole stream (results go to ``callback`` and the output) and close it.

        Returns:
            The :meth:`summary`.
        """
        with self:
            for _ in self:
                pass
        return self.summary()

    def _segment(self, item: CapturedFrame, segmenter: FrameSegmenter) -> StreamResult:
        taken_at = time.perf_counter()
        image = flip_frame(item.image, self.input_flip)
        segmentation = segmenter.segment(image)
        done_at = time.perf_counter()
        latency = (done_at - item.captured_at) * 1e3
        self.stats.add("queue_wait", (taken_at - item.captured_at) * 1e3)
        self.stats.add("processing", (done_at - taken_at) * 1e3)
        timings = {"capture": item.capture_ms}
        for stage in ("preprocess", "inference", "postprocess"):
            if stage in segmentation.timings_ms:
                timings[stage] = segmentation.timings_ms[stage]
                self.stats.add(stage, timings[stage])
        self.stats.add("latency", latency)
        return StreamResult(item.index, image, segmentation.mask, segmentation, item.captured_at,
                            item.wall_time, latency, timings, header=item.header)

    def render(self, result: StreamResult) -> np.ndarray:
        """The picture the output gets for a result: the chosen panels, with FPS and latency drawn on."""
        frame = result.frame if result.frame.ndim == 3 else cv2.cvtColor(result.frame, cv2.COLOR_GRAY2BGR)
        image = compose(frame, self.segmenter.colorize(result.segmentation), self.visualize, self.alpha)
        if self.draw_stats:
            dropped = self.stats.counters["dropped"]
            caption = f"{result.fps:.1f} FPS  latency {result.latency_ms:.0f} ms"
            draw_caption(image, caption + (f"  dropped {dropped}" if dropped else ""))
        if self._legend is not None:
            draw_legend(image, *self._legend)
        return image

    def _send_to_writer(self, result: StreamResult) -> None:
        while True:
            self._raise_writer_error()
            try:
                self._writer_queue.put(result, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _write_loop(self) -> None:
        assert self.sink is not None
        while True:
            item = self._writer_queue.get()
            if item is _WRITER_DONE:
                break
            if self._writer_error is not None:
                continue  # keep draining so the inference thread never blocks on a dead writer
            assert isinstance(item, StreamResult)
            try:
                started = time.perf_counter()
                image = self.render(item)
                rendered = time.perf_counter()
                if isinstance(self.sink, ResultSink):
                    self.sink.write_result(item, image)
                else:
                    self.sink.write(image)
                written = time.perf_counter()
            except Exception as exc:  # reported to the consuming thread, which raises it
                self._writer_error = exc
                self._stop.set()
                continue
            self.stats.add("visualize", (rendered - started) * 1e3)
            self.stats.add("write", (written - rendered) * 1e3)
            self.stats.add("output_latency", (written - item.captured_at) * 1e3)
            self.stats.count("written")
            if self.sink.wants_stop:
                self._stop.set()
        try:
            self.sink.close()
        except Exception as exc:  # a video that cannot be finished is an output failure like any other
            self._writer_error = self._writer_error or exc

    def _raise_writer_error(self) -> None:
        if self._writer_error is not None:
            error, self._writer_error = self._writer_error, None
            raise OutputError(f"writing to {self.sink.name if self.sink else 'the output'} failed: {error}") from error

    def stop(self) -> None:
        """Ask the stream to end; iteration finishes after the frame in hand. Safe from any thread."""
        self._stop.set()

    def _shutdown(self) -> None:
        """Stop capture, flush and close the output; idempotent."""
        if self._state != "running":
            return
        self._state = "finished"
        self._stop.set()
        for worker in self._workers:
            # A worker ends within a poll interval, or after the frame it is segmenting.
            worker.join()
        if self._capture is not None:
            self._capture.join(JOIN_TIMEOUT_S)
            if self._capture.is_alive():
                log.warning("capture from %s did not stop within %.0f s (a blocked read)", self.source.name,
                            JOIN_TIMEOUT_S)
        if self._writer is not None:
            self._writer_queue.put(_WRITER_DONE)
            self._writer.join()

    def close(self) -> None:
        """Stop, flush the output, release the source and (if the stream opened them) the segmenters."""
        self._shutdown()
        if self._state == "new":
            self._state = "finished"
        if self._owns_segmenter:
            for segmenter in self.segmenters:
                close = getattr(segmenter, "close", None)
                if close is not None:
                    close()

    def summary(self) -> dict[str, Any]:
        """What ran (backend, precision, model, device, threads, workers), counters, FPS and latencies (JSON-ready).

        Latencies: p50/p95/p99 per stage, end to end, in the hand-off queue and in processing;
        ``output_codec`` names a video's codec.
        """
        return {"source": self.source.name, "output": self.sink.name if self.sink else None,
                "output_codec": getattr(self.sink, "codec", None), "live": self.source.live,
                "runtime": {**describe_runtime(self.segmenter), "workers": len(self.segmenters)},
                **self.stats.summary()}

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _legend_entries(segmenter: FrameSegmenter) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and BGR colours for the legend, from the segmenter's palette (the colours of its masks)."""
    palette: Palette | None = getattr(segmenter, "palette", None)
    if palette is None:
        raise ValueError("legend needs a segmenter that describes its classes (a unetrt Segmenter has .palette)")
    return palette.legend()


def _check_options(alpha: float, max_fps: float | None, loop: int, max_frames: int | None, queue_size: int,
                   reconnect_delay: tuple[float, float], input_size: tuple[int, int] | None,
                   output_fps: float | None) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if max_fps is not None and not max_fps > 0:
        raise ValueError(f"max_fps must be positive, got {max_fps}")
    if output_fps is not None and not output_fps > 0:
        raise ValueError(f"output_fps must be positive, got {output_fps}")
    if loop < -1:
        raise ValueError(f"loop must be -1 (forever), 0 (once) or a positive count, got {loop}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if queue_size < 1:
        raise ValueError(f"queue_size must be at least 1, got {queue_size}")
    first, longest = reconnect_delay
    if not 0 <= first <= longest:
        raise ValueError(f"reconnect_delay must be (first, longest) with 0 <= first <= longest, got {reconnect_delay}")
    if input_size is not None and (len(input_size) != 2 or min(input_size) < 1):
        raise ValueError(f"input_size must be (width, height) with positive values, got {input_size}")
