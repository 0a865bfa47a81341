"""Per-stage timings, counters and the end-of-run summary of a stream.

Samples are kept in fixed-size windows so a stream that runs for days uses
constant memory; percentiles describe the most recent ``window`` frames.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cli import format_size

if TYPE_CHECKING:
    from ..backends import Backend

STAGES = ("capture", "preprocess", "inference", "postprocess", "visualize", "write")
# 'latency' runs from capture to mask; it is 'queue_wait' (in the hand-off, long for a stored source read ahead)
# plus 'processing' (segmentation alone). 'output_latency' runs from capture to the frame written.
LATENCIES = ("latency", "queue_wait", "processing", "output_latency")
DEFAULT_WINDOW = 10_000
# The live FPS is 0 (not shown) until results have come for this long: over the first few results it swings
# from 0 to thousands and says nothing.
FPS_SETTLE_S = 1.0


class SampleWindow:
    """The latest ``size`` samples of one stage, in a float64 ring allocated and written in full up front.

    A deque of Python floats grew by about 32 bytes a sample per stage until it was full (10 stages x 10,000
    samples: 3.2 MB over the first 10,000 frames), which a soak reads as a leak of 0.4 MB/min at 20 FPS; the
    ring's memory is resident from the start and never grows.

    Example:
        >>> window = SampleWindow(2); window.add(1.0); window.add(2.0); window.add(3.0)
        >>> sorted(window.values().tolist())
        [2.0, 3.0]
    """

    def __init__(self, size: int) -> None:
        # np.full writes every element, so the pages are resident now rather than as samples arrive.
        self._ring = np.full(size, np.nan)
        self._added = 0

    def add(self, value: float) -> None:
        """Keep ``value``, dropping the oldest sample once the window is full."""
        self._ring[self._added % self._ring.size] = value
        self._added += 1

    def values(self) -> np.ndarray:
        """A copy of the samples kept (in ring order, not time order)."""
        return self._ring[: min(self._added, self._ring.size)].copy()


class StreamStats:
    """Thread-safe timings (milliseconds) and counters shared by the pipeline's threads.

    Args:
        window: how many recent samples each stage keeps for percentiles.

    Example:
        >>> stats = StreamStats()
        >>> stats.add("inference", 12.0); stats.summary()["stages_ms"]["inference"]["p50"]
        12.0
    """

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._lock = threading.Lock()
        self._samples = {name: SampleWindow(window) for name in STAGES + LATENCIES}
        self.counters = {"captured": 0, "processed": 0, "written": 0, "dropped": 0, "corrupt": 0, "reconnects": 0}
        self.started_at = time.perf_counter()
        self.first_result_at: float | None = None
        self.last_result_at: float | None = None
        self._recent_results: deque[float] = deque(maxlen=30)

    def add(self, stage: str, milliseconds: float) -> None:
        """Record one sample of a stage ('capture' ... 'write') or of a latency (see ``LATENCIES``).

        Raises:
            ValueError: on an unknown stage name.
        """
        if stage not in self._samples:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(self._samples)}")
        with self._lock:
            self._samples[stage].add(milliseconds)

    def count(self, counter: str, amount: int = 1) -> None:
        """Add to a counter ('captured', 'processed', 'written', 'dropped', 'corrupt', 'reconnects')."""
        with self._lock:
            self.counters[counter] += amount

    def mark_result(self, now: float | None = None) -> None:
        """Note that one frame's result is ready (for FPS), at ``now`` (``time.perf_counter()``; None: now)."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            if self.first_result_at is None:
                self.first_result_at = now
            self.last_result_at = now
            self._recent_results.append(now)
            self.counters["processed"] += 1

    def live_fps(self) -> float:
        """Results per second over the last 30 results; 0 until results have come for ``FPS_SETTLE_S``.

        Example:
            >>> stats = StreamStats()
            >>> for now in (0.0, 0.5, 1.0): stats.mark_result(now)
            >>> stats.live_fps()
            2.0
        """
        with self._lock:
            first = self.first_result_at
            if len(self._recent_results) < 2 or first is None or self._recent_results[-1] - first < FPS_SETTLE_S:
                return 0.0
            span = self._recent_results[-1] - self._recent_results[0]
            return (len(self._recent_results) - 1) / span if span > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Counters, throughput and p50/p95/p99/mean/max per stage, as plain JSON-ready values."""
        with self._lock:
            samples = {name: window.values() for name, window in self._samples.items()}
            counters = dict(self.counters)
            first, last = self.first_result_at, self.last_result_at
        elapsed = (last or time.perf_counter()) - self.started_at
        processed = counters["processed"]
        # Steady-state rate: from the first result to the last, so model loading and warm-up do not count; over less
        # than FPS_SETTLE_S of results (workers' results leave together) it would be any figure up to thousands.
        span = 0.0 if first is None or last is None else last - first
        steady = (processed - 1) / span if span >= FPS_SETTLE_S else 0.0
        return {
            **counters,
            "elapsed_s": round(elapsed, 3),
            "fps": round(processed / elapsed, 3) if elapsed > 0 else 0.0,
            "steady_fps": round(steady, 3),
            "stages_ms": {name: _describe(samples[name]) for name in STAGES if samples[name].size},
            **{f"{name}_ms": _describe(samples[name]) if samples[name].size else None for name in LATENCIES},
        }


def _describe(values: np.ndarray) -> dict[str, float]:
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"count": int(values.size), "mean": round(float(values.mean()), 3), "p50": round(float(p50), 3),
            "p95": round(float(p95), 3), "p99": round(float(p99), 3), "max": round(float(values.max()), 3)}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a short human-readable table.

    Example:
        >>> "frames" in format_summary(StreamStats().summary())
        True
    """
    runtime = summary.get("runtime") or {}
    # 0 is what summary() gives when the results span too little time for a rate; "0.00 FPS" would read as a stall.
    steady = (f"{summary['steady_fps']:.2f} FPS steady" if summary["steady_fps"] > 0
              else f"no steady rate (results over less than {FPS_SETTLE_S:g} s)")
    lines = [describe_runtime_line(runtime)] if runtime.get("backend") else []
    lines += [
        f"frames {summary['processed']} processed, {summary['captured']} captured, {summary['dropped']} dropped, "
        f"{summary['corrupt']} corrupt, {summary['reconnects']} reconnects, {summary['written']} written",
        f"throughput {summary['fps']:.2f} FPS overall, {steady}, {summary['elapsed_s']:.2f} s",
        f"{'stage':<16}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}",
    ]
    if summary.get("output_codec"):
        lines.insert(0, f"output {summary.get('output')} ({summary['output_codec']})")
    rows = dict(summary["stages_ms"])
    for name in LATENCIES:
        if summary.get(f"{name}_ms"):
            rows[name] = summary[f"{name}_ms"]
    for name, row in rows.items():
        lines.append(f"{name:<16}{row['p50']:>10.2f}{row['p95']:>10.2f}{row['p99']:>10.2f}{row['mean']:>10.2f}")
    return "\n".join(lines)


def describe_runtime(segmenter: object) -> dict[str, Any]:
    """What ran: backend, precision, model, device, threads, working size and mask clean-up of a segmenter (None
    where it does not say).

    Reads what a :class:`unetrt.segmenter.Segmenter`'s backend says of itself (the
    :class:`unetrt.backends.Backend` protocol: ``name``, ``precision``, ``path``, ``device``, ``threads``) and
    its ``info``; a frame segmenter without a backend gives Nones.

    Example:
        >>> describe_runtime(object())["backend"] is None
        True
    """
    # A stream takes any frame segmenter; only unetrt's Segmenter has a backend.
    backend: Backend | None = getattr(segmenter, "backend", None)
    info = getattr(segmenter, "info", None)
    working_size = getattr(info, "working_size", None)
    described: dict[str, Any] = {"backend": None, "precision": None, "model": getattr(info, "name", None),
                                 "device": None, "threads": None}
    if backend is not None:
        described = {"backend": backend.name, "precision": backend.precision, "model": str(backend.path),
                     "device": backend.device,
                     # None: the library's own default (ONNX Runtime: one per physical core; torch: its setting).
                     "threads": "default" if backend.threads is None else backend.threads}
    cleanup = getattr(segmenter, "cleanup", None)
    steps = [] if cleanup is None else [cleanup.mode] * (cleanup.mode != "none") + [
        "cell lines"] * (cleanup.lines_threshold is not None)
    return {**described, "working_size": None if working_size is None else format_size(working_size),
            "cleanup": " + ".join(steps) or None}


def describe_runtime_line(runtime: dict[str, Any]) -> str:
    """One line for the summary table, e.g. ``model m.onnx on onnxruntime, fp32, cpu, 2 workers x 1 thread``,
    and the working size where the model has one.

    Example:
        >>> describe_runtime_line({"backend": "torch", "precision": "fp32", "model": "a.pt", "device": "cpu",
        ...                        "threads": 1, "workers": 2})
        'model a.pt on torch, fp32, cpu, 2 workers x 1 thread'
    """
    parts = [f"on {runtime.get('backend')}"]
    parts += [str(runtime[key]) for key in ("precision", "device") if runtime.get(key)]
    threads = runtime.get("threads")
    if threads is not None:
        parts.append(f"{threads} thread{'' if threads == 1 else 's'}")
    workers = runtime.get("workers")
    if workers is not None and workers > 1:
        parts[-1] = f"{workers} workers x {parts[-1]}" if threads is not None else f"{workers} workers"
    if runtime.get("working_size"):
        parts.append(f"working size {runtime['working_size']}")
    if runtime.get("cleanup"):
        parts.append(f"masks cleaned by {runtime['cleanup']}")
    return f"model {runtime.get('model') or 'unknown'} " + ", ".join(parts)
