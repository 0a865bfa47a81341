"""bench_soak: a few seconds of the real stream write the JSON, Markdown and plot; the slope is least squares
after the warm-up; bad arguments are one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from unetrt.benchmarks import bench_soak
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


def test_the_sample_at_the_end_of_the_warm_up_counts_and_two_samples_give_no_slope() -> None:
    # 100, 101, 102 MB at 1, 2 and 3 minutes: 1 MB per minute from the sample taken exactly at the warm-up's end.
    samples = [{"t_s": 0.0, "rss_mb": 50.0}] + [{"t_s": 60.0 * i, "rss_mb": 99.0 + i} for i in range(1, 4)]
    assert memory_slope(samples, 60.0) == pytest.approx(1.0)
    assert memory_slope(samples, 61.0) is None  # two samples after the warm-up are too few


class _FakeStream:
    """Stands in for Stream: yields results until stopped; ``made`` keeps the last one's arguments."""

    made: ClassVar[dict[str, Any]] = {}

    def __init__(self, source: str, model: str, output: str | None, **settings: Any) -> None:
        _FakeStream.made = {"source": source, "model": model, "output": output, **settings}
        self.stopped = False

    def __enter__(self) -> _FakeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self) -> None:
        return None

    def __iter__(self) -> Iterator[object]:
        while not self.stopped:
            yield object()

    def stop(self) -> None:
        self.stopped = True

    def summary(self) -> dict[str, Any]:
        return {"processed": 7, "dropped": 2, "runtime": {}, "steady_fps": 1.0}


class _FakeSampler:
    """Stands in for MemorySampler with fixed samples: 50 MB at the start, then 100 and 101 MB after the warm-up."""

    def __init__(self, stream: object, interval: float) -> None:
        self.interval = interval

    def start(self) -> None:
        return None

    def finish(self) -> list[dict[str, float]]:
        return [{"t_s": 0.0, "rss_mb": 50.0}, {"t_s": 0.006, "rss_mb": 100.0}, {"t_s": 0.009, "rss_mb": 101.0}]


def test_the_soak_streams_as_asked_and_judges_its_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_soak, "Stream", _FakeStream)
    monkeypatch.setattr(bench_soak, "MemorySampler", _FakeSampler)
    result = bench_soak.soak("clip.mp4", "camvid", "onnxruntime", "fp32", 1, 3, 0.01, 0.005, 0.25, None, 12.0)
    made = _FakeStream.made
    assert made["segmenter_options"] == {"backend": "onnxruntime", "precision": "fp32", "threads": 1}
    assert (made["loop"], made["live"], made["workers"], made["max_fps"]) == (-1, False, 3, 12.0)
    # two samples after the 5 ms warm-up: no slope, and no slope is not a slope met
    assert result["rss_slope_mb_per_min"] is None and result["targets"]["slope_met"] is False
    assert result["targets"]["no_drops_met"] is False  # 2 frames dropped
    assert result["rss_mb"] == {"first": 50.0, "after_warmup": 100.0, "last": 101.0, "max": 101.0}
    with pytest.raises(ValueError, match="warmup"):
        bench_soak.soak("clip.mp4", "camvid", "auto", "auto", None, 1, 0.01, 0.01, 0.25, None, None)
