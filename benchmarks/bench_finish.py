"""Fused finish speed: network scores to a mask at the frame's size in one native pass (CPU).

camvid's case: 11 classes of 256 x 192 float32 scores become a 480 x 360 uint8 mask (bilinear resize of the
scores fused with the argmax, ``unetrt._tiling.finish_resized``). Timed, interleaved in one run:

* ``fused``: ``finish_resized`` with the default threads (one per core this process may use);
* ``fused_1_thread``: the same on one thread;
* ``opencv_numpy``: the unfused way with the same result up to coordinate rounding: ``cv2.resize`` of each
  class plane (INTER_LINEAR), then ``np.argmax``;
* ``argmax_nearest``: the old path, for scale: ``finish`` (argmax) at network resolution, then
  ``cv2.resize(INTER_NEAREST)`` of the mask (blocky edges, a different result).

The scores are either ``--content random`` (independent normal values: every pixel lies on a class border, the
kernel's worst case) or ``--content regions`` (a scene: coarse class regions, each winning by 4, plus a
little noise, as a network's scores look; the kernel settles the pixels inside a region from the argmax of their
source pixels and interpolates the classes only along the borders).

``--baseline PATH`` adds another build of the kernels (a ``_tiling*.so`` saved before a rebuild, e.g. main's) as
``baseline_fused`` and ``baseline_fused_1_thread``, interleaved with the rows of this build in every trial, so that a
change of the kernel is measured under the same load; the report says whether both builds give the same masks.

Target: ``fused`` <= 2 ms (issue 11). The load average before and after is printed with the machine.

Usage::

    python -m unetrt.benchmarks.bench_finish --trials 5 --iterations 50
    python -m unetrt.benchmarks.bench_finish --content regions --name finish_cpu_regions
    python -m unetrt.benchmarks.bench_finish --baseline /tmp/main/_tiling.cpython-311-x86_64-linux-gnu.so
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from unetrt import _tiling  # type: ignore[attr-defined,unused-ignore]  # the native extension has no stub
from unetrt.benchmarks import results_dir
from unetrt.benchmarks.bench_tiling import cpu_timer, kernel_threads, time_interleaved
from unetrt.benchmarks.stats import describe_cpu, machine_description, write_results
from unetrt.cli import parse_size, run_cli

RESULTS_DIR = results_dir()
TARGET_MS = 2.0
CONTENTS = ("random", "regions")
# A region of the ``regions`` scores is this many source pixels on a side; the noise's standard deviation is small
# against the lead of 4, so that, as in camvid's logits of CamVid val frames, about 10% of the 8-pixel blocks of
# the mask hold a class border.
REGION_SIDE = 48
NOISE = 0.5


def region_scores(classes: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """K x H x W float32 scores of a scene: coarse class regions, each winning by 4, plus normal noise.

    Example:
        >>> region_scores(11, 192, 256).shape
        (11, 192, 256)
    """
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, (-(-height // REGION_SIDE), -(-width // REGION_SIDE)))
    labels = coarse[np.arange(height)[:, None] // REGION_SIDE, np.arange(width)[None, :] // REGION_SIDE]
    scores = (rng.standard_normal((classes, height, width)) * NOISE).astype(np.float32)
    scores[labels, np.arange(height)[:, None], np.arange(width)[None, :]] += 4
    return scores


def load_baseline(path: Path) -> Any:
    """Another build of ``unetrt._tiling`` from its ``.so`` file, loaded beside this one (as ``baseline._tiling``).

    Raises:
        ValueError: when the file is no loadable build of the kernels.
    """
    if not path.is_file():
        raise ValueError(f"--baseline {str(path)!r} is no file: give a _tiling*.so saved from another build")
    spec = importlib.util.spec_from_file_location("baseline._tiling", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--baseline {str(path)!r} is no Python extension module (a _tiling*.so)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise ValueError(f"--baseline {str(path)!r} cannot be loaded as unetrt's kernels: {exc}") from exc
    return module


def opencv_numpy_finish(scores: np.ndarray, out_hw: tuple[int, int], mask: np.ndarray) -> np.ndarray:
    """Per-class cv2.resize (INTER_LINEAR) into one K x H x W buffer, then numpy's argmax."""
    height, width = out_hw
    resized = np.empty((scores.shape[0], height, width), np.float32)
    for k in range(scores.shape[0]):
        resized[k] = cv2.resize(scores[k], (width, height), interpolation=cv2.INTER_LINEAR)
    mask[:] = resized.argmax(axis=0)
    return mask


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by the parsed arguments and write its results."""
    if args.classes < 1 or args.classes > 256 or args.trials < 1 or args.iterations < 1:
        raise ValueError("--classes must be 1 to 256, --trials and --iterations positive")
    threads = kernel_threads(args.threads)
    baseline = None if args.baseline is None else load_baseline(args.baseline)
    (net_w, net_h), (out_w, out_h) = args.scores, args.mask
    machine = machine_description()
    if args.content == "regions":
        scores = region_scores(args.classes, net_h, net_w)
    else:
        scores = np.random.default_rng(0).standard_normal((args.classes, net_h, net_w)).astype(np.float32)
    rect = (0, 0, net_h, net_w)
    masks = {name: np.empty((out_h, out_w), np.uint8) for name in ("fused", "fused_1_thread", "opencv_numpy")}
    small = np.empty((net_h, net_w), np.uint8)
    nearest = np.empty((out_h, out_w), np.uint8)

    def argmax_nearest() -> None:
        _tiling.finish(scores, mask=small)
        cv2.resize(small, (out_w, out_h), dst=nearest, interpolation=cv2.INTER_NEAREST)

    actions = {
        "fused": lambda: _tiling.finish_resized(scores, masks["fused"], rect=rect, threads=threads),
        "fused_1_thread": lambda: _tiling.finish_resized(scores, masks["fused_1_thread"], rect=rect, threads=1),
        "opencv_numpy": lambda: opencv_numpy_finish(scores, (out_h, out_w), masks["opencv_numpy"]),
        "argmax_nearest": argmax_nearest,
    }
    if baseline is not None:
        masks["baseline_fused"] = np.empty((out_h, out_w), np.uint8)
        actions["baseline_fused"] = lambda: baseline.finish_resized(scores, masks["baseline_fused"], rect=rect,
                                                                    threads=threads)
        actions["baseline_fused_1_thread"] = lambda: baseline.finish_resized(scores, masks["baseline_fused"],
                                                                             rect=rect, threads=1)
    stats = time_interleaved(actions, args.trials, args.iterations, cpu_timer, "finish")
    # OpenCV rounds the sample coordinates in double, the kernel in float32: near-ties may pick another class.
    agreement = float((masks["fused"] == masks["opencv_numpy"]).mean())
    fused_ms = stats["fused"].median
    result: dict[str, Any] = {
        "case": f"{args.classes} classes, {net_w}x{net_h} float32 scores ({args.content}) -> {out_w}x{out_h} "
                "uint8 mask",
        "content": args.content,
        "host": socket.gethostname(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine,
        "threads": threads,
        "latency_ms": {name: s.to_dict() for name, s in stats.items()},
        "fused_vs_opencv_numpy_agreement": agreement, "target_ms": TARGET_MS, "target_met": fused_ms <= TARGET_MS,
        "load_average_after": machine_description()["load_average"],
    }
    if baseline is not None:
        result["baseline"] = str(args.baseline)
        result["baseline_masks_equal"] = bool(np.array_equal(masks["fused"], masks["baseline_fused"]))
    write_results(args.results_dir, args.name, result, to_markdown(result))
    return result


def to_markdown(result: dict[str, Any]) -> str:
    """A short human-readable table of the result."""
    machine = result["machine"]
    load = ", ".join(f"{v:.2f}" for v in machine["load_average"] or ())
    after = ", ".join(f"{v:.2f}" for v in result["load_average_after"] or ())
    lines = [
        f"# Fused finish: {result['case']}",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores; load average before "
        f"({load}), after ({after}); host {result['host']}; {result['date']}.",
        "",
        "| path | median ms | p90 ms | min ms | trial spread |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in result["latency_ms"].items():
        lines.append(f"| {name} | {s['median']:.3f} | {s['p90']:.3f} | {s['min']:.3f} | {s['spread_pct']:.0f}% |")
    fused = result["latency_ms"]["fused"]["median"]
    lines += ["", f"Fused finish ({result['threads']} threads): {fused:.3f} ms median (target <= "
              f"{result['target_ms']:g} ms: {'met' if result['target_met'] else 'NOT met'}); its mask equals "
              f"cv2.resize + argmax on {result['fused_vs_opencv_numpy_agreement']:.4%} of pixels."]
    if "baseline" in result:
        ratio = (result["latency_ms"]["fused_1_thread"]["median"]
                 / result["latency_ms"]["baseline_fused_1_thread"]["median"])
        lines += ["", f"Baseline build `{result['baseline']}` interleaved: one thread {ratio:.3f}x its median; "
                  f"masks {'equal' if result['baseline_masks_equal'] else 'DIFFERENT'}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write ``benchmarks/results/finish_cpu.json`` and ``.md``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(description="Fused finish (bilinear resize + argmax) against unfused paths.")
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--scores", type=parse_size, default=(256, 192), help="score plane WxH (default 256x192)")
    parser.add_argument("--mask", type=parse_size, default=(480, 360), help="mask WxH (default 480x360)")
    parser.add_argument("--content", choices=CONTENTS, default="random",
                        help="scores: 'random' (every pixel a class border, the worst case) or 'regions' (a scene)")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=50, help="timed calls per trial")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of the fused kernel (0 = one per core this process may use)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another build's _tiling*.so to time beside this one, interleaved")
    parser.add_argument("--name", default="finish_cpu", help="result file stem (default finish_cpu)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
