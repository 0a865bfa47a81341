"""Tile extraction speed: unetrt._tiling against a numpy/OpenCV reference (CPU) and PyTorch (GPU).

One 4096 x 4096 BGR uint8 frame is cut into 512 x 512 FP16 RGB tiles with 64 px overlap (81 tiles),
mirror-padded where tiles pass the frame and normalised with ImageNet mean and std:

* ``cpu_kernel``: ``unetrt._tiling.extract_tiles`` on every usable core;
* ``cpu_reference``: ``cv2.copyMakeBorder(BORDER_REFLECT_101)`` and planar RGB once, then per tile a
  slice, multiply, add and FP16 cast (bit-identical output, checked before timing);
* ``gpu_kernel`` (CUDA build, CUDA torch and a GPU): ``extract_tiles_cuda`` on device memory;
* ``gpu_reference``: ``F.pad(mode='reflect')``, normalisation, ``unfold``, FP16, contiguous;
* ``gpu_copy``: a device-to-device copy of 1 GiB, the bandwidth ceiling.

Effective bandwidth counts the bytes a tile pass must move: every tile's source pixels read once
(``tiles x 512 x 512 x 3`` bytes) and its FP16 output written once. Targets: CPU kernel >= 2x the
reference; GPU kernel >= 3x PyTorch and >= 70 % of the copy bandwidth.

Usage::

    python -m unetrt.benchmarks.bench_tiling --trials 3 --iterations 3
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from unetrt import _tiling  # type: ignore[attr-defined,unused-ignore]  # the native extension has no stub
from unetrt.benchmarks import results_dir
from unetrt.benchmarks.stats import LatencyStats, describe_cpu, machine_description, summarize, write_results
from unetrt.cli import run_cli
from unetrt.cpu import usable_cores
from unetrt.tiling import TileGrid, plan_tiles

RESULTS_DIR = results_dir()
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SCALE = 1.0 / 255.0
CPU_TARGET = 2.0
GPU_TARGET = 3.0
COPY_TARGET = 0.70
KERNEL_MAX_THREADS = 256  # the native kernels run at most this many threads (cpp_ext/bindings.cpp, resolve_threads)


def tile_bytes(grid: TileGrid, channels: int = 3) -> int:
    """Bytes a tile pass moves: each tile's uint8 source pixels read once and its FP16 output written once."""
    pixels = grid.count * grid.tile_hw[0] * grid.tile_hw[1] * channels
    return pixels * (1 + 2)


def reference_extract(frame: np.ndarray, grid: TileGrid, out: np.ndarray) -> np.ndarray:
    """The numpy/OpenCV way, tuned: pad once with copyMakeBorder, go to planar RGB once, then per tile one
    multiply and one add into a float32 buffer and the FP16 cast (the fastest of the variants tried)."""
    height, width = grid.image_hw
    (th, tw), (sy, sx), (rows, cols) = grid.tile_hw, grid.step, grid.shape
    bottom = max(0, (rows - 1) * sy + th - height)
    right = max(0, (cols - 1) * sx + tw - width)
    padded = cv2.copyMakeBorder(frame, 0, bottom, 0, right, cv2.BORDER_REFLECT_101)
    planar_rgb = np.ascontiguousarray(padded.transpose(2, 0, 1)[::-1])
    mul = np.array([SCALE / s for s in STD], np.float32)[:, None, None]
    add = np.array([-m / s for m, s in zip(MEAN, STD)], np.float32)[:, None, None]
    buffer = np.empty((3, th, tw), np.float32)
    for n in range(grid.count):
        r, c = divmod(n, cols)
        np.multiply(planar_rgb[:, r * sy : r * sy + th, c * sx : c * sx + tw], mul, out=buffer)
        np.add(buffer, add, out=buffer)
        out[n] = buffer
    return out


def kernel_extract(frame: np.ndarray, grid: TileGrid, out: np.ndarray, threads: int) -> np.ndarray:
    """unetrt._tiling's CPU kernel, BGR -> RGB fused."""
    return _tiling.extract_tiles(frame, out, origin=grid.origin, step=grid.step, grid=grid.shape, swap_rb=True,
                                 scale=SCALE, mean=list(MEAN), std=list(STD), threads=threads)


def time_interleaved(actions: dict[str, Callable[[], object]], trials: int, iterations: int,
                     timer: Callable[[Callable[[], object]], float], desc: str) -> dict[str, LatencyStats]:
    """Per-call milliseconds of each action; trials alternate between the actions so that a change in the load
    of a shared machine hits all of them alike. One warm-up call each first."""
    for action in actions.values():
        timer(action)
    runs: dict[str, list[list[float]]] = {name: [] for name in actions}
    with tqdm(total=len(actions) * trials * iterations, desc=desc, unit="pass") as progress:
        for _ in range(trials):
            for name, action in actions.items():
                runs[name].append([timer(action) for _ in range(iterations)])
                progress.update(iterations)
    return {name: summarize(trial_runs) for name, trial_runs in runs.items()}


def kernel_threads(threads: int) -> int:
    """The threads a native kernel is asked for on ``--threads``: 0 is one per core this process may use, the count
    the report names and the runtime's host path asks for (the kernels' own 0 counts every core of the machine, up
    to 16, whatever the process may use).

    Raises:
        ValueError: below 0, or above the :data:`KERNEL_MAX_THREADS` the kernels run at most.

    Example:
        >>> kernel_threads(3)
        3
    """
    if not 0 <= threads <= KERNEL_MAX_THREADS:
        raise ValueError(f"--threads must be from 0 (one per usable core) to {KERNEL_MAX_THREADS}, got {threads}")
    return threads or usable_cores()


def cpu_timer(action: Callable[[], object]) -> float:
    """Wall milliseconds of one call."""
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1e3


def figures(stats: LatencyStats, grid: TileGrid) -> dict[str, Any]:
    """Latency plus tiles per second and effective GB/s at the median."""
    seconds = stats.median / 1e3
    return {"latency_ms": stats.to_dict(), "tiles_per_s": grid.count / seconds,
            "effective_gb_s": tile_bytes(grid) / seconds / 1e9}


def bench_cpu(frame: np.ndarray, grid: TileGrid, trials: int, iterations: int, threads: int) -> dict[str, Any]:
    """CPU kernel against the numpy/OpenCV reference; both outputs are checked equal first."""
    kernel_out = np.empty((grid.count, 3, *grid.tile_hw), np.float16)
    reference_out = np.empty_like(kernel_out)
    kernel_extract(frame, grid, kernel_out, threads)
    reference_extract(frame, grid, reference_out)
    # Same float32 operations, so the tiles must agree exactly; the benchmark compares equal work.
    if not np.array_equal(kernel_out.view(np.uint16), reference_out.view(np.uint16)):
        raise RuntimeError("CPU kernel and numpy/OpenCV reference disagree; the comparison would be meaningless")
    stats = time_interleaved({"kernel": lambda: kernel_extract(frame, grid, kernel_out, threads),
                              "reference": lambda: reference_extract(frame, grid, reference_out)},
                             trials, iterations, cpu_timer, "cpu")
    kernel, reference = stats["kernel"], stats["reference"]
    speedup = reference.median / kernel.median
    return {"cpu_kernel": figures(kernel, grid), "cpu_reference": figures(reference, grid),
            "threads": threads or usable_cores(), "cpu_speedup": speedup, "cpu_target_met": speedup >= CPU_TARGET}


def _cuda_torch() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() and _tiling.cuda_built and _tiling.cuda_device_count() > 0 else None


def gpu_timer(torch: Any) -> Callable[[Callable[[], object]], float]:
    """Milliseconds of one call from CUDA events on the current stream."""

    def timer(action: Callable[[], object]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        action()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    return timer


def bench_gpu(frame: np.ndarray, grid: TileGrid, trials: int, iterations: int) -> dict[str, Any] | None:
    """GPU kernel against PyTorch and against the device's copy bandwidth; None without a usable GPU."""
    torch = _cuda_torch()
    if torch is None:
        return None
    import torch.nn.functional as F  # noqa: N812 - PyTorch's own convention

    height, width = grid.image_hw
    (th, tw), (sy, sx), (rows, cols) = grid.tile_hw, grid.step, grid.shape
    device_frame = torch.from_numpy(frame).cuda()
    kernel_out = torch.empty((grid.count, 3, th, tw), dtype=torch.float16, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    strides = tuple(s * device_frame.element_size() for s in device_frame.stride())

    def kernel() -> None:
        _tiling.extract_tiles_cuda(device_frame.data_ptr(), (height, width), 3, strides, "uint8",
                                   kernel_out.data_ptr(), tuple(kernel_out.shape), "float16", origin=grid.origin,
                                   step=grid.step, grid=grid.shape, swap_rb=True, scale=SCALE, mean=list(MEAN),
                                   std=list(STD), stream=stream)

    mul = torch.tensor([SCALE / s for s in STD], device="cuda").view(1, 3, 1, 1)
    add = torch.tensor([-m / s for m, s in zip(MEAN, STD)], device="cuda").view(1, 3, 1, 1)
    bottom = max(0, (rows - 1) * sy + th - height)
    right = max(0, (cols - 1) * sx + tw - width)

    def reference() -> Any:
        rgb = device_frame.flip(-1).permute(2, 0, 1)[None].float()
        padded = F.pad(rgb, (0, right, 0, bottom), mode="reflect") * mul + add
        tiles = padded.unfold(2, th, sy).unfold(3, tw, sx)  # 1 x 3 x rows x cols x th x tw
        return tiles[0].permute(1, 2, 0, 3, 4).reshape(grid.count, 3, th, tw).half().contiguous()

    kernel()
    if not torch.equal(kernel_out, reference()):
        difference = (kernel_out.float() - reference().float()).abs().max().item()
        print(f"note: GPU kernel and PyTorch differ by up to {difference:g} (rounding order)", file=sys.stderr)
    copy_src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    copy_dst = torch.empty_like(copy_src)
    stats = time_interleaved({"kernel": kernel, "reference": reference, "copy": lambda: copy_dst.copy_(copy_src)},
                             trials, iterations, gpu_timer(torch), "gpu")
    kernel_stats, reference_stats, copy_stats = stats["kernel"], stats["reference"], stats["copy"]
    copy_gb_s = 2 * copy_src.numel() / (copy_stats.median / 1e3) / 1e9  # read + write
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(), "gpu_kernel": figures(kernel_stats, grid),
        "gpu_reference": figures(reference_stats, grid),
        "gpu_copy": {"latency_ms": copy_stats.to_dict(), "gb_s": copy_gb_s},
    }
    result["gpu_speedup"] = reference_stats.median / kernel_stats.median
    result["gpu_copy_fraction"] = result["gpu_kernel"]["effective_gb_s"] / copy_gb_s
    result["gpu_targets_met"] = result["gpu_speedup"] >= GPU_TARGET and result["gpu_copy_fraction"] >= COPY_TARGET
    return result


def to_markdown(result: dict[str, Any]) -> str:
    """A short human-readable table of the result."""
    machine = result["machine"]
    lines = [
        f"# Tile extraction: {result['frame']} frame -> {result['tiles']} tiles of {result['tile']} FP16, "
        f"overlap {result['overlap']}",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores, load average "
        f"{machine['load_average']}; host {result['host']}; {result['date']}.",
        "",
        "| path | median ms | tiles/s | effective GB/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key in ("cpu_kernel", "cpu_reference", "gpu_kernel", "gpu_reference"):
        part = result["cpu"].get(key) or (result["gpu"] or {}).get(key)
        if part:
            lines.append(f"| {key} | {part['latency_ms']['median']:.1f} | {part['tiles_per_s']:.0f} | "
                         f"{part['effective_gb_s']:.2f} |")
    cpu = result["cpu"]
    lines += ["", f"CPU kernel ({cpu['threads']} threads) is {cpu['cpu_speedup']:.2f}x the numpy/OpenCV reference "
              f"(target >= {CPU_TARGET}x: {'met' if cpu['cpu_target_met'] else 'NOT met'})."]
    gpu = result["gpu"]
    if gpu is None:
        lines.append("GPU: not measured (no CUDA build, CUDA torch or GPU on this machine).")
    else:
        lines.append(f"GPU ({gpu['device']}): {gpu['gpu_speedup']:.2f}x PyTorch (target >= {GPU_TARGET}x), "
                     f"{gpu['gpu_copy_fraction']:.0%} of the {gpu['gpu_copy']['gb_s']:.0f} GB/s copy bandwidth "
                     f"(target >= {COPY_TARGET:.0%}): {'met' if gpu['gpu_targets_met'] else 'NOT met'}.")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by the parsed arguments and write its results."""
    if args.size < 1 or args.trials < 1 or args.iterations < 1:
        raise ValueError("--size, --trials and --iterations must be positive")
    threads = kernel_threads(args.threads)
    grid = plan_tiles((args.size, args.size), args.tile, args.overlap)
    frame = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    result: dict[str, Any] = {
        "frame": f"{args.size}x{args.size} BGR uint8", "tile": f"{grid.tile_hw[0]}x{grid.tile_hw[1]}",
        "overlap": args.overlap, "tiles": grid.count, "bytes_per_pass": tile_bytes(grid),
        "host": socket.gethostname(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_description(),
        "cpu": bench_cpu(frame, grid, args.trials, args.iterations, threads),
        "gpu": None if args.no_gpu else bench_gpu(frame, grid, args.trials, args.iterations),
    }
    result["machine_after"] = {"load_average": machine_description()["load_average"]}
    name = args.name or ("tiling_gpu" if result["gpu"] else "tiling_cpu")
    write_results(args.results_dir, name, result, to_markdown(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write ``benchmarks/results/tiling_*.json`` and ``.md``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(description="Tile extraction: native kernels vs numpy/OpenCV and PyTorch.")
    parser.add_argument("--size", type=int, default=4096, help="square frame side (default 4096)")
    parser.add_argument("--tile", type=int, default=512, help="tile side (default 512)")
    parser.add_argument("--overlap", type=int, default=64, help="tile overlap (default 64)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3, help="timed passes per trial")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU kernel threads (0 = one per core this process may use)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU part")
    parser.add_argument("--name", default=None, help="result file stem (default tiling_cpu or tiling_gpu)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
