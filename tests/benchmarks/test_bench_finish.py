"""bench_finish: a short run writes its result files with every path timed; bad options exit 2 in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetrt.benchmarks.bench_finish import main, region_scores


def test_short_run_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--classes", "3", "--scores", "32x24", "--mask", "60x45", "--trials", "2", "--iterations", "2",
                 "--name", "finish_test", "--results-dir", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "finish_test.json").read_text())
    assert set(result["latency_ms"]) == {"fused", "fused_1_thread", "opencv_numpy", "argmax_nearest"}
    assert all(s["median"] > 0 for s in result["latency_ms"].values())
    assert result["fused_vs_opencv_numpy_agreement"] > 0.95
    assert "load average before" in (tmp_path / "finish_test.md").read_text()
    assert "Fused finish" in capsys.readouterr().out


def test_regions_content_is_a_scene_of_class_regions(tmp_path: Path) -> None:
    labels = region_scores(5, 192, 256).argmax(axis=0)
    # Regions, not noise: the class changes between few neighbouring pixels.
    assert 0 < (labels[:, 1:] != labels[:, :-1]).mean() < 0.05
    code = main(["--classes", "3", "--scores", "32x24", "--mask", "60x45", "--trials", "1", "--iterations", "2",
                 "--content", "regions", "--name", "finish_regions", "--results-dir", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "finish_regions.json").read_text())
    assert result["content"] == "regions" and "(regions)" in result["case"]


def test_bad_class_count_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--classes", "300", "--results-dir", str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--classes" in err[0]
