"""The writer thread of a stream: renders each result and writes it to the sink, behind a bounded queue."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, cast

import numpy as np

from .capture import POLL_S
from .sinks import ResultSink, Sink
from .stats import StreamStats

if TYPE_CHECKING:
    from .result import StreamResult

_DONE = object()


class OutputError(OSError):
    """Writing the output failed (a full disk, a stopped encoder); the frames written before it are kept.

    Example:
        >>> try:  # doctest: +SKIP
        ...     Stream("/dev/video0", "camvid", output="/mnt/full_disk/out.mp4").run()
        ... except OutputError as error:
        ...     print(error)  # names the output and the cause; what was written before stays playable
    """


class ResultWriter:
    """Renders and writes results in a thread of its own; the first failure stops the stream.

    A failure is kept and raised in the consuming thread by :meth:`raise_error` (as :class:`OutputError`); the
    thread keeps draining its queue so the consumer never blocks on a dead writer.

    Args:
        sink: where the pictures (or whole results, for a :class:`~unetrt.stream.sinks.ResultSink`) go; the
            writer closes it when it finishes.
        render: result -> the picture to write.
        stats: where 'visualize', 'write', 'output_latency' and the 'written' count go.
        stop: set by the writer when the output fails or the sink asks to end (a closed window).
        queue_size: results waiting to be written at most.

    Example:
        >>> writer = ResultWriter(sink, stream.render, stats, stop, 2)  # doctest: +SKIP
        >>> writer.start(); writer.send(result); writer.finish(); writer.raise_error()  # doctest: +SKIP
    """

    def __init__(self, sink: Sink, render: Callable[[StreamResult], np.ndarray], stats: StreamStats,
                 stop: threading.Event, queue_size: int) -> None:
        self.sink = sink
        self._render = render
        self._stats = stats
        self._stop = stop
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._finish_lock = threading.Lock()
        self._finish_sent = False
        self._thread = threading.Thread(target=self._run, name="unetrt-writer", daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def send(self, result: StreamResult) -> None:
        """Queue a result, waiting for room; what it draws and writes (the frame and mask) is copied first.

        Raises:
            OutputError: when an earlier write failed.
        """
        # The caller's loop and callback get the same result and may draw on its frame or change its mask; drawn
        # later on this thread, the output showed their changes on some frames and not on others.
        mask = result.mask.copy()
        result = replace(result, frame=result.frame.copy(), mask=mask,
                         segmentation=replace(result.segmentation, mask=mask))
        while True:
            self.raise_error()
            try:
                self._queue.put(result, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def raise_error(self) -> None:
        """Raise the write failure, once, as :class:`OutputError` naming the sink.

        Raises:
            OutputError: when a write (or finishing the output) failed.
        """
        if self._error is not None:
            error, self._error = self._error, None
            raise OutputError(f"writing to {self.sink.name} failed: {error}") from error

    def finish(self) -> None:
        """Write what is queued, close the sink and end the thread (the failure, if any, stays for raise_error).

        Idempotent, from any thread: a call interrupted while it waits leaves the rest to the next one.
        """
        with self._finish_lock:
            if not self._finish_sent:
                self._queue.put(_DONE)
                self._finish_sent = True
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                break
            if self._error is not None:
                continue  # keep draining so the inference thread never blocks on a dead writer
            try:
                self._write(cast("StreamResult", item))
            except Exception as exc:  # reported to the consuming thread, which raises it
                self._error = exc
                self._stop.set()
                continue
            if self.sink.wants_stop:
                self._stop.set()
        try:
            self.sink.close()
        except Exception as exc:  # a video that cannot be finished is an output failure like any other
            self._error = self._error or exc

    def _write(self, result: StreamResult) -> None:
        started = time.perf_counter()
        image = self._render(result)
        rendered = time.perf_counter()
        if isinstance(self.sink, ResultSink):
            self.sink.write_result(result, image)
        else:
            self.sink.write(image)
        written = time.perf_counter()
        self._stats.add("visualize", (rendered - started) * 1e3)
        self._stats.add("write", (written - rendered) * 1e3)
        self._stats.add("output_latency", (written - result.captured_at) * 1e3)
        self._stats.count("written")
