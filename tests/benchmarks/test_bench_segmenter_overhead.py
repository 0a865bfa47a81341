"""bench_segmenter_overhead: one short run writes both result files; bad arguments are one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from unetrt.benchmarks import bench_segmenter_overhead
from unetrt.benchmarks.bench_segmenter_overhead import main
from unetrt.benchmarks.stats import LatencyStats, summarize
from unetrt.bundled import MODELS_DIR
from unetrt.geometry import nearest_legal_sizes
from unetrt.segmenter import Segmenter


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


def test_missing_frames_name_the_option_that_gives_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Run from a folder without ../shared/data (an install, another checkout): the line was "image folder
    # '../shared/data/camvid/val' does not exist", naming no option of this script.
    missing = tmp_path / "shared" / "data" / "camvid" / "val"
    assert main(["--images", str(missing), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"error: --images folder {str(missing)!r} does not exist\n"
    few = tmp_path / "few"
    few.mkdir()
    cv2.imwrite(str(few / "a.png"), np.zeros((360, 480, 3), np.uint8))
    assert main(["--images", str(few), "--frames", "2", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == (f"error: --images folder {str(few)!r} has 1 images, fewer than the "
                                       "--frames 2 asked for\n")


def test_trials_alternate_which_runs_first_and_each_keeps_its_own_times(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock: bare always costs 10 ms and segment 11 ms, so any mix-up moves a median off those values.
    order: list[str] = []
    cost = {"bare": 10.0, "segment": 11.0}

    def fake_timed_ms(action: Callable[[], object]) -> float:
        name = str(action())
        order.append(name)
        return cost[name]

    monkeypatch.setattr(bench_segmenter_overhead, "timed_ms", fake_timed_ms)
    pairs = [(lambda: "bare", lambda: "segment")] * 2
    bare, segment = bench_segmenter_overhead.interleaved(pairs, 2)
    assert order == ["bare", "segment", "bare", "segment", "segment", "bare", "segment", "bare"]
    assert (bare.median, segment.median) == (10.0, 11.0)
    assert bare.trial_medians == (10.0, 10.0) and segment.iterations == 4


def test_timed_ms_is_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([3.0, 3.25])  # a quarter of a second between the two readings
    monkeypatch.setattr(bench_segmenter_overhead, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    assert bench_segmenter_overhead.timed_ms(lambda: None) == 250.0


def test_overhead_is_a_share_of_the_bare_network_after_a_warm_up(shared_data: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    segments: list[int] = []

    class CountingSegmenter(Segmenter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            segments.clear()  # the segmenter's own warm-up on opening is not the benchmark's

        def segment(self, *args: Any, **kwargs: Any) -> Any:
            segments.append(1)
            return super().segment(*args, **kwargs)

    warm_segments: list[int] = []

    def fake_interleaved(pairs: Any, trials: int) -> tuple[LatencyStats, LatencyStats]:
        warm_segments.append(len(segments))
        # bare 10 ms, segment 11.5 ms: 1.5 ms over = 15% of bare (13% of segment would be the wrong baseline)
        return summarize([[10.0]]), summarize([[11.5]])

    monkeypatch.setattr(bench_segmenter_overhead, "Segmenter", CountingSegmenter)
    monkeypatch.setattr(bench_segmenter_overhead, "interleaved", fake_interleaved)
    out = tmp_path / "overhead"
    assert main(["--images", str(shared_data / "camvid" / "val"), "--frames", "1", "--trials", "1", "--backend",
                 "onnxruntime", "--precision", "fp32", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert warm_segments == [1]  # the one frame was segmented once before the timing began
    assert result["backend"] == "onnxruntime (CPU, FP32)"
    assert result["overhead_ms"] == pytest.approx(1.5) and result["overhead_pct"] == pytest.approx(15.0)
    assert result["overhead_target_met"] is False
    stages = result["segment_stages_ms"]
    # one frame: the medians are that frame's own stage times
    assert result["host_work_ms"] == pytest.approx(stages["preprocess"] + stages["postprocess"])
    report = out.with_suffix(".md").read_text()
    assert "1.50 ms = 15.0%** of the bare network (target <= 10%: NOT met)" in report
    assert f"{100 * result['host_work_ms'] / 10.0:.1f}% of the bare median" in report
