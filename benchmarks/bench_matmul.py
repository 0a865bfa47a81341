"""This CPU's dense matmul rate in INT8, BF16 and FP32, the ceiling the U-Net rows of ``unet-bench`` are held to.

One ``size x size x size`` matrix product (2 x size^3 FLOPs, a multiply-add counted
as 2 as :mod:`unetrt.benchmarks.flops` counts convolutions) through the same
engines the network runs on, with the same thread count:

* INT8: a QDQ ``MatMul`` on OpenVINO (INT8 activations and weights: VNNI / AMX kernels),
  and ONNX Runtime's ``MatMulInteger`` (uint8 x int8, MLAS's VNNI kernels);
* BF16 (where the CPU has it natively): the FP32 ``MatMul`` on OpenVINO with the BF16 inference-precision hint,
  and ``torch.matmul`` on bfloat16 tensors when torch is installed;
* FP32: the same on OpenVINO, ONNX Runtime and torch.

Each rate is the median of ``trials`` timed calls after warm-up; the rate of a
precision is the best engine's. Engines that are not installed are left out.

Example:
    python -m unetrt.benchmarks.bench_matmul --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetrt.benchmarks.stats import cpu_features, machine_description
from unetrt.cli import run_cli
from unetrt.paths import check_folder, write_whole
from unetrt.stream.output_path import check_writable_file

DEFAULT_SIZE = 2048
# Opset 17's IR version (ONNX "Versioning" table), as the bundled models: ONNX Runtime 1.13 and later read it; a newer
# onnx package's default (IR 14 in onnx 1.23) is refused by older ONNX Runtime (1.23, Python 3.10's last; JetPack's).
ONNX_IR_VERSION = 8
PRECISIONS = ("int8", "bf16", "fp32")


def _median_rate(step: Callable[[], object], flops: float, warmup: int, trials: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return flops / float(np.median(times)) / 1e9


def _matmul_onnx(size: int, quantized: bool) -> bytes:
    """A one-MatMul ONNX graph, ``image`` (size x size) times a constant; QDQ on both operands when quantized."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((size, size)).astype(np.float32)
    nodes, initializers = [], []
    if quantized:
        scale = np.abs(weight).max(axis=0) / 127
        initializers += [
            numpy_helper.from_array(np.round(weight / scale).astype(np.int8), "w_q"),
            numpy_helper.from_array(scale.astype(np.float32), "w_scale"),
            numpy_helper.from_array(np.zeros(size, np.int8), "w_zero"),
            numpy_helper.from_array(np.array(4.0 / 127, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["image", "x_scale", "x_zero"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], axis=1),
            helper.make_node("MatMul", ["x_dq", "w_dq"], ["out"]),
        ]
    else:
        initializers.append(numpy_helper.from_array(weight, "w"))
        nodes.append(helper.make_node("MatMul", ["image", "w"], ["out"]))
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [size, size])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [size, size])
    graph = helper.make_graph(nodes, "matmul", [image], [out], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ONNX_IR_VERSION)
    return bytes(model.SerializeToString())


def _openvino_rate(size: int, threads: int, quantized: bool, hint: str, warmup: int, trials: int) -> float:
    from unetrt.backends.openvino import shared_core

    core = shared_core()
    model = core.read_model(_matmul_onnx(size, quantized), b"")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint,
                                                 "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False})
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    return _median_rate(lambda: request.infer({0: x}), 2.0 * size**3, warmup, trials)


def _onnxruntime_rate(size: int, threads: int, integer: bool, warmup: int, trials: int) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from unetrt.backends.onnxruntime import session_options

    rng = np.random.default_rng(0)
    if integer:
        weight = numpy_helper.from_array(rng.integers(-127, 128, (size, size), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["image", "w"], ["out"])
        in_type, out_type, x = TensorProto.UINT8, TensorProto.INT32, rng.integers(0, 256, (size, size), dtype=np.uint8)
    else:
        weight = numpy_helper.from_array(rng.standard_normal((size, size)).astype(np.float32), "w")
        node = helper.make_node("MatMul", ["image", "w"], ["out"])
        in_type = out_type = TensorProto.FLOAT
        x = rng.standard_normal((size, size)).astype(np.float32)
    graph = helper.make_graph([node], "matmul", [helper.make_tensor_value_info("image", in_type, [size, size])],
                              [helper.make_tensor_value_info("out", out_type, [size, size])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ONNX_IR_VERSION)
    session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    return _median_rate(lambda: session.run(None, {"image": x}), 2.0 * size**3, warmup, trials)


def _torch_rate(size: int, threads: int, dtype_name: str, warmup: int, trials: int) -> float:
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return _median_rate(lambda: torch.matmul(a, b), 2.0 * size**3, warmup, trials)


def _native_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX), or its flags are unknown (not x86)."""
    features = cpu_features()
    return features is None or features.get("avx512_bf16", False) or features.get("amx_bf16", False)


def measure_matmul_rates(threads: int, size: int = DEFAULT_SIZE, warmup: int = 2,
                         trials: int = 5) -> dict[str, Any]:
    """GFLOP/s of a dense ``size``-cubed matmul per engine and precision, and the best per precision.

    Args:
        threads: threads every engine gets.
        size: the side of the square matrices.
        warmup: untimed calls first.
        trials: timed calls; the median is kept.

    Returns:
        ``{"size", "threads", "engines": {"openvino-int8": GFLOP/s, ...}, "best": {"int8": (engine, GFLOP/s), ...}}``.

    Raises:
        ValueError: on a size, thread count or trial count below 1, or a negative warm-up.

    Example:
        >>> measure_matmul_rates(2, size=256, trials=1)["best"]["fp32"][1] > 0  # doctest: +SKIP
        True
    """
    if size < 1 or threads < 1:
        raise ValueError(f"size and threads must be >= 1, got {size} and {threads}")
    if trials < 1 or warmup < 0:
        # No timed call leaves a NaN median: every rate would be NaN.
        raise ValueError(f"--trials must be at least 1 and warm-up calls at least 0, got {trials} and {warmup}")
    installed = {name: importlib.util.find_spec(name) is not None for name in ("openvino", "onnx", "torch")}
    probes: dict[str, Callable[[], float]] = {}
    if installed["openvino"] and installed["onnx"]:
        probes["openvino-int8"] = lambda: _openvino_rate(size, threads, True, "f32", warmup, trials)
        probes["openvino-fp32"] = lambda: _openvino_rate(size, threads, False, "f32", warmup, trials)
        from unetrt.backends.openvino import cpu_has_bf16

        if cpu_has_bf16():
            probes["openvino-bf16"] = lambda: _openvino_rate(size, threads, False, "bf16", warmup, trials)
    if installed["onnx"]:
        probes["onnxruntime-int8"] = lambda: _onnxruntime_rate(size, threads, True, warmup, trials)
        probes["onnxruntime-fp32"] = lambda: _onnxruntime_rate(size, threads, False, warmup, trials)
    if installed["torch"]:
        # Elsewhere torch emulates bfloat16 at a fraction of a GFLOP/s (minutes a 2048-cubed call), a ceiling no row
        # is held to (unet-bench skips OpenVINO's BF16 rows on such a CPU).
        if _native_bf16():
            probes["torch-bf16"] = lambda: _torch_rate(size, threads, "bfloat16", warmup, trials)
        probes["torch-fp32"] = lambda: _torch_rate(size, threads, "float32", warmup, trials)
    engines = {name: probe() for name, probe in probes.items()}
    best: dict[str, tuple[str, float]] = {}
    for name, rate in engines.items():
        precision = name.rsplit("-", 1)[1]
        if precision not in best or rate > best[precision][1]:
            best[precision] = (name, rate)
    return {"size": size, "threads": threads, "engines": engines, "best": best}


def format_rates(rates: dict[str, Any]) -> str:
    """The rates as Markdown lines."""
    lines = [f"Dense {rates['size']}x{rates['size']}x{rates['size']} matmul, {rates['threads']} threads "
             "(2 FLOPs per multiply-add):", "", "| engine | GFLOP/s |", "|---|---|"]
    lines += [f"| {name} | {rate:.1f} |" for name, rate in rates["engines"].items()]
    lines += ["", "Best: " + ", ".join(f"{p.upper()} {rate:.1f} GFLOP/s ({engine})"
                                        for p, (engine, rate) in rates["best"].items())]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads of every engine (default 2)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"matrix side (default {DEFAULT_SIZE})")
    parser.add_argument("--trials", type=int, default=5, help="timed calls per engine (default 5)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rates as JSON")
    args = parser.parse_args(argv)

    def run() -> None:
        if args.json is not None:  # before the run, not after it
            check_folder(args.json.parent, "output folder")
            check_writable_file(args.json, f"--json {str(args.json)!r}")
        rates = measure_matmul_rates(args.threads, args.size, trials=args.trials)
        print(format_rates(rates))
        if args.json is not None:
            # The rates are this CPU's: the file names it, as every result file does.
            write_whole(args.json, json.dumps({"machine": machine_description(), **rates}, indent=2) + "\n")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
