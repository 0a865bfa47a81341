"""Where the network's time goes on the CPU: OpenVINO's per-layer profile of the default path's network.

Opens a model as ``Segmenter`` does on the CPU (backend 'openvino', the file and precision the default path
picks: ``NAME.int8.onnx`` for a bundled model), compiles it with that backend's own settings plus OpenVINO's
``PERF_COUNT``, runs the network on one working-size input, and sums OpenVINO's per-layer times by layer type
and kernel (e.g. 'Convolution' run by 'brgconv_avx512_I8': INT8 with AVX-512 VNNI). For the convolutions it
also gives the multiply-adds they do (counted from the ONNX graph, :mod:`unetrt.benchmarks.flops`), their rate,
and that rate per core per clock cycle at the nominal clock /proc/cpuinfo states (turbo makes the true figure
lower): how close the kernels run to what the CPU's INT8 units can do, i.e. how much faster this network can
get on this CPU at all.

Usage::

    python -m unetrt.benchmarks.bench_network_layers --model camvid --threads 2 --calls 200 \\
        --out benchmarks/results/network_layers_cpu
    python -m unetrt.benchmarks.bench_network_layers --model camvid --size 256x192   # another working size
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetrt.backends.openvino import OpenVinoBackend
from unetrt.benchmarks import results_dir
from unetrt.benchmarks.flops import flops_per_image
from unetrt.benchmarks.stats import cpu_nominal_mhz, describe_cpu, machine_description, write_results
from unetrt.cli import parse_size, run_cli
from unetrt.frame_path import network_input
from unetrt.segmenter import Segmenter

RESULTS_DIR = results_dir()
CONVOLUTIONS = ("Convolution", "ConvolutionBackpropData")


def profile_layers(model: str, threads: int, calls: int,
                   working_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Per-layer-type milliseconds of the default CPU path's network, and the convolutions' rate.

    Args:
        model: a bundled name or a model file the 'openvino' backend opens.
        threads: inference threads, as ``Segmenter(..., threads=)``.
        calls: profiled inferences (after 20 unprofiled ones).
        working_size: (width, height) the network runs at, as ``Segmenter(..., working_size=)``; None: the model's
            own (a figure stated at a bundled model's earlier working size is reproduced by naming that size).

    Returns:
        A JSON-ready dictionary: the machine, the file and precision, wall and layer-sum milliseconds per call, one
        row per (layer type, kernel) with median milliseconds per call, and the convolutions' multiply-adds and rate.

    Raises:
        ValueError: when calls is below 1 or the model does not open on the 'openvino' backend.

    Example:
        >>> profile_layers("camvid", threads=2, calls=50)["rows"][0]["layer"]  # doctest: +SKIP
        'Convolution'
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    size_option: dict[str, Any] = {} if working_size is None else {"working_size": working_size}
    with Segmenter(model, backend="openvino", threads=threads, **size_option) as segmenter:
        backend = segmenter.backend
        if not isinstance(backend, OpenVinoBackend):
            raise ValueError(f"{model!r} opened on backend {backend.name!r}; the profile needs 'openvino'")
        info = segmenter.info
        work = info.working_size
        frame = np.random.default_rng(0).integers(0, 256, (work[1], work[0], info.in_channels) if work else
                                                  (256, 256, info.in_channels), dtype=np.uint8)
        batch = network_input([frame], info)
        request = backend.profiled_request(tuple(batch.shape))
        for _ in range(20):
            request.infer({0: batch}, share_inputs=True)
        per_call: dict[tuple[str, str], list[float]] = defaultdict(list)
        walls = []
        for _ in range(calls):
            start = time.perf_counter()
            request.infer({0: batch}, share_inputs=True)
            walls.append((time.perf_counter() - start) * 1e3)
            sums: dict[tuple[str, str], float] = defaultdict(float)
            for layer in request.profiling_info:
                sums[(layer.node_type, layer.exec_type)] += layer.real_time.total_seconds() * 1e3
            for key, value in sums.items():
                per_call[key].append(value)
        source = backend.path
        precision = backend.precision
    medians = sorted(((statistics.median(values), layer, kernel) for (layer, kernel), values in per_call.items()),
                     reverse=True)
    rows: list[dict[str, Any]] = [{"layer": layer, "kernel": kernel, "ms": ms} for ms, layer, kernel in medians
                                  if ms > 0]
    conv_ms = sum(ms for ms, layer, _ in medians if layer in CONVOLUTIONS)
    macs = flops_per_image(source, batch.shape[1], batch.shape[2], batch.shape[3]) / 2 if source.suffix == ".onnx" \
        else None
    machine = machine_description()
    mhz = cpu_nominal_mhz()
    rate = None if macs is None or conv_ms == 0 else macs / (conv_ms * 1e-3)
    return {
        "machine": machine, "cpu": describe_cpu(machine), "model": model, "file": str(source),
        "precision": precision, "threads": threads, "calls": calls, "input_shape": list(batch.shape),
        "wall_ms": statistics.median(walls), "layers_ms": sum(row["ms"] for row in rows), "rows": rows,
        "convolution_ms": conv_ms, "convolution_macs": macs,
        "convolution_gmac_per_s": None if rate is None else rate / 1e9,
        "nominal_mhz": mhz,
        "macs_per_core_cycle": None if rate is None or mhz is None else rate / (threads * mhz * 1e6),
    }


def markdown(result: dict[str, Any]) -> str:
    """The profile as a Markdown report."""
    average = result["machine"]["load_average"]
    load = "unknown" if average is None else "/".join(f"{value:.2f}" for value in average)
    lines = [f"Network layers of `{result['model']}` ({Path(result['file']).name}, {result['precision']}) on "
             f"{result['cpu']}, {result['threads']} threads, input {'x'.join(map(str, result['input_shape']))}, "
             f"load average {load}; median of {result['calls']} calls:",
             "", "| layer | kernel | ms per call | share |", "| --- | --- | --- | --- |"]
    total = result["layers_ms"] or 1.0
    lines += [f"| {row['layer']} | {row['kernel']} | {row['ms']:.3f} | {100 * row['ms'] / total:.1f}% |"
              for row in result["rows"]]
    lines += ["", f"Wall {result['wall_ms']:.2f} ms per call, layers {result['layers_ms']:.2f} ms; convolutions "
                  f"{result['convolution_ms']:.2f} ms ({100 * result['convolution_ms'] / total:.0f}% of the layers)."]
    if result["convolution_macs"] is not None:
        line = (f"They do {result['convolution_macs'] / 1e9:.2f} G multiply-adds: "
                f"{result['convolution_gmac_per_s']:.0f} GMAC/s")
        if result["macs_per_core_cycle"] is not None:
            line += (f", {result['macs_per_core_cycle']:.0f} per core per cycle at the nominal "
                     f"{result['nominal_mhz']:.0f} MHz")
        lines.append(line + ".")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="camvid", help="bundled name or model file (default camvid)")
    parser.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    parser.add_argument("--calls", type=int, default=200, help="profiled inferences (default 200)")
    parser.add_argument("--size", type=parse_size, default=None, metavar="WxH",
                        help="working size the network runs at (default: the model's own)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "network_layers_cpu",
                        help="result path without suffix (.md and .json are written)")
    args = parser.parse_args(argv)

    def run() -> None:
        result = profile_layers(args.model, args.threads, args.calls, args.size)
        write_results(args.out.parent, args.out.name, result, markdown(result))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
