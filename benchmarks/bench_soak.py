"""Soak: stream a looped file through the real :class:`~unetrt.stream.Stream` for a set time and watch memory.

A leak of a few hundred bytes per frame is invisible in a short run: it hides in the warm-up (allocator
pools, compiled shapes, codec buffers). This streams the bundled sample clip (or any stored source) looped
for ``--duration`` seconds, samples the process's resident memory every ``--interval`` seconds, and fits a
least-squares line to the samples after the first ``--warmup`` seconds: that slope, in MB per minute, is the
figure (the target is under 0.1 MB/min). Frames dropped are counted by the stream (a file source must drop
none). Results: ``NAME.json``, ``NAME.md`` and ``NAME.png`` (memory over time, needs matplotlib: the
``export`` extra) under ``benchmarks/results/``, with the CPU and the load average named.

Usage (35 minutes at the lowest priority, one worker and one inference thread)::

    nice -n 19 python -m unetrt.benchmarks.bench_soak --duration 2100 --workers 1 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unetrt import __version__
from unetrt.benchmarks import results_dir
from unetrt.benchmarks.stats import current_rss_bytes, describe_cpu, load_average, machine_description, write_results
from unetrt.bundled import sample_clip
from unetrt.cli import run_cli
from unetrt.paths import write_whole
from unetrt.plot_png import plot_png
from unetrt.stream.pipeline import Stream

RESULTS_DIR = results_dir()
MAX_SLOPE_MB_PER_MIN = 0.1
MB = 1e6


class MemorySampler(threading.Thread):
    """Samples resident memory, results and drops of a running stream every ``interval`` seconds.

    Args:
        stream: the running stream (its ``stats`` are read at each sample).
        interval: seconds between samples.

    Raises:
        ValueError: where the OS gives no resident memory (no /proc).
    """

    def __init__(self, stream: Stream, interval: float) -> None:
        super().__init__(name="unetrt-soak-sampler", daemon=True)
        if current_rss_bytes() is None:
            raise ValueError("resident memory cannot be read here (no /proc/self/status); the soak needs Linux")
        self.stream = stream
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self._done = threading.Event()
        self._began = time.perf_counter()

    def run(self) -> None:
        """Take a sample now and then every ``interval`` seconds until :meth:`finish`."""
        while True:
            self.sample()
            if self._done.wait(self.interval):
                return

    def sample(self) -> None:
        """Record one sample: seconds since start, resident MB, frames processed and dropped."""
        counters = dict(self.stream.stats.counters)
        self.samples.append({"t_s": round(time.perf_counter() - self._began, 3),
                             "rss_mb": round((current_rss_bytes() or 0) / MB, 3),
                             "processed": counters["processed"], "dropped": counters["dropped"]})

    def finish(self) -> list[dict[str, float]]:
        """Stop sampling, take a last sample and return them all."""
        self._done.set()
        self.join()
        self.sample()
        return self.samples


def memory_slope(samples: Sequence[dict[str, float]], warmup_s: float) -> float | None:
    """Least-squares slope of resident memory in MB per minute over the samples taken after ``warmup_s``.

    Returns:
        The slope, or None when fewer than three samples follow the warm-up.

    Example:
        >>> memory_slope([{"t_s": 60.0 * i, "rss_mb": 100.0 + 0.5 * i} for i in range(6)], 60.0)
        0.5
    """
    kept = [s for s in samples if s["t_s"] >= warmup_s]
    if len(kept) < 3:
        return None
    minutes = np.array([s["t_s"] / 60.0 for s in kept])
    megabytes = np.array([s["rss_mb"] for s in kept])
    slope = float(np.polyfit(minutes, megabytes, 1)[0])
    return round(slope, 6)


def soak(source: str, model: str, backend: str, precision: str, threads: int | None, workers: int,
         duration_s: float, warmup_s: float, interval_s: float, output: str | None,
         max_fps: float | None) -> dict[str, Any]:
    """Stream ``source`` looped through ``model`` for ``duration_s`` seconds and measure memory.

    Returns:
        The JSON-ready result (samples, slope after warm-up, stream summary, machine).

    Raises:
        ValueError: on a bad duration, warm-up, interval or stream option.
    """
    if duration_s <= 0 or interval_s <= 0 or warmup_s < 0:
        raise ValueError(f"duration and interval must be > 0 and warmup >= 0 seconds, got duration {duration_s}, "
                         f"interval {interval_s}, warmup {warmup_s}")
    if warmup_s >= duration_s:
        raise ValueError(f"warmup ({warmup_s} s) must be shorter than the duration ({duration_s} s)")
    load_before = load_average()
    options: dict[str, Any] = {"backend": backend, "precision": precision}
    if threads is not None:
        options["threads"] = threads
    stream = Stream(source, model, output, loop=-1, max_fps=max_fps, segmenter_options=options, workers=workers,
                    live=False)
    with stream:
        stream.start()
        sampler = MemorySampler(stream, interval_s)
        sampler.start()
        started = time.perf_counter()
        with tqdm(total=round(duration_s), unit="s", desc="soak", leave=False) as bar:
            for _ in stream:
                elapsed = time.perf_counter() - started
                bar.update(min(round(elapsed), round(duration_s)) - bar.n)
                if elapsed >= duration_s:
                    stream.stop()
        samples = sampler.finish()
    summary = stream.summary()
    slope = memory_slope(samples, warmup_s)
    return {
        "benchmark": "soak", "unetrt": __version__, "machine": machine_description(),
        "load_average_before": load_before, "source": source, "model": model, "backend": backend,
        "precision": precision, "threads": threads, "workers": workers, "output": output, "max_fps": max_fps,
        "duration_s": duration_s, "warmup_s": warmup_s, "interval_s": interval_s,
        "rss_slope_mb_per_min": slope,
        "rss_mb": {"first": samples[0]["rss_mb"], "after_warmup": _first_after(samples, warmup_s),
                   "last": samples[-1]["rss_mb"], "max": max(s["rss_mb"] for s in samples)},
        "frames_processed": summary["processed"], "frames_dropped": summary["dropped"],
        "targets": {"slope_below_mb_per_min": MAX_SLOPE_MB_PER_MIN,
                    "slope_met": slope is not None and slope < MAX_SLOPE_MB_PER_MIN,
                    "no_drops_met": summary["dropped"] == 0},
        "stream": summary, "samples": samples,
    }


def _first_after(samples: Sequence[dict[str, float]], warmup_s: float) -> float:
    return next((s["rss_mb"] for s in samples if s["t_s"] >= warmup_s), samples[-1]["rss_mb"])


def to_markdown(result: dict[str, Any], plot: str | None) -> str:
    """The result as a short Markdown report."""
    machine, rss, targets = result["machine"], result["rss_mb"], result["targets"]
    load_before = ", ".join(f"{v:.2f}" for v in result["load_average_before"] or ())
    load_after = ", ".join(f"{v:.2f}" for v in machine["load_average"] or ())
    slope = result["rss_slope_mb_per_min"]
    slope_text = "not enough samples after the warm-up" if slope is None else f"{slope:+.4f} MB/min"
    stream = result["stream"]
    lines = [
        "# Soak: resident memory over a long stream",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores; load average (1, 5, 15 min) "
        f"{load_before} before, {load_after} after (a shared machine: other jobs ran beside it).",
        "",
        f"Source `{Path(result['source']).name}` looped, model `{result['model']}` "
        f"({stream['runtime'].get('backend')}, {stream['runtime'].get('precision')}), {result['workers']} "
        f"worker(s), threads {result['threads'] or 'default'}, output `{result['output']}`, max FPS "
        f"{result['max_fps'] or 'unlimited'}; "
        f"{result['duration_s'] / 60:.1f} min, memory sampled every {result['interval_s']:g} s.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| resident memory slope after the first {result['warmup_s'] / 60:.3g} min (least squares) | "
        f"**{slope_text}** |",
        f"| resident MB: first / after warm-up / last / max | {rss['first']:.1f} / {rss['after_warmup']:.1f} / "
        f"{rss['last']:.1f} / {rss['max']:.1f} |",
        f"| frames processed | {result['frames_processed']} |",
        f"| frames dropped | {result['frames_dropped']} |",
        f"| steady FPS | {stream['steady_fps']:.2f} |",
        "",
        f"Slope under {targets['slope_below_mb_per_min']} MB/min: {'met' if targets['slope_met'] else 'NOT met'}; "
        f"no dropped frames: {'met' if targets['no_drops_met'] else 'NOT met'}.",
        "",
    ]
    if plot is not None:
        lines += [f"![resident memory over time]({plot})", ""]
    return "\n".join(lines)


def plot_memory(result: dict[str, Any], path: Path) -> bool:
    """Resident memory against time, with the fitted slope after warm-up, as a PNG.

    Returns:
        False when matplotlib is not installed (nothing is written).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = result["samples"]
    minutes = np.array([s["t_s"] / 60.0 for s in samples])
    megabytes = np.array([s["rss_mb"] for s in samples])
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.plot(minutes, megabytes, ".", markersize=3, label="resident memory")
    warmup_min = result["warmup_s"] / 60.0
    axes.axvline(warmup_min, color="grey", linestyle=":", label="end of warm-up")
    slope = result["rss_slope_mb_per_min"]
    after = minutes >= warmup_min
    if slope is not None and after.sum() >= 3:
        fit = np.polyfit(minutes[after], megabytes[after], 1)
        axes.plot(minutes[after], np.polyval(fit, minutes[after]), "-",
                  label=f"least squares: {slope:+.4f} MB/min")
    axes.set_xlabel("minutes")
    axes.set_ylabel("resident memory (MB)")
    axes.set_title(f"Soak: {result['model']} on {result['machine']['cpu_model']}", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    write_whole(path, plot_png(figure, dpi=100))
    plt.close(figure)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak and write ``NAME.json``, ``NAME.md`` and ``NAME.png``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(description="Stream a looped file for a set time; report the memory slope "
                                                 "after warm-up and the frames dropped.")
    parser.add_argument("--source", default=None, help="stored source (default: the bundled sample clip)")
    parser.add_argument("--model", default="camvid", help="model file or bundled name")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="inference threads per worker")
    parser.add_argument("--workers", type=int, default=1, help="segmenters side by side")
    parser.add_argument("--duration", type=float, default=2100.0, help="seconds to stream (default 35 min)")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds left out of the slope (default 5 min)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--output", default="video", help="'video' (an MP4 in a temporary folder, deleted "
                                                          "after), 'none', or an output URI/path")
    parser.add_argument("--max-fps", type=float, default=None, help="frames per second at most")
    parser.add_argument("--name", default="soak_cpu", help="result file name without suffix")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    def action() -> None:
        source = args.source or str(sample_clip())
        with tempfile.TemporaryDirectory(prefix="unetrt-soak-") as scratch:
            output = {"video": str(Path(scratch) / "soak.mp4"), "none": None}.get(args.output, args.output)
            result = soak(source, args.model, args.backend, args.precision, args.threads, args.workers,
                          args.duration, args.warmup, args.interval, output, args.max_fps)
        if args.output == "video":
            result["output"] = "an MP4 in a temporary folder"
        args.results_dir.mkdir(parents=True, exist_ok=True)
        plot = args.results_dir / f"{args.name}.png"
        plotted = plot_memory(result, plot)
        write_results(args.results_dir, args.name, result, to_markdown(result, plot.name if plotted else None))

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
