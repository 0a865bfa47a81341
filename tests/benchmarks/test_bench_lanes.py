"""bench_lanes: one short run writes both result files with the three ways; bad arguments exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetrt.benchmarks.bench_lanes import main
from unetrt.bundled import MODELS_DIR
from unetrt.geometry import nearest_legal_sizes

pytest.importorskip("openvino")


def test_short_run_writes_markdown_and_json(shared_data: Path, tmp_path: Path) -> None:
    assert main(["--frames", str(shared_data / "camvid" / "val"), "--images", "2", "--trials", "1",
                 "--iterations", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "lanes_cpu.json").read_text())
    assert set(result["latency_ms"]) == {"lanes", "one_request", "one_by_one"}
    width, height = json.loads((MODELS_DIR / "camvid.json").read_text())["working_size"]["stated"]
    # the network input is the working size mirror-padded to the next sizes the 5-level U-Net takes
    network_hw = [nearest_legal_sizes(side)[1] for side in (height, width)]
    assert result["lanes"] == 2 and result["network_input_hw"] == network_hw
    assert result["lanes_speedup_over_one_request"] == pytest.approx(
        result["per_image_ms"]["one_request"] / result["per_image_ms"]["lanes"])
    assert "Lanes:" in (tmp_path / "lanes_cpu.md").read_text()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    assert main(["--images", "1", "--out", str(tmp_path)]) == 2
    assert main(["--frames", str(tmp_path), "--out", str(tmp_path)]) == 2
