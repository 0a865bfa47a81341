"""What calling one Segmenter from several threads buys, per backend.

For each installed backend and precision of a bundled model, three ways through the same frames of the bundled
clip, as frames per second:

* ``one thread``: one thread calls one segmenter (the baseline);
* ``N threads, one segmenter``: N threads share one segmenter (safe since issue 21: every call has its own
  working buffers; the network call overlaps where the backend allows it);
* ``N threads, one segmenter each``: N threads, each with a segmenter of its own (N times the memory).

Each segmenter runs its network with ``--inference-threads`` threads (default 1, so that N callers could use N
cores). Repeats are interleaved (every way once, then again), so a change in the load of a shared machine
hits all of them alike; the median repeat is reported with the load average and the CPU.

Usage::

    python -m unetrt.benchmarks.bench_concurrency --callers 2 --frames 24 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unetrt import __version__
from unetrt.benchmarks import results_dir
from unetrt.benchmarks.bench_stream import read_frames
from unetrt.benchmarks.stats import describe_cpu, load_average, machine_description, write_results
from unetrt.bundled import sample_clip
from unetrt.cli import run_cli
from unetrt.segmenter import Segmenter

RESULTS_DIR = results_dir()
CONFIGURATIONS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8"),
                  ("torch", "fp32"))
WAYS = ("one thread", "N threads, one segmenter", "N threads, one segmenter each")


def installed_configurations() -> list[tuple[str, str]]:
    """The backend and precision pairs whose library is installed."""
    return [(backend, precision) for backend, precision in CONFIGURATIONS
            if backend == "onnxruntime" or importlib.util.find_spec(backend) is not None]


def frames_per_second(segmenters: Sequence[Segmenter], callers: int, frames: Sequence[np.ndarray]) -> float:
    """Frames per second when ``callers`` threads segment ``frames`` between them (caller ``i`` takes every
    ``callers``-th frame, on ``segmenters[i % len(segmenters)]``), all released at one barrier."""
    barrier = threading.Barrier(callers + 1)

    def work(caller: int) -> None:
        segmenter = segmenters[caller % len(segmenters)]
        barrier.wait()
        for frame in frames[caller::callers]:
            segmenter.segment(frame)

    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(work, caller) for caller in range(callers)]
        barrier.wait()
        started = time.perf_counter()
        for future in futures:
            future.result()
    return len(frames) / (time.perf_counter() - started)


def benchmark(model: str, callers: int, frame_count: int, repeats: int, inference_threads: int,
              configurations: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """FPS of the three ways for every configuration, interleaved over ``repeats``.

    Raises:
        ValueError: on fewer than 2 callers, no frames or no repeats.
    """
    if callers < 2 or frame_count < 1 or repeats < 1:
        raise ValueError(f"need callers >= 2, frames >= 1 and repeats >= 1; got callers {callers}, frames "
                         f"{frame_count}, repeats {repeats}")
    load_before = load_average()
    frames = read_frames(sample_clip(), frame_count)
    rows = []
    for backend, precision in tqdm(configurations, desc="configurations", leave=False):
        segmenters = [Segmenter(model, backend=backend, precision=precision, threads=inference_threads)
                      for _ in range(callers)]
        try:
            for segmenter in segmenters:
                segmenter.segment(frames[0])  # every shape compiled before timing
            ways = {WAYS[0]: (segmenters[:1], 1), WAYS[1]: (segmenters[:1], callers), WAYS[2]: (segmenters, callers)}
            trials: dict[str, list[float]] = {way: [] for way in WAYS}
            for _ in range(repeats):
                for way, (chosen, count) in ways.items():
                    trials[way].append(frames_per_second(chosen, count, frames))
        finally:
            for segmenter in segmenters:
                segmenter.close()
        fps = {way: statistics.median(values) for way, values in trials.items()}
        rows.append({"backend": backend, "precision": precision, "fps": fps, "fps_trials": trials,
                     "shared_speedup": fps[WAYS[1]] / fps[WAYS[0]], "separate_speedup": fps[WAYS[2]] / fps[WAYS[0]]})
    return {"benchmark": "concurrency", "unetrt": __version__, "machine": machine_description(),
            "load_average_before": load_before, "model": model, "callers": callers, "frames": frame_count,
            "repeats": repeats, "inference_threads": inference_threads, "clip": sample_clip().name, "rows": rows}


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a short Markdown report."""
    machine = result["machine"]
    load_before = ", ".join(f"{v:.2f}" for v in result["load_average_before"] or ())
    load_after = ", ".join(f"{v:.2f}" for v in machine["load_average"] or ())
    n = result["callers"]
    lines = [
        "# One segmenter from several threads",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores; load average (1, 5, 15 min) "
        f"{load_before} before, {load_after} after. **The machine was shared with other jobs**, so absolute FPS is "
        "lower and noisier than on an idle machine; compare the ways within a row.",
        "",
        f"Model `{result['model']}`, {result['frames']} frames of `{result['clip']}`, N = {n} calling threads, "
        f"{result['inference_threads']} inference thread(s) per segmenter; median of {result['repeats']} "
        "interleaved repeats.",
        "",
        f"| backend | precision | one thread FPS | {n} threads, one segmenter FPS (x) | "
        f"{n} threads, one segmenter each FPS (x) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        fps = row["fps"]
        lines.append(f"| {row['backend']} | {row['precision']} | {fps[WAYS[0]]:.2f} | {fps[WAYS[1]]:.2f} "
                     f"({row['shared_speedup']:.2f}) | {fps[WAYS[2]]:.2f} ({row['separate_speedup']:.2f}) |")
    lines += ["", "(x): throughput relative to one thread on one segmenter.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write ``NAME.json`` and ``NAME.md``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(description="N threads on one segmenter vs one thread vs a segmenter each.")
    parser.add_argument("--model", default="camvid", help="bundled model name")
    parser.add_argument("--callers", type=int, default=2, help="calling threads N")
    parser.add_argument("--frames", type=int, default=24, help="frames of the sample clip per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inference-threads", type=int, default=1, help="network threads per segmenter")
    parser.add_argument("--backends", default=None,
                        help="comma-separated backend:precision pairs (default: every installed one)")
    parser.add_argument("--name", default="concurrency_cpu", help="result file name without suffix")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    def action() -> None:
        configurations = installed_configurations()
        if args.backends:
            pairs = [tuple(item.split(":", 1)) for item in args.backends.split(",")]
            unknown = [p for p in pairs if p not in CONFIGURATIONS]
            if unknown:
                raise ValueError(f"--backends: unknown pair(s) {unknown}; choose among "
                                 f"{', '.join(f'{b}:{p}' for b, p in CONFIGURATIONS)}")
            configurations = [(b, p) for b, p in pairs]
        result = benchmark(args.model, args.callers, args.frames, args.repeats, args.inference_threads,
                           configurations)
        write_results(args.results_dir, args.name, result, to_markdown(result))

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
