"""Frames per second of ``unet-batch`` on Ray against a plain single-process ``Segmenter`` loop, on the same files.

The frames are the first ``--frames`` frames of the bundled CamVid clip, written as PNG files. Every setting
does the same work per file: read the PNG, segment it, write the mask PNG (temp name + rename). Settings:

* ``loop``: one process, one Segmenter with all cores' threads;
* ``ray, 1 actor``: a local Ray cluster (one node), one actor with all cores' threads;
* ``ray, 2 actors``: the same cluster, two actors of ``cores / 2`` threads each;
* ``ray, 2 nodes``: two Ray nodes started on this machine (``ray.cluster_utils.Cluster``, half the cores each),
  two actors.

Figures: end-to-end frames per second (the files over the job's wall time, which for Ray includes starting
the actors and loading the model in each; the loop's model load is timed apart), and for Ray the sum of the
actors' busy-time rates (frames per second while segmenting and writing), with Ray's own start-up time.

Usage::

    python -m unetrt.benchmarks.bench_batch --frames 120
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from unetrt.batch.job import BatchSettings, run_batch
from unetrt.batch.outputs import write_png_atomically
from unetrt.benchmarks import results_dir
from unetrt.benchmarks.stats import describe_cpu, load_average, machine_description, usable_cores, write_results
from unetrt.bundled import sample_clip
from unetrt.cli import HelpFormatter, run_cli
from unetrt.segmenter import Segmenter

RESULTS_DIR = results_dir()


def write_frames(folder: Path, count: int) -> list[Path]:
    """The clip's first ``count`` frames as PNG files.

    Raises:
        ValueError: when the clip has fewer frames.
    """
    capture = cv2.VideoCapture(str(sample_clip()))
    paths: list[Path] = []
    while len(paths) < count:
        ok, frame = capture.read()
        if not ok:
            break
        path = folder / f"frame_{len(paths):05d}.png"
        cv2.imwrite(str(path), frame)
        paths.append(path)
    capture.release()
    if len(paths) < count:
        raise ValueError(f"the sample clip has only {len(paths)} frames; ask for at most that many")
    return paths


def run_loop(paths: Sequence[Path], out: Path, model: str, threads: int) -> dict[str, Any]:
    """The plain loop: one Segmenter, read, segment and write each file in turn."""
    start = time.perf_counter()
    with Segmenter(model, threads=threads) as segmenter:
        opened = time.perf_counter()
        for path in paths:
            frame = cv2.imread(str(path))
            if frame is None:
                raise ValueError(f"cannot read {str(path)!r}")
            write_png_atomically(out / f"{path.stem}.png", segmenter.segment(frame).mask)
        done = time.perf_counter()
        engine = f"{segmenter.backend.name} on {segmenter.backend.device}"
    return {"setting": "loop", "workers": 1, "threads": threads, "engine": engine,
            "model_open_s": round(opened - start, 2), "wall_s": round(done - opened, 2),
            "fps": round(len(paths) / (done - opened), 1)}


def run_ray(paths: Sequence[Path], out: Path, model: str, workers: int, threads: int, nodes: int,
            cores: int) -> dict[str, Any]:
    """``run_batch`` on a fresh cluster of ``nodes`` nodes on this machine, sharing ``cores`` CPUs among them."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.perf_counter()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": cores // nodes, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cores // nodes)
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
    started = time.perf_counter()
    try:
        summary = run_batch([str(path) for path in paths], out, BatchSettings(model=model, threads=threads),
                            workers=workers, progress=False)
    finally:
        ray.shutdown()
        cluster.shutdown()
    busy_fps = sum(worker["fps"] or 0.0 for worker in summary["workers"].values())
    return {"setting": f"ray, {workers} actor{'s' if workers > 1 else ''}" + (f", {nodes} nodes" if nodes > 1 else ""),
            "workers": workers, "threads": threads, "engine": ", ".join(summary["engines"]),
            "ray_start_s": round(started - start, 2), "wall_s": summary["wall_time_s"], "fps": summary["fps"],
            "busy_fps": round(busy_fps, 1), "frames": summary["frames"]}


def to_markdown(result: dict[str, Any]) -> str:
    """The result as the Markdown note in benchmarks/results."""
    machine = result["machine"]
    before, after = result["load_before"], result["load_after"]
    lines = [
        "# unet-batch on Ray against a plain Segmenter loop (CPU)", "",
        f"`{result['command']}` (Ray {result['ray']})", "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores, shared with other jobs: load "
        f"average (1, 5, 15 min) before {', '.join(f'{v:.2f}' for v in before)}, after "
        f"{', '.join(f'{v:.2f}' for v in after)}.",
        f"Model `{result['model']}`; {result['frames']} frames of the bundled CamVid clip (480x360 PNG); each "
        "setting reads every PNG, segments it and writes the mask PNG.", "",
        "| setting | actors x threads | engine | end-to-end frames/s | wall s | actors' busy frames/s | start-up s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        startup = row.get("ray_start_s", row.get("model_open_s"))
        label = "Ray start" if "ray_start_s" in row else "model open"
        lines.append(f"| {row['setting']} | {row['workers']} x {row['threads']} | {row['engine']} | {row['fps']} | "
                     f"{row['wall_s']} | {row.get('busy_fps', '-')} | {startup} ({label}) |")
    lines += ["", "End-to-end for Ray is the job's wall time: it includes starting the actors and opening the model "
              "in each, which a short job pays in full; the busy rate is what the actors reach once running. "
              "On one 2-core machine Ray adds processes that share the same cores, so it cannot beat the loop "
              "here; its gain is across machines (docs/batch.md).", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of the benchmark."""
    parser = argparse.ArgumentParser(prog="bench_batch", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--frames", type=int, default=120, help="frames of the sample clip to segment")
    parser.add_argument("--model", default="camvid", help="a bundled model name or model file")
    parser.add_argument("--name", default="batch_cpu", help="result file name in benchmarks/results")
    return parser


def _run(args: argparse.Namespace) -> None:
    import ray

    cores = usable_cores()
    half = max(1, cores // 2)
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as temp:
        folder = Path(temp)
        (folder / "in").mkdir()
        paths = write_frames(folder / "in", args.frames)
        plan = [("loop", 1, cores, 1), ("ray", 1, cores, 1), ("ray", 2, half, 1), ("ray", 2, half, 2)]
        for index, (kind, workers, threads, nodes) in enumerate(plan):
            out = folder / f"out{index}"
            out.mkdir()
            print(f"running {kind} with {workers} x {threads} threads on {nodes} node(s)", file=sys.stderr)
            rows.append(run_loop(paths, out, args.model, threads) if kind == "loop"
                        else run_ray(paths, out, args.model, workers, threads, nodes, cores))
    result = {"command": "python -m unetrt.benchmarks.bench_batch " + " ".join(sys.argv[1:]), "ray": ray.__version__,
              "machine": machine_description(), "model": args.model, "frames": args.frames,
              "load_before": load_before, "load_after": load_average(), "rows": rows}
    write_results(RESULTS_DIR, args.name, result, to_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
