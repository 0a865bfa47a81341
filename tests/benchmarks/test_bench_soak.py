"""bench_soak: a few seconds of the real stream write the JSON, Markdown and plot; the slope is least squares
after the warm-up; bad arguments are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetrt.benchmarks.bench_soak import main, memory_slope


def test_slope_is_least_squares_after_the_warm_up() -> None:
    # A jump during warm-up is left out; after it memory grows 0.5 MB per minute.
    samples = [{"t_s": 0.0, "rss_mb": 50.0}] + [{"t_s": 60.0 * i, "rss_mb": 100.0 + 0.5 * i} for i in range(1, 8)]
    assert memory_slope(samples, 60.0) == pytest.approx(0.5)
    assert memory_slope(samples, 400.0) is None  # fewer than three samples after the warm-up


def test_short_soak_writes_results(tmp_path: Path) -> None:
    assert main(["--duration", "3", "--warmup", "1", "--interval", "0.25", "--threads", "1", "--output", "none",
                 "--results-dir", str(tmp_path), "--name", "soak"]) == 0
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["frames_processed"] > 0 and result["frames_dropped"] == 0
    assert result["rss_slope_mb_per_min"] is not None and len(result["samples"]) >= 4
    assert result["machine"]["cpu_model"] and result["load_average_before"] is not None
    assert "MB/min" in (tmp_path / "soak.md").read_text()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "soak.png").stat().st_size > 0


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--duration", "5", "--warmup", "10", "--results-dir", str(tmp_path)]) == 2
    assert "warmup (10.0 s) must be shorter than the duration" in capsys.readouterr().err
    assert main(["--duration", "0", "--results-dir", str(tmp_path)]) == 2
