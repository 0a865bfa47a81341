"""What ``Segmenter.segment`` adds to the bare network: camvid at 480x360 on the default CPU path.

Two timings per CamVid val frame, interleaved in one run (the order flips every trial, so a change in the
load of a shared machine hits both alike):

* ``bare``: ``backend.infer`` on the frame's network input (1 x 3 x H x W at the model's working size,
  that of the shipped camvid, prepared beforehand by the same kernels);
* ``segment``: ``Segmenter.segment`` from the uint8 BGR frame to the mask at 480x360 (check, working-size
  resize, extract, network, fused bilinear finish).

The backend and precision are ``Segmenter``'s defaults (``--backend auto --precision auto``: OpenVINO INT8
where OpenVINO is installed), or those asked for. The overhead is ``segment - bare`` in ms and in % of ``bare``
(target: at most 10 %, issue 26); the path's own host work (its 'preprocess' and 'postprocess' stages) is
reported beside it, since on a loaded machine the difference of two medians drowns in the network's variance.
Each kernel of the path is also timed alone on the same frames (working-size resize, extract, fused finish:
11 classes, 256x192 scores to a 480x360 mask, target at most 2 ms), and what the kernels do not explain is
reported as the rest (Python, the output copy, caches refilled after the network).

Usage::

    python -m unetrt.benchmarks.bench_segmenter_overhead --trials 5 --frames 20 --threads 2
    python -m unetrt.benchmarks.bench_segmenter_overhead --backend onnxruntime --precision fp32 --out fp32
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
from tqdm import tqdm

import unetrt
from unetrt.benchmarks import camvid_val_frames, results_dir
from unetrt.benchmarks.stats import LatencyStats, describe_cpu, machine_description, summarize, write_results
from unetrt.cli import run_cli
from unetrt.datasets import list_images
from unetrt.device import HostDevice, resize_frame
from unetrt.frame_path import extract_normalisation, network_input
from unetrt.segmenter import Segmenter

RESULTS_DIR = results_dir()
DEFAULT_IMAGES = camvid_val_frames()
FRAME_HW = (360, 480)
OVERHEAD_TARGET_PCT = 10.0
FINISH_TARGET_MS = 2.0


def timed_ms(action: Callable[[], object]) -> float:
    """Wall milliseconds of one call."""
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1e3


def read_frames(folder: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a folder, as 480x360 BGR uint8.

    Raises:
        ValueError: when the folder holds fewer frames or one is not 480x360.
    """
    paths = list_images(folder, "--images folder")[:count]
    if len(paths) < count:
        raise ValueError(f"--images folder {str(folder)!r} has {len(paths)} images, fewer than the --frames {count} "
                         "asked for")
    frames = []
    for path in paths:
        frame = cv2.imread(str(path))
        if frame is None or frame.shape[:2] != FRAME_HW:
            raise ValueError(f"{path} is not a 480x360 colour image")
        frames.append(frame)
    return frames


def interleaved(pairs: Sequence[tuple[Callable[[], object], Callable[[], object]]],
                trials: int) -> tuple[LatencyStats, LatencyStats]:
    """Per-call milliseconds of the first and second action of each pair, alternating which runs first."""
    first_runs: list[list[float]] = []
    second_runs: list[list[float]] = []
    with tqdm(total=trials * len(pairs), desc="trials", unit="frame", disable=None) as progress:
        for trial in range(trials):
            firsts, seconds = [], []
            for first, second in pairs:
                if trial % 2:
                    seconds.append(timed_ms(second))
                    firsts.append(timed_ms(first))
                else:
                    firsts.append(timed_ms(first))
                    seconds.append(timed_ms(second))
                progress.update()
            first_runs.append(firsts)
            second_runs.append(seconds)
    return summarize(first_runs), summarize(second_runs)


def kernel_medians(segmenter: Segmenter, pictures: Sequence[np.ndarray], scores: np.ndarray,
                   trials: int) -> dict[str, LatencyStats]:
    """Each kernel of the path alone, called as the path calls it, on the same frames: the working-size resize,
    the extract into the network input, and the fused finish of one frame's scores to its mask."""
    device = HostDevice(lambda batch: batch)
    work = segmenter.info.working_size
    work_hw = FRAME_HW if work is None else (work[1], work[0])
    resized = [device.prepare(frame, work_hw, 0) for frame in pictures]
    normalisation = extract_normalisation(resized[0], segmenter.info)
    batch = np.empty((1, segmenter.info.in_channels, *scores.shape[1:]), np.float32)
    mask = np.empty(FRAME_HW, np.uint8)
    rect = (0, 0, scores.shape[1], scores.shape[2])
    grid = segmenter.tile_grid(*work_hw)
    actions: dict[str, Callable[[np.ndarray, np.ndarray], object]] = {
        "resize": lambda frame, _: resize_frame(frame, work_hw),
        "extract": lambda _, image: device.extract(image, batch, origin=grid.origin, step=grid.step,
                                                   grid=grid.shape, first=0, **normalisation),
        "finish": lambda _frame, _image: device.finish(scores, mask, None, rect=rect, weight=None, binary=False),
    }
    def runs(action: Callable[[np.ndarray, np.ndarray], object]) -> LatencyStats:
        return summarize([[timed_ms(partial(action, frame, image)) for frame, image in zip(pictures, resized)]
                          for _ in range(trials)])

    return {name: runs(action) for name, action in actions.items()}


def benchmark(model: str, images: Path, frames: int, trials: int, threads: int, backend: str = "auto",
              precision: str = "auto") -> dict[str, Any]:
    """Run the comparison; returns the JSON-ready result.

    Raises:
        ValueError: on bad counts or frames, or a backend or precision that cannot run the model.
    """
    if frames < 1 or trials < 1 or threads < 1:
        raise ValueError(f"frames, trials and threads must be at least 1, got {frames}, {trials}, {threads}")
    pictures = read_frames(images, frames)
    load_before = machine_description()["load_average"]
    with Segmenter(model, backend=backend, precision=precision, device="cpu", threads=threads) as segmenter:
        batches = [network_input([frame], segmenter.info) for frame in pictures]
        for frame, batch in zip(pictures, batches):  # warm-up: sessions, buffers, caches
            segmenter.backend.infer(batch)
            segmenter.segment(frame)
        pairs = [(lambda b=batch: segmenter.backend.infer(b), lambda f=frame: segmenter.segment(f))
                 for frame, batch in zip(pictures, batches)]
        bare, segment = interleaved(pairs, trials)
        stages = [segmenter.segment(frame).timings_ms for frame in pictures]
        scores = segmenter.backend.infer(batches[0])[0]
        kernels = kernel_medians(segmenter, pictures, scores, trials)
        work = segmenter.info.working_size
        ran = f"{segmenter.backend.name} (CPU, {segmenter.backend.precision.upper()})"
    finish = kernels["finish"]
    overhead_ms = segment.median - bare.median
    overhead_pct = 100.0 * overhead_ms / bare.median
    kernel_ms = {name: stats.median for name, stats in kernels.items()}
    return {
        "unetrt": unetrt.__version__,
        "model": model,
        "backend": ran,
        "backend_asked": backend,
        "precision_asked": precision,
        "threads": threads,
        "frame_hw": list(FRAME_HW),
        "network_input_hw": [int(v) for v in batches[0].shape[2:]],
        "working_size": list(work) if work is not None else None,
        "frames": frames,
        "trials": trials,
        "bare_ms": bare.to_dict(),
        "segment_ms": segment.to_dict(),
        "overhead_ms": overhead_ms,
        "overhead_pct": overhead_pct,
        "overhead_target_pct": OVERHEAD_TARGET_PCT,
        "overhead_target_met": overhead_pct <= OVERHEAD_TARGET_PCT,
        "segment_stages_ms": {key: float(np.median([s[key] for s in stages])) for key in stages[0]},
        # The path's own host work, timed inside segment: unlike the difference of two medians, it does not
        # drown in the network's variance on a loaded machine.
        "host_work_ms": float(np.median([s["preprocess"] + s["postprocess"] for s in stages])),
        "kernels_alone_ms": kernel_ms,
        "overhead_beyond_kernels_ms": overhead_ms - sum(kernel_ms.values()),
        "finish_ms": finish.to_dict(),
        "finish_classes": int(scores.shape[0]),
        "finish_target_ms": FINISH_TARGET_MS,
        "finish_target_met": finish.median <= FINISH_TARGET_MS,
        "machine": {**machine_description(), "load_average_before": load_before},
    }


def _load(values: Sequence[float] | None) -> str:
    return "n/a" if values is None else ", ".join(f"{v:.2f}" for v in values)


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown report."""
    machine = result["machine"]
    bare, segment, finish = result["bare_ms"], result["segment_ms"], result["finish_ms"]
    stages = ", ".join(f"{k} {v:.2f} ms" for k, v in result["segment_stages_ms"].items())
    kernels = ", ".join(f"{k} {v:.2f} ms" for k, v in result["kernels_alone_ms"].items())
    network_h, network_w = result["network_input_hw"]
    return "\n".join([
        "# Segmenter overhead over the bare network (CPU)",
        "",
        f"`python -m unetrt.benchmarks.bench_segmenter_overhead --frames {result['frames']} --trials "
        f"{result['trials']} --threads {result['threads']} --backend {result['backend_asked']} --precision "
        f"{result['precision_asked']}` (unetrt {result['unetrt']})",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores; load average (1, 5, 15 min) "
        f"before {_load(machine['load_average_before'])}, after {_load(machine['load_average'])}.",
        f"Model `{result['model']}` on {result['backend']}, {result['threads']} threads; {result['frames']} CamVid "
        f"val frames at 480x360, network input {network_h}x{network_w} (HxW), {result['trials']} interleaved trials.",
        "",
        "| measurement | median ms | p90 ms | trial spread |",
        "| --- | --- | --- | --- |",
        f"| bare `backend.infer` | {bare['median']:.2f} | {bare['p90']:.2f} | {bare['spread_pct']:.1f}% |",
        f"| `Segmenter.segment` (uint8 frame to 480x360 mask) | {segment['median']:.2f} | {segment['p90']:.2f} | "
        f"{segment['spread_pct']:.1f}% |",
        f"| fused finish alone ({result['finish_classes']} classes, {network_w}x{network_h} to 480x360) | "
        f"{finish['median']:.2f} | "
        f"{finish['p90']:.2f} | {finish['spread_pct']:.1f}% |",
        "",
        f"Overhead: **{result['overhead_ms']:.2f} ms = {result['overhead_pct']:.1f}%** of the bare network "
        f"(target <= {result['overhead_target_pct']:.0f}%: {'met' if result['overhead_target_met'] else 'NOT met'}). "
        f"Fused finish {finish['median']:.2f} ms (target <= {result['finish_target_ms']:.0f} ms: "
        f"{'met' if result['finish_target_met'] else 'NOT met'}).",
        "",
        f"Segment stages (medians): {stages}; the path's own host work (preprocess + postprocess) "
        f"{result['host_work_ms']:.2f} ms per frame = {100 * result['host_work_ms'] / bare['median']:.1f}% of the "
        "bare median.",
        "",
        f"Where the overhead goes (each kernel alone, medians): {kernels}; the rest (Python, the output copy, "
        f"caches refilled after the network) {result['overhead_beyond_kernels_ms']:.2f} ms.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="camvid", help="bundled name or .onnx file (default camvid)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of 480x360 frames")
    parser.add_argument("--frames", type=int, default=20, help="frames per trial (default 20)")
    parser.add_argument("--trials", type=int, default=5, help="interleaved trials (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="backend threads (default 2)")
    parser.add_argument("--backend", default="auto", help="backend (default auto: Segmenter's default path)")
    parser.add_argument("--precision", default="auto", help="precision (default auto: Segmenter's default path)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "segmenter_overhead_cpu",
                        help="result path without suffix (.md and .json are written)")
    args = parser.parse_args(argv)

    def run() -> None:
        result = benchmark(args.model, args.images, args.frames, args.trials, args.threads, args.backend,
                           args.precision)
        write_results(args.out.parent, args.out.name, result, markdown(result))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
