"""The host path's own work per frame, without the network: camvid's working-size resize, extract and fused finish.

``FramePath.run`` on :class:`unetrt.device.HostDevice` for 480x360 frames of each kind a camera gives (uint8 BGR,
uint16 BGR, float32 BGR, uint8 gray), with a stand-in network that returns fixed camvid-shaped scores (11 classes
at the working size), so that what is timed is the path's host work alone: the check-free part of
``Segmenter.segment`` from the frame to the 480x360 mask. The working-size resize is also timed alone
(``unetrt.device.resize_frame``). The kinds are interleaved in every trial (the order flips each trial), so a
change in a shared machine's load hits them alike; medians per frame over the trials.

Run it against two checkouts in turn (``PYTHONPATH`` naming the other one's package) to compare them.

Usage::

    python -m unetrt.benchmarks.bench_host_path --frames 20 --trials 7 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import unetrt
from unetrt.benchmarks import results_dir
from unetrt.benchmarks.bench_stream import read_frames
from unetrt.benchmarks.stats import LatencyStats, describe_cpu, machine_description, summarize, write_results
from unetrt.bundled import bundled_model_path, sample_clip
from unetrt.cli import run_cli
from unetrt.device import HostDevice, resize_frame
from unetrt.frame_path import FramePath
from unetrt.model_file import read_model_file
from unetrt.tiling import plan_whole

RESULTS_DIR = results_dir()
FRAME_HW = (360, 480)
KINDS = ("uint8", "uint16", "float32", "gray uint8")


def frame_kinds(frame: np.ndarray) -> dict[str, np.ndarray]:
    """A uint8 BGR frame as each kind of frame the benchmark times.

    Example:
        >>> sorted(frame_kinds(np.zeros((2, 2, 3), np.uint8)))
        ['float32', 'gray uint8', 'uint16', 'uint8']
    """
    return {"uint8": frame, "uint16": frame.astype(np.uint16) * 257, "float32": frame.astype(np.float32) / 255,
            "gray uint8": cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)}


def clip_frames(count: int) -> list[np.ndarray]:
    """The first ``count`` frames of the bundled sample clip (480x360 BGR).

    Raises:
        ValueError: when the clip holds fewer frames or frames of another size.
    """
    frames = read_frames(sample_clip(), count)
    if frames[0].shape[:2] != FRAME_HW:
        raise ValueError(f"the sample clip's frames are {frames[0].shape[:2]}, not {FRAME_HW}")
    return frames


def timed_ms(action: Callable[[], object]) -> float:
    """Wall milliseconds of one call."""
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1e3


def benchmark(frames: int, trials: int, threads: int) -> dict[str, Any]:
    """Time the host path per kind of frame; returns the JSON-ready result.

    Raises:
        ValueError: on counts below 1.
    """
    if frames < 1 or trials < 1 or threads < 1:
        raise ValueError(f"frames, trials and threads must be at least 1, got {frames}, {trials}, {threads}")
    info = read_model_file(bundled_model_path("camvid")).info
    assert info.working_size is not None  # camvid works at 224x168
    work_hw = (info.working_size[1], info.working_size[0])
    grid = plan_whole(*work_hw, info.padding, info.depth)
    scores = np.random.default_rng(0).standard_normal((1, info.num_classes, *grid.output_hw)).astype(np.float32)
    path = FramePath(HostDevice(lambda batch: scores, threads=threads), info)
    pictures = [frame_kinds(frame) for frame in clip_frames(frames)]
    load_before = machine_description()["load_average"]
    for kinds in pictures:  # warm-up: buffers and caches
        for frame in kinds.values():
            path.run([frame], grid, False)
    runs: dict[str, list[list[float]]] = {f"{stage} {kind}": [] for stage in ("path", "resize") for kind in KINDS}
    for trial in range(trials):
        order = KINDS if trial % 2 == 0 else KINDS[::-1]
        for kind in order:
            frames_of_kind = [kinds[kind] for kinds in pictures]
            runs[f"path {kind}"].append([timed_ms(partial(path.run, [frame], grid, False))
                                         for frame in frames_of_kind])
            runs[f"resize {kind}"].append([timed_ms(partial(resize_frame, frame, work_hw, threads))
                                           for frame in frames_of_kind])
    stats: dict[str, LatencyStats] = {name: summarize(values) for name, values in runs.items()}
    return {
        "unetrt": unetrt.__version__,
        "frame_hw": list(FRAME_HW),
        "working_hw": list(work_hw),
        "frames": frames,
        "trials": trials,
        "threads": threads,
        "ms": {name: value.to_dict() for name, value in stats.items()},
        "machine": {**machine_description(), "load_average_before": load_before},
    }


def _load(values: Sequence[float] | None) -> str:
    return "n/a" if values is None else ", ".join(f"{v:.2f}" for v in values)


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown report."""
    machine, ms = result["machine"], result["ms"]
    height, width = result["working_hw"]
    rows = [f"| {kind} | {ms[f'path {kind}']['median']:.3f} | {ms[f'path {kind}']['p90']:.3f} | "
            f"{ms[f'resize {kind}']['median']:.3f} | {ms[f'resize {kind}']['p90']:.3f} |" for kind in KINDS]
    return "\n".join([
        "# The host path's work per frame, without the network (CPU)",
        "",
        f"`python -m unetrt.benchmarks.bench_host_path --frames {result['frames']} --trials {result['trials']} "
        f"--threads {result['threads']}` (unetrt {result['unetrt']})",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores; load average (1, 5, 15 min) "
        f"before {_load(machine['load_average_before'])}, after {_load(machine['load_average'])}.",
        f"{result['frames']} frames of the sample clip at 480x360 per trial, camvid's working size {width}x{height}, "
        f"kernels on {result['threads']} thread(s), {result['trials']} interleaved trials; milliseconds per frame.",
        "",
        "| frame | path median | path p90 | resize median | resize p90 |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20, help="frames of the sample clip per trial (default 20)")
    parser.add_argument("--trials", type=int, default=7, help="interleaved trials (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="kernel threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "host_path_cpu",
                        help="result path without suffix (.md and .json are written)")
    args = parser.parse_args(argv)

    def run() -> None:
        result = benchmark(args.frames, args.trials, args.threads)
        write_results(args.out.parent, args.out.name, result, markdown(result))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
