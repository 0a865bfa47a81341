"""bench_segmenter_overhead: one short run writes both result files; bad arguments are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetrt.benchmarks.bench_segmenter_overhead import main
from unetrt.bundled import MODELS_DIR
from unetrt.geometry import nearest_legal_sizes


def test_short_run_writes_markdown_and_json(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "overhead"
    assert main(["--images", str(shared_data / "camvid" / "val"), "--frames", "2", "--trials", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["frames"] == 2 and result["finish_classes"] == 11
    assert result["overhead_ms"] == pytest.approx(result["segment_ms"]["median"] - result["bare_ms"]["median"])
    assert 0 < result["host_work_ms"] < result["segment_ms"]["max"]
    assert result["machine"]["load_average_before"] is not None
    assert "Overhead:" in out.with_suffix(".md").read_text()


def test_default_path_and_where_the_overhead_goes(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    out = tmp_path / "overhead"
    assert main(["--images", str(shared_data / "camvid" / "val"), "--frames", "2", "--trials", "1",
                 "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    # Segmenter's default on a CPU with OpenVINO installed, at the shipped working size.
    assert result["backend"] == "openvino (CPU, INT8)"
    width, height = json.loads((MODELS_DIR / "camvid.json").read_text())["working_size"]["stated"]
    # the network input is the working size mirror-padded to the next sizes the 5-level U-Net takes
    assert result["network_input_hw"] == [nearest_legal_sizes(side)[1] for side in (height, width)]
    assert set(result["kernels_alone_ms"]) == {"resize", "extract", "finish"}
    assert all(value > 0 for value in result["kernels_alone_ms"].values())
    assert result["overhead_beyond_kernels_ms"] == pytest.approx(
        result["overhead_ms"] - sum(result["kernels_alone_ms"].values()))
    assert "--backend auto --precision auto" in out.with_suffix(".md").read_text()


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--images", str(tmp_path), "--frames", "1", "--out", str(tmp_path / "x")]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert main(["--frames", "0", "--out", str(tmp_path / "x")]) == 2
