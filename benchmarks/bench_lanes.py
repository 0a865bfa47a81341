"""OpenVINO lanes: a batch of several images on single-threaded infer requests, one per thread, against the same
batch on one request that uses every thread (what the backend did before lanes), and against the images one by
one (as a camera delivers them).

camvid INT8 at its working size (N x 3 x 192 x 256 network input made from CamVid val frames by the path's own
kernels), interleaved in one run after checking that lanes return the same logits bit for bit. The load average
before and after is written with the machine.

Usage::

    python -m unetrt.benchmarks.bench_lanes --images 4 --trials 5 --iterations 10 --threads 2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from unetrt.backends.openvino import OpenVinoBackend
from unetrt.benchmarks import camvid_val_frames, results_dir
from unetrt.benchmarks.bench_tiling import cpu_timer, time_interleaved
from unetrt.benchmarks.stats import describe_cpu, machine_description, write_results
from unetrt.bundled import bundled_model_path
from unetrt.cli import run_cli
from unetrt.datasets import list_images
from unetrt.frame_path import network_input

RESULTS_DIR = results_dir()
DEFAULT_IMAGES = camvid_val_frames()
WAYS = {"lanes": "lanes (one single-threaded request per thread)",
        "one_request": "one request, every thread (before lanes)",
        "one_by_one": "one image per call, every thread"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time the three ways on the same batch; returns the JSON-ready result.

    Raises:
        ValueError: on counts below 1 (images below 2), or a folder with too few frames.
    """
    if args.images < 2 or args.trials < 1 or args.iterations < 1 or args.threads < 1:
        raise ValueError("--images must be at least 2, --trials, --iterations and --threads at least 1")
    paths = list_images(args.frames, "--frames folder")[: args.images]
    if len(paths) < args.images:
        raise ValueError(f"--frames folder {str(args.frames)!r} has {len(paths)} images, fewer than the "
                         f"--images {args.images} asked for")
    machine = machine_description()
    model = bundled_model_path("camvid", ".int8.onnx")
    with OpenVinoBackend(model, threads=args.threads) as lanes, \
            OpenVinoBackend(model, threads=args.threads, lanes=1) as whole:
        frames = [cv2.imread(str(path)) for path in paths]
        if any(frame is None for frame in frames):
            raise ValueError(f"OpenCV cannot read every image in {args.frames}")
        batch = network_input([frame for frame in frames if frame is not None], lanes.info)
        if not np.array_equal(lanes.infer(batch), whole.infer(batch)):
            raise ValueError("lanes returned other logits than one request: not timed")
        stats = time_interleaved({"lanes": lambda: lanes.infer(batch), "one_request": lambda: whole.infer(batch),
                                  "one_by_one": lambda: [whole.infer(batch[i : i + 1]) for i in range(len(batch))]},
                                 args.trials, args.iterations, cpu_timer, "ways")
        lane_count = lanes.lanes
    per_image = {name: s.median / args.images for name, s in stats.items()}
    return {
        "model": "camvid (INT8, OpenVINO)", "images": args.images, "network_input_hw": list(batch.shape[2:]),
        "threads": args.threads, "lanes": lane_count, "trials": args.trials, "iterations": args.iterations,
        "latency_ms": {name: s.to_dict() for name, s in stats.items()},
        "per_image_ms": per_image,
        "lanes_speedup_over_one_request": per_image["one_request"] / per_image["lanes"],
        "lanes_speedup_over_one_by_one": per_image["one_by_one"] / per_image["lanes"],
        "machine": {**machine, "load_average_after": machine_description()["load_average"]},
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown report."""
    machine = result["machine"]
    load = "/".join(f"{v:.2f}" for v in machine["load_average"] or ())
    after = "/".join(f"{v:.2f}" for v in machine["load_average_after"] or ())
    lines = [
        "# OpenVINO lanes against one request (CPU)", "",
        f"`python -m unetrt.benchmarks.bench_lanes --images {result['images']} --trials {result['trials']} "
        f"--iterations {result['iterations']} --threads {result['threads']}`", "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores; load average before {load}, "
        f"after {after}. camvid INT8, {result['images']} CamVid val frames at network input "
        f"{result['network_input_hw'][0]}x{result['network_input_hw'][1]} (HxW), {result['threads']} threads, "
        f"{result['lanes']} lanes; interleaved trials; lanes' logits checked equal to one request's first.", "",
        "| way | median ms per call | per image ms | trial spread |", "| --- | --- | --- | --- |",
    ]
    for name, label in WAYS.items():
        stats = result["latency_ms"][name]
        lines.append(f"| {label} | {stats['median']:.2f} | {result['per_image_ms'][name]:.2f} | "
                     f"{stats['spread_pct']:.1f}% |")
    lines += ["", f"Lanes: **{result['lanes_speedup_over_one_request']:.2f}x** one request, "
              f"{result['lanes_speedup_over_one_by_one']:.2f}x one image per call.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=Path, default=DEFAULT_IMAGES, help="folder of frames (CamVid val)")
    parser.add_argument("--images", type=int, default=4, help="images per batch (default 4)")
    parser.add_argument("--trials", type=int, default=5, help="interleaved trials (default 5)")
    parser.add_argument("--iterations", type=int, default=10, help="calls per trial (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="OpenVINO threads (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--name", default="lanes_cpu", help="result file name without suffix")
    args = parser.parse_args(argv)
    return run_cli(lambda: write_results(args.out, args.name, result := run(args), to_markdown(result)))


if __name__ == "__main__":
    sys.exit(main())
