"""The matmul-rate probe: every installed engine measures, the best per precision is kept and formatted."""

from __future__ import annotations

import pytest

from unetrt.benchmarks.bench import add_matmul_fractions
from unetrt.benchmarks.bench_matmul import format_rates, main, measure_matmul_rates


def test_rates_per_engine_and_best_per_precision() -> None:
    pytest.importorskip("onnx")
    rates = measure_matmul_rates(1, size=64, warmup=1, trials=1)
    assert {"onnxruntime-int8", "onnxruntime-fp32"} <= set(rates["engines"])
    assert all(rate > 0 for rate in rates["engines"].values())
    for precision, (engine, rate) in rates["best"].items():
        assert engine.endswith(precision)
        assert rate == max(r for name, r in rates["engines"].items() if name.endswith(precision))
    text = format_rates(rates)
    assert "| onnxruntime-int8 |" in text and "Best: " in text


def test_rows_get_the_share_of_their_precision() -> None:
    rates = {"best": {"int8": ("openvino-int8", 400.0), "fp32": ("torch-fp32", 100.0)}}
    rows = [{"precision": "int8", "achieved_tflops": 0.2}, {"precision": "fp32", "achieved_tflops": 0.05},
            {"precision": "bf16", "achieved_tflops": 0.1}, {"precision": "fp32", "achieved_tflops": None}]
    add_matmul_fractions(rows, rates)
    assert [r["fraction_of_matmul_rate"] for r in rows] == [pytest.approx(0.5), pytest.approx(0.5), None, None]


def test_bad_size_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--size", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: size and threads must be >= 1")
