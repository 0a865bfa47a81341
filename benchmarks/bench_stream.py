"""Streaming pipeline throughput against bare inference on the same model, frames and backend.

Three ways through the same first N frames of the bundled CamVid clip (480x360):

* ``backend``: ``backend.infer`` alone on batches prepared beforehand (the network's ceiling);
* ``segmenter``: ``Segmenter.segment`` on frames already in memory (adds pre- and post-processing);
* ``pipeline``: ``unet-stream``'s path: decode the MP4, segment, draw the overlay, encode an MP4,
  in three overlapping threads; and ``pipeline_headless``, the same without the output.

Repeats are interleaved (backend, segmenter, pipeline, ... again) so a change in the load
of a shared machine hits all of them alike; the median repeat is reported.

Usage::

    python -m unetrt.benchmarks.bench_stream --model camvid --frames 60 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime
from tqdm import tqdm

from unetrt import __version__
from unetrt.benchmarks import results_dir
from unetrt.benchmarks.stats import describe_cpu, machine_description, write_results
from unetrt.bundled import sample_clip
from unetrt.cli import run_cli
from unetrt.frame_path import network_input
from unetrt.segmenter import Segmenter
from unetrt.stream.pipeline import Stream

RESULTS_DIR = results_dir()
MAX_LOSS = 0.10
MIN_FPS = 10.0
WARMUP_FRAMES = 5


def read_frames(path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a video.

    Raises:
        ValueError: when the video has fewer frames.
    """
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if len(frames) < count:
        raise ValueError(f"{path} has {len(frames)} frames, fewer than the {count} asked for")
    return frames


def network_batches(segmenter: Segmenter, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each frame as the backend sees it: resized to the working size, normalised, padded."""
    return [network_input([frame], segmenter.info) for frame in frames]


def timed_fps(work: Callable[[], int]) -> tuple[float, float]:
    """Frames per second and CPU milliseconds per frame (all threads) of one call of ``work``.

    ``work`` returns how many frames it did. CPU time is less disturbed than wall time by
    other jobs on a shared machine, so it shows what the pipeline itself adds.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    frames = work()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return frames / wall, cpu * 1e3 / frames


def run_pipeline(clip: Path, segmenter: Segmenter, frames: int, output: Path | None) -> int:
    """Stream the first ``frames`` frames of ``clip``; returns the frames processed."""
    stream = Stream(str(clip), segmenter, str(output) if output else None, max_frames=frames)
    summary = stream.run()
    return int(summary["processed"])


def benchmark(model: str, backend: str, threads: int | None, frames: int, repeats: int) -> dict[str, Any]:
    """Measure the four ways through the clip; returns the JSON-ready result.

    Raises:
        ValueError: on a bad model, backend or frame count.
    """
    if frames < 1 or repeats < 1:
        raise ValueError(f"frames and repeats must be at least 1, got {frames} and {repeats}")
    clip = sample_clip()
    images = read_frames(clip, frames)
    options: dict[str, Any] = {"threads": threads} if threads is not None else {}
    load_before = machine_description()["load_average"]
    with Segmenter(model, backend=backend, **options) as segmenter, tempfile.TemporaryDirectory() as tmp:
        batches = network_batches(segmenter, images)
        for frame in images[:WARMUP_FRAMES]:
            segmenter.segment(frame)
        ways: dict[str, Callable[[], int]] = {
            "backend": lambda: sum(segmenter.backend.infer(batch).shape[0] for batch in batches),
            "segmenter": lambda: len([segmenter.segment(frame) for frame in images]),
            "pipeline": lambda: run_pipeline(clip, segmenter, frames, Path(tmp) / "out.mp4"),
            "pipeline_headless": lambda: run_pipeline(clip, segmenter, frames, None),
        }
        trials: dict[str, list[float]] = {name: [] for name in ways}
        cpu_trials: dict[str, list[float]] = {name: [] for name in ways}
        with tqdm(total=repeats * len(ways), desc="bench_stream", unit="run") as progress:
            for _ in range(repeats):
                for name, work in ways.items():
                    fps_value, cpu_per_frame = timed_fps(work)
                    trials[name].append(fps_value)
                    cpu_trials[name].append(cpu_per_frame)
                    progress.update()
        backend_name, device = segmenter.backend.name, segmenter.backend.device
        info = segmenter.info
    fps = {name: statistics.median(values) for name, values in trials.items()}
    cpu_ms = {name: statistics.median(values) for name, values in cpu_trials.items()}
    loss_vs_backend = 1.0 - fps["pipeline"] / fps["backend"]
    loss_vs_segmenter = 1.0 - fps["pipeline"] / fps["segmenter"]
    return {
        "benchmark": "bench_stream",
        "unetrt": __version__,
        "onnxruntime": onnxruntime.__version__,
        "machine": machine_description(),
        "load_average_before": load_before,
        "note": "shared machine: other jobs were running (see the load averages); "
                "figures are medians of interleaved repeats",
        "model": {"name": info.name, "file": str(model), "base": info.base, "depth": info.depth,
                  "working_size": info.working_size},
        "backend": backend_name,
        "device": device,
        "threads": threads,
        "clip": clip.name,
        "frame_size": [images[0].shape[1], images[0].shape[0]],
        "frames": frames,
        "repeats": repeats,
        "fps": {name: round(value, 3) for name, value in fps.items()},
        "fps_trials": {name: [round(v, 3) for v in values] for name, values in trials.items()},
        "cpu_ms_per_frame": {name: round(value, 2) for name, value in cpu_ms.items()},
        "pipeline_cpu_overhead_vs_backend": round(cpu_ms["pipeline"] / cpu_ms["backend"] - 1.0, 4),
        "pipeline_loss_vs_backend": round(loss_vs_backend, 4),
        "pipeline_loss_vs_segmenter": round(loss_vs_segmenter, 4),
        "targets": {
            "loss_at_most": MAX_LOSS,
            "loss_met": loss_vs_backend <= MAX_LOSS,
            "fps_at_least": MIN_FPS,
            "fps_met": fps["pipeline"] >= MIN_FPS,
        },
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a short Markdown report."""
    machine = result["machine"]
    load = ", ".join(f"{v:.2f}" for v in result["load_average_before"] or ())
    load_after = ", ".join(f"{v:.2f}" for v in machine["load_average"] or ())
    rows = [
        ("backend", "`backend.infer` on prepared batches (network only)"),
        ("segmenter", "`Segmenter.segment` on frames in memory (+ resize, normalise, argmax, resize back)"),
        ("pipeline", "decode MP4 -> segment -> overlay + FPS text -> encode MP4, three threads"),
        ("pipeline_headless", "decode MP4 -> segment, no output"),
    ]
    targets = result["targets"]
    lines = [
        "# Streaming pipeline vs bare inference",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores; "
        f"load average (1, 5, 15 min) {load} before, {load_after} after. "
        "**The machine was shared with other jobs** (a training run and other helpers), so absolute FPS "
        "is lower and noisier than on an idle machine; the ratios matter more.",
        "",
        f"Model `{result['model']['file']}` (base {result['model']['base']}, depth {result['model']['depth']}, "
        f"working size {result['model']['working_size']}), backend {result['backend']} on {result['device']}, "
        f"threads {result['threads'] or 'default'}; first {result['frames']} frames of `{result['clip']}` "
        f"({result['frame_size'][0]}x{result['frame_size'][1]}); median of {result['repeats']} interleaved repeats.",
        "",
        "| way | what it does | FPS (median) | FPS trials | CPU ms/frame |",
        "|---|---|---:|---|---:|",
    ]
    for name, what in rows:
        trials = ", ".join(f"{v:.2f}" for v in result["fps_trials"][name])
        lines.append(f"| {name} | {what} | {result['fps'][name]:.2f} | {trials} | "
                     f"{result['cpu_ms_per_frame'][name]:.1f} |")
    lines += [
        "",
        f"Pipeline loss vs bare backend: **{100 * result['pipeline_loss_vs_backend']:.1f}%** "
        f"(target <= {100 * targets['loss_at_most']:.0f}%: {'met' if targets['loss_met'] else 'NOT met'}); "
        f"vs segmenter: {100 * result['pipeline_loss_vs_segmenter']:.1f}%. "
        f"CPU time the pipeline adds per frame over the bare backend: "
        f"{100 * result['pipeline_cpu_overhead_vs_backend']:.1f}%.",
        f"Pipeline end to end: **{result['fps']['pipeline']:.2f} FPS** "
        f"(target >= {targets['fps_at_least']:.0f} FPS: {'met' if targets['fps_met'] else 'NOT met'}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write ``benchmarks/results/<name>.json`` and ``.md``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(description="Streaming pipeline throughput vs bare inference.")
    parser.add_argument("--model", default="camvid", help="model file or bundled name")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the backend's)")
    parser.add_argument("--frames", type=int, default=101, help="frames of the sample clip per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="stream_onnxruntime_cpu", help="result file name without suffix")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    def action() -> None:
        result = benchmark(args.model, args.backend, args.threads, args.frames, args.repeats)
        write_results(args.results_dir, args.name, result, to_markdown(result))

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
