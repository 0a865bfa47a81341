"""The matmul-rate probe: every installed engine measures, the best per precision is kept and formatted."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from unetrt.backends import onnxruntime as onnxruntime_backend
from unetrt.benchmarks import bench_matmul
from unetrt.benchmarks.bench import add_matmul_fractions
from unetrt.benchmarks.bench_matmul import format_rates, main, measure_matmul_rates
from unetrt.benchmarks.stats import cpu_features, cpu_model


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
    with pytest.raises(ValueError, match="got 2048 and 0"):
        measure_matmul_rates(0)


def test_every_engine_counts_two_flops_per_multiply_add(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    # Each probe's rate becomes the FLOPs it counts (after one call of its step): 2 x 8^3 = 1024.
    monkeypatch.setattr(bench_matmul, "_median_rate", lambda step, flops, warmup, trials: (step(), flops)[1])
    rates = measure_matmul_rates(1, size=8, warmup=0, trials=1)
    assert rates["engines"] and set(rates["engines"].values()) == {1024.0}


@pytest.mark.parametrize(("features", "probed"), [
    ({"avx512_vnni": False, "avx512_bf16": False, "amx_bf16": False}, False),  # a Zen 3 EPYC
    ({"avx512_vnni": True, "avx512_bf16": True, "amx_bf16": False}, True),
    (None, True),  # no x86 flags (an Orin): not known to lack it
])
def test_torch_bfloat16_is_timed_only_where_the_cpu_has_it(features: dict[str, bool] | None, probed: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Without native BF16 torch emulates it: the probe took 10 minutes of 'unet-bench --matmul' on a Zen 3 EPYC
    # and stated a BF16 ceiling of 0.2 GFLOP/s.
    pytest.importorskip("torch")
    monkeypatch.setattr(bench_matmul, "cpu_features", lambda: features)
    monkeypatch.setattr(bench_matmul, "_median_rate", lambda step, flops, warmup, trials: flops)
    rates = measure_matmul_rates(1, size=8, warmup=0, trials=1)
    assert ("torch-bf16" in rates["engines"]) is probed and "torch-fp32" in rates["engines"]


def test_the_rate_is_gflops_at_the_median_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three timed calls of 1, 2 and 9 s (the clock read before and after each): median 2 s, 4e9 FLOPs / 2 s = 2.
    clock = iter([0.0, 1.0, 1.0, 3.0, 3.0, 12.0])
    monkeypatch.setattr(bench_matmul, "time", SimpleNamespace(perf_counter=clock.__next__))
    assert bench_matmul._median_rate(lambda: None, 4e9, warmup=1, trials=3) == 2.0


def test_onnx_runtime_runs_the_matmul_on_the_threads_given(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    asked: list[int] = []
    real = onnxruntime_backend.session_options
    monkeypatch.setattr(onnxruntime_backend, "session_options", lambda threads: asked.append(threads) or real(threads))
    assert bench_matmul._onnxruntime_rate(8, 3, False, 0, 1) > 0
    assert asked == [3]


def test_the_command_passes_its_trials_on_and_writes_the_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[Any, ...]] = []
    rates = {"size": 8, "threads": 1, "engines": {"torch-fp32": 1.5}, "best": {"fp32": ["torch-fp32", 1.5]}}
    monkeypatch.setattr(bench_matmul, "measure_matmul_rates",
                        lambda threads, size, trials: asked.append((threads, size, trials)) or rates)
    out = tmp_path / "rates.json"
    assert main(["--threads", "1", "--size", "8", "--trials", "3", "--json", str(out)]) == 0
    assert asked == [(1, 8, 3)]
    written = json.loads(out.read_text())
    # The rates are the CPU's: the file names it, with its INT8/BF16 features, as every result file does.
    machine = written.pop("machine")
    assert (machine["cpu_model"], machine["cpu_features"]) == (cpu_model(), cpu_features())
    assert written == rates


def test_no_timed_call_is_one_line_not_a_nan_rate(capsys: pytest.CaptureFixture[str]) -> None:
    # With no timed call the median was NaN: every rate printed as nan, exit code 0.
    assert main(["--size", "8", "--trials", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --trials must be at least 1") and err.count("\n") == 1
    with pytest.raises(ValueError, match="warm-up calls at least 0, got 1 and -1"):
        measure_matmul_rates(1, size=8, warmup=-1, trials=1)


def test_a_json_file_that_cannot_be_written_is_refused_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    measured: list[int] = []
    monkeypatch.setattr(bench_matmul, "measure_matmul_rates", lambda *args, **kwargs: measured.append(1))
    # A folder given as the file was a traceback, after the whole measurement.
    assert main(["--size", "8", "--trials", "1", "--json", str(tmp_path)]) == 2
    assert main(["--size", "8", "--trials", "1", "--json", str(tmp_path / "missing" / "rates.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: cannot write --json {str(tmp_path)!r}: it is an existing folder; give a file name",
                   f"error: output folder {str(tmp_path / 'missing')!r} does not exist"]
    assert measured == []
