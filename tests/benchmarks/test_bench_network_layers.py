"""bench_network_layers: OpenVINO's per-layer profile of the default path's network, summed by layer type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unetrt.benchmarks import bench_network_layers
from unetrt.benchmarks.bench_network_layers import main, markdown, profile_layers
from unetrt.bundled import bundled_model_path
from unetrt.geometry import nearest_legal_sizes
from unetrt.model_file import read_model_file

pytest.importorskip("openvino")


def _unet_macs(base: int, depth: int, height: int, width: int, channels: int, classes: int) -> int:
    """Multiply-adds of a 'same' U-Net: two 3x3 convolutions a level, 2x2 stride-2 up-convolutions, a 1x1 head."""
    widths = [base * 2**level for level in range(depth)]
    pixels = [(height >> level) * (width >> level) for level in range(depth)]
    macs, previous = 0, channels
    for level in range(depth):
        macs += 9 * (previous + widths[level]) * widths[level] * pixels[level]
        previous = widths[level]
    for level in range(depth - 2, -1, -1):
        # Each input pixel of the up-convolution writes a 2x2 block; the first convolution reads the skip as well.
        macs += 4 * widths[level + 1] * widths[level] * pixels[level + 1]
        macs += 9 * 3 * widths[level] * widths[level] * pixels[level]
    return macs + widths[0] * classes * pixels[0]


def test_profile_of_the_bundled_int8_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[dict[str, Any]] = []
    real = bench_network_layers.Segmenter
    monkeypatch.setattr(bench_network_layers, "Segmenter",
                        lambda model, **kwargs: opened.append(kwargs) or real(model, **kwargs))
    out = tmp_path / "layers"
    assert main(["--model", "camvid", "--threads", "2", "--calls", "3", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert opened == [{"backend": "openvino", "threads": 2}]
    # The file and precision the default CPU path runs.
    assert Path(result["file"]).name == "camvid.int8.onnx" and result["precision"] == "int8"
    info = read_model_file(bundled_model_path("camvid", ".onnx")).info
    assert info.working_size is not None
    # the working size mirror-padded to the next sizes the 5-level U-Net takes
    height, width = (nearest_legal_sizes(side)[1] for side in info.working_size[::-1])
    assert result["input_shape"] == [1, 3, height, width]
    layers = {row["layer"] for row in result["rows"]}
    assert {"Convolution", "ConvolutionBackpropData", "MaxPool", "Concat"} <= layers
    # The rows are the per-type medians, largest first; their sum is what the report calls the layers' time.
    times = [row["ms"] for row in result["rows"]]
    assert times == sorted(times, reverse=True) and all(t > 0 for t in times)
    assert result["layers_ms"] == pytest.approx(sum(times))
    assert 0 < result["convolution_ms"] < result["layers_ms"]
    # The graph's count is the U-Net's own at its input (5.11 G multiply-adds at base 24 and 256x192).
    assert result["convolution_macs"] == _unet_macs(info.base, info.depth, height, width, 3, info.num_classes)
    assert result["convolution_gmac_per_s"] == pytest.approx(
        result["convolution_macs"] / result["convolution_ms"] / 1e6)
    # The rate per core per cycle: the 2 threads' cores at the nominal clock.
    if result["nominal_mhz"] is not None:
        assert result["macs_per_core_cycle"] == pytest.approx(
            result["convolution_gmac_per_s"] * 1e9 / (2 * result["nominal_mhz"] * 1e6))
    report = out.with_suffix(".md").read_text()
    assert "| Convolution | " in report and "G multiply-adds" in report


def test_the_network_runs_at_the_working_size_asked(tmp_path: Path) -> None:
    # docs/models.md states camvid's network at 256x192, its working size before 224x168: the command behind that
    # figure must be able to run it there again.
    out = tmp_path / "layers"
    assert main(["--model", "camvid", "--threads", "1", "--calls", "1", "--size", "256x192", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["input_shape"] == [1, 3, 192, 256]
    assert "input 1x3x192x256" in out.with_suffix(".md").read_text()


def test_bad_call_count_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="calls must be at least 1, got 0"):
        profile_layers("camvid", threads=1, calls=0)
    assert main(["--calls", "0", "--out", "unused"]) == 2
    assert "calls must be at least 1" in capsys.readouterr().err


def test_the_report_gives_each_layer_its_share_of_the_layers_time() -> None:
    result = {"machine": {"load_average": None}, "model": "m", "file": "m.onnx", "precision": "int8", "cpu": "CPU",
              "threads": 2, "input_shape": [1, 3, 16, 16], "calls": 5, "wall_ms": 8.0, "layers_ms": 4.0,
              "convolution_ms": 3.0, "convolution_macs": None,
              "rows": [{"layer": "Convolution", "kernel": "k", "ms": 3.0},
                       {"layer": "MaxPool", "kernel": "p", "ms": 1.0}]}
    report = markdown(result)
    # 3 and 1 ms of the layers' 4 ms (not of the 8 ms wall time).
    assert "| Convolution | k | 3.000 | 75.0% |" in report and "| MaxPool | p | 1.000 | 25.0% |" in report
    assert "convolutions 3.00 ms (75% of the layers)" in report
