"""``Stream``: capture, inference and writing as overlapping stages with bounded latency.

Capture fills a hand-off (the newest frame for live sources, a bounded queue for stored
ones); one or more inference workers take frames from it, each with its own segmenter;
results leave in capture order, to the caller's loop and to a writer thread. ``Stream``
owns the life cycle and wires the parts: :class:`~unetrt.stream.capture.CaptureThread`,
:class:`~unetrt.stream.inference.InferenceWorkers`, :class:`~unetrt.stream.writer.ResultWriter`,
:class:`~unetrt.stream.render.Renderer`, with its settings in
:class:`~unetrt.stream.options.StreamOptions`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..build_watch import BuildStep, checking_before_builds, watching_builds
from ..preprocessing import check_color_order
from .capture import (
    POLL_S,
    CaptureThread,
    CaptureTransform,
    EndOfStream,
    FrameQueue,
    Handoff,
    LatestFrameSlot,
    open_stored,
    open_when_up,
)
from .early_open import EarlyOpen, opens_early
from .inference import FrameSegmenter, InferenceWorkers, WorkerOutcome
from .options import StreamOptions
from .output_path import check_existing_output, check_not_input, check_output_path
from .render import Renderer, legend_entries, segmenter_palette
from .result import StreamResult
from .rosbag import RosbagSink, RosbagSource
from .sinks import DEFAULT_OUTPUT_FPS, FrameSink, ResultSink, Sink, open_sink
from .sources import (
    FrameSource,
    SourceError,
    SourceLike,
    give_up_on,
    input_files,
    missing_local_device,
    open_source,
    silence_video_library_logs,
)
from .stats import StreamStats, describe_runtime
from .uri import SinkSpec, parse_sink
from .webview import HttpViewSink
from .workers import open_segmenters
from .writer import ResultWriter

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0

# Streams started and not yet shut down. A stream left running at the interpreter's exit (an iterator kept
# unfinished, no close()) is finished before the interpreter tears down: its worker threads are daemons, killed
# mid-write at the end (the output video was left empty) and mid-inference (ONNX Runtime then aborted the process).
_running: weakref.WeakSet[Stream] = weakref.WeakSet()


def _finish_running_streams() -> None:
    for stream in list(_running):
        try:
            stream._shutdown()
        except Exception:  # the others are still finished
            log.exception("finishing %s at exit failed", stream.source.name)


atexit.register(_finish_running_streams)
# A fork child has none of the parent's threads, and its outputs are the parent's to finish.
os.register_at_fork(after_in_child=_running.clear)


class Stream:
    """Segments frames from a camera, stream, file, folder or Python iterable, live.

    Capture runs in its own thread, where every frame is checked, resized and flipped once; for live
    sources only the newest frame is kept (stale ones are dropped and counted), so latency stays bounded
    when inference is slower than the camera; stored sources lose no frame. Inference workers (one per
    CPU core by default, one on a GPU) segment frames side by side, each with its own segmenter. Results
    come out of iteration in capture order (and go to ``callback``) while a writer thread renders and
    writes them to ``output`` through a bounded queue.

    Args:
        source: a URI ('0', '/dev/video0', 'csi://0', 'rtsp://...', a video, a folder, a glob,
            'sample', a ROS 2 bag), a camera index, a :class:`FrameSource`, an iterable of frames or a function
            returning one.
        segmenter: a :class:`unetrt.segmenter.Segmenter` (or anything with ``segment``/``colorize``),
            or a model path or bundled name to open one per worker (then the stream closes them).
        output: None, 'display://0', a .mp4/.avi path (str or Path), an image folder or pattern, 'http://HOST:PORT'
            (a live view in the browser, served from when the stream is made: until the first frame its page says
            what the stream does, such as a first TensorRT engine build and its progress), a .mcap ROS 2 bag (each
            mask and JPEG overlay with the input's header), a parsed :class:`~unetrt.stream.uri.SinkSpec`, or a
            :class:`FrameSink`.
        options: the stream's settings (:class:`~unetrt.stream.options.StreamOptions`; None: the defaults).
        callback: called with every :class:`StreamResult` in the consuming thread.
        **settings: any :class:`~unetrt.stream.options.StreamOptions` field by name (``max_fps=15``,
            ``legend="inside"``, ``input_size=(640, 480)``, ...), laid over ``options``.

    A camera, stream or video given by its URI, with a model given by its name or path, is opened while the model
    opens (its first open on a Jetson builds a TensorRT engine for minutes): one that cannot open for good is
    reported before the build begins (one that a live source's policy gives up on during the build is said then, and
    :meth:`start` tries it once more); one that opened is let go for a build (a file on this machine stays open,
    unread) and opened again by :meth:`start`, and
    without a build :meth:`start` takes it open (a live source's frames are read and dropped until then, so that the
    first result is not of a frame its driver queued while the model loaded; a file is not read, and starts at its
    first frame).

    Raises:
        ValueError: on a bad setting, source, segmenter, callback or output (one that is the input, or exists and
            ``overwrite`` is False), or ``workers`` above 1 with a segmenter object or a GPU model;
            FileNotFoundError when a path does not exist; SourceError when the source, opened while the model
            opens, has failed for good (a file that does not open; a live source within ``wait`` /
            ``max_reconnects``) before an engine build begins.

    Example:
        >>> with Stream("/dev/video0", "camvid", max_fps=15) as stream:  # doctest: +SKIP
        ...     for result in stream:
        ...         steer(result.mask)
    """

    def __init__(self, source: SourceLike, segmenter: FrameSegmenter | str | Path = "camvid",
                 output: str | Path | SinkSpec | Sink | None = None, options: StreamOptions | None = None, *,
                 callback: Callable[[StreamResult], object] | None = None, **settings: Any) -> None:
        self.options = StreamOptions.from_settings(options, settings)
        _check_arguments(segmenter, output, callback)
        self.callback = callback
        if not self.options.video_library_logs:
            silence_video_library_logs()
        self.source: FrameSource = open_source(source, self.options.input_size, self.options.live,
                                               self.options.open_timeout, self.options.topic)
        # Parsed and checked now so a bad output is reported before a model is loaded.
        self._output: SinkSpec | Sink | None = parse_sink(str(output)) if isinstance(output, str | Path) else output
        if isinstance(self._output, SinkSpec):
            check_output_path(self._output)
            # Before the overwrite check: even with overwrite=True the input is never written over.
            check_not_input(self._output, input_files(self.source))
            check_existing_output(self._output, self.options.overwrite)
        _warn_if_masks_leave_the_camera(self.source, self._output, self.options)
        self._owns_segmenter = isinstance(segmenter, str | Path)
        # The source opened while the model opens (see _open_model), taken by start().
        self._early: EarlyOpen | None = None
        self._early_dropped: weakref.finalize[[], Stream] | None = None
        # The live view is served from here on, before the model opens (its first open on a Jetson builds a TensorRT
        # engine for minutes, during which a browser was refused as if the install were broken): its page says what
        # the stream does meanwhile. Opening it here also refuses a busy port before anything else.
        self._page: HttpViewSink | None = _serve_early(self._output)
        if self._page is not None:
            self._output = self._page
            # Dropped unclosed (never started): the port is let go, as it was when nothing listened before start().
            weakref.finalize(self, self._page.close)
        try:
            self._open_model(segmenter)
        except BaseException:  # Ctrl-C or SIGTERM during the build too: the page goes, as the program ends
            if self._early is not None:
                self._early.abandon()
            if self._page is not None:
                self._page.close()
            raise
        self.stats = StreamStats()
        self.sink: Sink | None = None
        self._stop = threading.Event()
        self._handoff: Handoff | None = None
        self._capture: CaptureThread | None = None
        self._writer: ResultWriter | None = None
        self._workers: InferenceWorkers | None = None
        self._state = "new"
        # One loop consumes a stream: a second one (another thread, or a loop in the callback) took frames of its
        # own from the same capture, so each loop silently missed the other's frames.
        self._iteration_lock = threading.Lock()
        self._iterating = False
        # A fork() child has none of the stream's threads: its loop waited for ever for results nobody made.
        self._process = os.getpid()

    def _open_model(self, segmenter: FrameSegmenter | str | Path) -> None:
        """Check the source against the model, open the segmenters (and meanwhile the source) and the renderer."""
        if self._owns_segmenter:
            # Before the model is opened: its first open on a Jetson builds a TensorRT engine for minutes.
            _check_camera_exists(self.source, self.options.wait)
        # Before a model is opened, for the same reason.
        _check_color_order(self.source, segmenter, self.options)
        with contextlib.ExitStack() as opening:
            page = None
            if self._page is not None and self._owns_segmenter:
                page = opening.enter_context(_watching_on_page(self._page, f"loading the model {segmenter}"))
            if self._owns_segmenter and opens_early(self.source):
                # Opened beside the model, and asked before a build begins: a camera that is not connected (a CSI
                # sensor has no device file to check) was found minutes into a Jetson's first run, once the engine
                # was built.
                self._early = EarlyOpen(self.source, self.options, page.source_news if page is not None else None)
                # Dropped unclosed and never started (also made no further: an interrupt before __init__'s end): the
                # source, which the opening's thread holds (a live one read without end, its frames dropped), is let
                # go, as the page's port is.
                self._early_dropped = weakref.finalize(self, self._early.abandon)
                opening.enter_context(checking_before_builds(self._early.before_build))
            self.segmenters: list[FrameSegmenter] = self._segmenters(segmenter)
        try:
            self.segmenter: FrameSegmenter = self.segmenters[0]
            hidden = self.options.ignore_classes
            legend = legend_entries(self.segmenter, hidden) if self.options.legend != "off" else None
            undrawn_ids = segmenter_palette(self.segmenter).ids_of(hidden) if hidden else ()
            self.renderer = Renderer(self.segmenter, self.options.visualize, self.options.alpha,
                                     self.options.draw_stats, legend, str(self.options.legend), undrawn_ids,
                                     getattr(self.segmenter, "color_order", "bgr"))
        except BaseException:
            # Also SIGTERM's TerminatedError, raised wherever the opening stands: what was opened is closed.
            self._close_segmenters()
            raise

    def _segmenters(self, segmenter: FrameSegmenter | str | Path) -> list[FrameSegmenter]:
        workers = self.options.workers
        if isinstance(segmenter, str | Path):
            return open_segmenters(segmenter, dict(self.options.segmenter_options), workers)
        if workers not in (None, 1):
            raise ValueError(f"workers={workers} needs one segmenter per worker, which the stream opens from a "
                             "model name or path: pass the model rather than a segmenter object")
        return [segmenter]

    def start(self) -> Stream:
        """Open the source and output and start the capture and writer threads (iteration does this too).

        A live source that is not up yet is waited for (see ``wait``); when :meth:`stop` is called
        during that wait the stream ends without a frame.

        Raises:
            SourceError: when the source cannot be opened (a live one: within ``wait`` / ``max_reconnects``, counted
                from when its opening began, with the model's; a camera device path that does not exist: at once
                unless ``wait`` was given).
            ValueError: when the stream was already started, the output cannot be opened, or this process is a fork of
                the one that made the stream.
        """
        self._check_process()
        if self._state != "new":
            raise ValueError(f"this stream is {self._state}; a Stream runs once, make a new one")
        options = self.options
        if self._page is not None:
            self._page.set_status(f"opening {self.source.name}")
        if not self._open_source():
            self._state = "finished"
            return self
        try:
            self.sink = open_sink(self._output, self._pick_output_fps(), replace_earlier=options.overwrite)
        except BaseException:
            self.source.close()
            raise
        self._state = "running"
        _running.add(self)
        # Dropped without close() and never iterated (no loop to finish it): the capture stops and releases the
        # source, which it otherwise held (a camera, for other programs too) until the process ended.
        weakref.finalize(self, self._stop.set)
        self.stats = StreamStats()
        self._handoff = LatestFrameSlot() if self.source.live else FrameQueue(options.queue_size)
        self._capture = CaptureThread(self.source, self._handoff, self.stats, self._stop, loop=options.loop,
                                      transform=CaptureTransform(options.input_size, options.input_flip),
                                      reconnect_delay=options.reconnect_delay,
                                      max_reconnects=options.max_reconnects)
        if self._page is not None:
            self._page.set_status("waiting for the first frame")
        self._capture.start()
        if self.sink is not None:
            self._writer = ResultWriter(self.sink, self.render, self.stats, self._stop, options.queue_size)
            self._writer.start()
        log.info("streaming %s (%s) -> %s", self.source.name, "live" if self.source.live else "stored",
                 self.sink.name if self.sink is not None else "no output")
        return self

    def _open_source(self) -> bool:
        """Open the source, or take it from the opening begun with the model's; False when stopped first.

        Raises:
            SourceError: when the source cannot be opened.
        """
        early = self._take_early()
        options = self.options
        wait = options.wait
        if early is not None:
            held = early.result(self._stop)
            if held is not False:
                return bool(held)
            # Let go for a build's minutes: opened again now, as a source not opened early is; one the retry policy
            # gave up on during the build gets one attempt more, its wait spent.
            wait = 0 if early.one_more_attempt else wait
        _check_camera_exists(self.source, wait)  # again: it may have been unplugged since
        if not self.source.live:
            return open_stored(self.source, self._stop)
        return open_when_up(self.source, self._stop, options.reconnect_delay, options.max_reconnects, wait)

    def _take_early(self) -> EarlyOpen | None:
        """The opening begun with the model's, if any, now the caller's to finish: not let go when the stream is
        dropped (the capture may own the source by then)."""
        early, self._early = self._early, None
        if self._early_dropped is not None:
            self._early_dropped.detach()
        return early

    def _pick_output_fps(self) -> float:
        if self.options.output_fps is not None:
            return self.options.output_fps
        if self.source.live and self.options.max_fps is not None:
            return self.options.max_fps
        return self.source.fps or self.options.max_fps or DEFAULT_OUTPUT_FPS

    def __iter__(self) -> Iterator[StreamResult]:
        """Segment frames until the source ends, ``max_frames`` is reached, or :meth:`stop` is called.

        Raises:
            SourceError: when the source fails for good, or a stored one has no frame that decodes.
            OutputError: when the output fails (what was written before is finished and kept).
            ValueError: in a process forked from the one that made the stream (make a new one there).
        """
        self._check_process()  # before the lock, which a loop in the parent may have held at the fork
        with self._iteration_lock:
            if self._state == "new":
                self.start()
                if self._state != "running":
                    return  # stopped while waiting for a live source to come up
            elif self._state != "running":
                raise ValueError(f"this stream is {self._state}; a Stream runs once, make a new one")
            if self._iterating:
                raise ValueError("this stream is already being iterated (in another loop or thread), and each "
                                 "result comes out once: iterate it in one loop, and hand the results to other "
                                 "threads from there")
            self._iterating = True
        try:
            yield from self._results()
        except Exception as exc:
            if self._page is not None:
                # An operator watching the page sees why the stream stopped (a NaN frame, a camera gone).
                self._page.end(" ".join(str(exc).split()))
            raise
        finally:
            # Also on an exception, a break in the caller's loop or Ctrl-C: the output is always finished.
            self._shutdown()
        self._raise_writer_error()

    def _results(self) -> Iterator[StreamResult]:
        assert self._handoff is not None
        # A live stream's results wait for a slow loop one at a time: with one per worker waiting, a loop taking
        # 200 ms a result got masks of frames 415 ms old (2 workers) where one worker gave 224 ms; the newer frames
        # wait in the hand-off, where stale ones are replaced. A stored source keeps every worker busy.
        self._workers = InferenceWorkers(self.segmenters, self._handoff, self.stats, self._stop,
                                         self.options.max_fps, self.options.max_frames,
                                         waiting=1 if self.source.live else None)
        self._workers.start()
        sequence = 0
        while True:
            outcome = self._next_outcome(sequence)
            if outcome is None:
                return
            sequence += 1
            if isinstance(outcome, EndOfStream):
                if outcome.error is not None:
                    if sequence == 1 and isinstance(self.sink, RosbagSink):
                        # Failed before a result (no frame decodes): no bag, as no video file is made then,
                        # rather than an empty one that the next run would have to --overwrite.
                        self.sink.discard_if_empty()
                    raise outcome.error
                return
            if isinstance(outcome, BaseException):
                raise outcome
            self.stats.mark_result()
            outcome.fps = self.stats.live_fps()
            if self._writer is not None:
                self._writer.send(outcome)
            if self.callback is not None:
                self.callback(outcome)
            yield outcome

    def _check_process(self) -> None:
        if os.getpid() != self._process:
            raise ValueError(f"this stream was made in process {self._process}, and this process is a fork of it, "
                             "without its capture, inference and writer threads; make a new Stream here (or start "
                             "processes with multiprocessing's 'spawn' method)")

    def _next_outcome(self, sequence: int) -> WorkerOutcome | None:
        """The outcome of the ``sequence``-th taken item, waiting for it (None once the stream is stopped)."""
        self._check_process()  # a loop the parent started, resumed in a fork child
        while True:
            self._raise_writer_error()
            if self._state != "running":
                # close() ran (from the callback or another thread): the output is finished, and a result taken
                # now would reach the loop and the callback but never the output.
                return None
            stopped = self._stop.is_set()
            assert self._workers is not None
            outcome = self._workers.outcome(sequence, 0.0 if stopped else POLL_S)
            if outcome is not None or stopped:
                return outcome

    def run(self) -> dict[str, Any]:
        """Consume the whole stream (results go to ``callback`` and the output) and close it.

        Returns:
            The :meth:`summary`.
        """
        with self:
            for _ in self:
                pass
        return self.summary()

    def render(self, result: StreamResult) -> np.ndarray:
        """The picture the output gets for a result: the chosen panels, with FPS, latency and legend drawn on."""
        return self.renderer.render(result, self.stats.counters["dropped"])

    def _raise_writer_error(self) -> None:
        if self._writer is not None:
            self._writer.raise_error()

    def stop(self) -> None:
        """Ask the stream to end; iteration finishes after the frame in hand. Safe from any thread."""
        self._stop.set()

    def _shutdown(self) -> None:
        """Stop capture, flush and close the output; idempotent. One interrupted part way (a second Ctrl-C while
        the loop's own shutdown waits for the workers) is done by the next call (``close()``): the output is
        still finished."""
        if os.getpid() != self._process:
            # A fork child (the loop's own finally, or close()): the output and source are the parent's to finish,
            # as at the child's exit (_running is cleared at the fork), and its threads are not here to join.
            self._state = "finished"
            return
        if self._state not in ("running", "stopping"):
            return
        self._state = "stopping"
        self._stop.set()
        if self._workers is not None:
            self._workers.join()
        if self._capture is not None:
            self._capture.join(JOIN_TIMEOUT_S)
            if self._capture.is_alive():
                log.warning("capture from %s did not stop within %.0f s (a blocked read)", self.source.name,
                            JOIN_TIMEOUT_S)
                give_up_on(self._capture)
        if self._writer is not None:
            self._writer.finish()
        self._state = "finished"
        _running.discard(self)

    def close(self) -> None:
        """Stop, flush the output, release the source and (if the stream opened them) the segmenters; a loop over
        the stream ends at its next step (from the callback too), without the results not yet taken; a wait for a
        live source that is not up yet (on another thread) ends too, without a frame."""
        # Set before anything else: a stream still starting (waiting for its camera) has nothing to shut down, and
        # its wait, which ends only on this event, retried for ever on a stream that called itself finished.
        self._stop.set()
        self._shutdown()
        if self._state == "new":
            self._state = "finished"
            early = self._take_early()
            if early is not None:  # opened beside the model, never taken by start()
                early.abandon()
        if self._page is not None:  # served since the stream was made, also when it never started
            self._page.close()
        self._close_segmenters()

    def _close_segmenters(self) -> None:
        """Close the segmenters the stream opened (from a model name or path), not one it was given."""
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

    def __reduce__(self) -> tuple[Any, ...]:
        # Without this, pickle (a Stream handed to a ProcessPoolExecutor or multiprocessing.Process with 'spawn')
        # failed on an internal lock ("cannot pickle '_thread.lock' object"), naming neither the stream nor the fix.
        raise TypeError("a Stream cannot be pickled or copied: it holds its source, output, threads and segmenters; "
                        "make the Stream in the process that iterates it (pass the source and model names there), "
                        "and pass results, which pickle")

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _serve_early(output: SinkSpec | Sink | None) -> HttpViewSink | None:
    """The live view of an ``http://`` output, listening now (None for any other output).

    Raises:
        ValueError: when its address cannot be listened on (a busy port), in one line.
    """
    if isinstance(output, SinkSpec) and output.kind == "http" and output.address is not None:
        return HttpViewSink(*output.address)
    return None


class _BuildOnPage:
    """Shows on the live view's page what opening the model prints on stderr: the engine cache's lines (``building a
    TensorRT engine for camvid ...``) and the build's progress, the steps of TensorRT's phases; and, after them, what
    the source opened meanwhile says (``csi://0 is not up yet (...)``)."""

    def __init__(self, page: HttpViewSink, status: str) -> None:
        self._page = page
        self._note = status
        self._source: str | None = None
        self._step: BuildStep | None = None
        self._lock = threading.Lock()  # told from the builder's threads and the source's
        self._open = True
        page.set_status(status)

    def _show(self) -> None:
        with self._lock:
            if self._open:
                status = self._note if self._source is None else f"{self._note}; {self._source}"
                self._page.set_status(status, self._step)

    def build_note(self, text: str) -> None:
        self._note, self._step = text, None
        self._show()

    def build_step(self, step: BuildStep) -> None:
        self._step = step
        self._show()

    def source_news(self, text: str) -> None:
        self._source = text
        self._show()

    def close(self) -> None:
        """Leave the page to the stream, which says what it does from here on ("opening csi://0", ...)."""
        with self._lock:
            self._open = False


@contextlib.contextmanager
def _watching_on_page(page: HttpViewSink, status: str) -> Iterator[_BuildOnPage]:
    """:class:`_BuildOnPage` watching the builds of the block, and no longer told anything after it."""
    shown = _BuildOnPage(page, status)
    try:
        with watching_builds(shown):
            yield shown
    finally:
        shown.close()


def _warn_if_masks_leave_the_camera(source: FrameSource, output: SinkSpec | Sink | None,
                                    options: StreamOptions) -> None:
    """Warn when a bag's masks go to a bag with the camera's stamps and frame_id but not its pixels: resized or
    turned at capture, they no longer line up with the camera's images (and its camera_info) as ros.md says."""
    to_bag = isinstance(output, RosbagSink) or (isinstance(output, SinkSpec) and output.kind == "rosbag")
    changed = [flag for flag, used in (("--input-width/--input-height", options.input_size is not None),
                                       ("--input-flip", options.input_flip != "none")) if used]
    if isinstance(source, RosbagSource) and to_bag and changed:
        log.warning("the masks written to the bag are of %s's images as %s changed them, yet carry their stamps "
                    "and frame_id: they do not line up pixel for pixel with the camera (or its camera_info); leave "
                    "%s out for masks that do", source.topic, " and ".join(changed), " and ".join(changed))


def _check_camera_exists(source: FrameSource, wait: float | None) -> None:
    """Refuse a local camera whose device file does not exist, unless the stream is to wait for it.

    Raises:
        SourceError: naming the device and how to wait for it.
    """
    device = missing_local_device(source)
    if device is not None and wait is None:
        raise SourceError(f"camera {device!r} does not exist (see ls /dev/video*); check the cable and the "
                          "number, or pass wait=SECONDS (--wait SECONDS) to wait for it to be plugged in")


def _check_color_order(source: FrameSource, segmenter: object, options: StreamOptions) -> None:
    """Refuse a source that decodes its frames in one colour order (OpenCV's BGR) for a segmenter that takes the
    other: every mask would be silently worse. A Python iterable's frames are the caller's, in the segmenter's order.

    Raises:
        ValueError: naming the source, both orders and the fix; on an unknown ``color_order`` in the options.
    """
    if isinstance(segmenter, str | Path):
        wanted = check_color_order(options.segmenter_options.get("color_order", "bgr"))
    else:
        wanted = getattr(segmenter, "color_order", "bgr")
    decoded = getattr(source, "color_order", None)
    if decoded is not None and decoded != wanted:
        raise ValueError(f"{source.name!r} decodes {decoded.upper()} frames but the segmenter takes "
                         f"color_order={wanted!r}: open the segmenter with color_order={decoded!r} for this source "
                         f"(its masks are the same), or pass the frames yourself, as an iterable in "
                         f"{wanted.upper()}")


def _check_arguments(segmenter: object, output: object, callback: object) -> None:
    """Refuse what would fail only once frames flow (an AttributeError deep inside, a TypeError at the first result).

    Raises:
        ValueError: naming the argument, what it accepts and the value given.
    """
    if not (isinstance(segmenter, str | Path) or callable(getattr(segmenter, "segment", None))):
        raise ValueError("segmenter must be a model name or path (e.g. 'camvid') or an object with a "
                         f"segment(frame) method such as a unetrt Segmenter, got {segmenter!r}")
    if output is not None and not isinstance(segmenter, str | Path) and not callable(getattr(segmenter, "colorize",
                                                                                                 None)):
        # Drawing the output needs it: the first write failed, after the output was opened.
        raise ValueError(f"segmenter {segmenter!r} has no colorize(result) method, which drawing the output needs: "
                         "add one returning the mask in colours (HxWx3 uint8), or stream without an output")
    if not (output is None or isinstance(output, str | Path | SinkSpec | FrameSink | ResultSink)):
        raise ValueError("output must be None, a path or URI (e.g. 'out.mp4', 'display://0'), a SinkSpec or a sink "
                         f"object with write() and close(), got {output!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a function taking each StreamResult (or None), got {callback!r}")
