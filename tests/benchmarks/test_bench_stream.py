"""bench_stream: the four ways through the clip, interleaved; the figures are medians against the bare backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from unetrt.benchmarks import bench_stream
from unetrt.segmenter import Segmenter

# Made-up (FPS, CPU ms per frame) of each way in each of three repeats; the figures below are worked from them.
TIMINGS = {"backend": [(100.0, 10.0), (120.0, 12.0), (110.0, 11.0)],
           "segmenter": [(80.0, 20.0), (90.0, 22.0), (100.0, 21.0)],
           "pipeline": [(5.0, 33.0), (6.0, 30.0), (5.5, 36.0)],
           "pipeline_headless": [(70.0, 15.0), (65.0, 16.0), (75.0, 17.0)]}


def test_repeats_are_interleaved_and_the_loss_is_against_the_bare_backend(
        tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []
    segments: list[int] = []
    outputs: list[Path | None] = []
    done: list[tuple[str, int, int]] = []  # (way, frames it did, segment calls before the first timed way)

    class RecordingSegmenter(Segmenter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(kwargs)
            super().__init__(*args, **kwargs)
            segments.clear()  # the segmenter's own warm-up on opening is not the benchmark's

        def segment(self, *args: Any, **kwargs: Any) -> Any:
            segments.append(1)
            return super().segment(*args, **kwargs)

    real_run_pipeline = bench_stream.run_pipeline

    def recording_run_pipeline(clip: Path, segmenter: Segmenter, frames: int, output: Path | None) -> int:
        outputs.append(output)
        return real_run_pipeline(clip, segmenter, frames, output)

    def fake_timed_fps(work: Callable[[], int]) -> tuple[float, float]:
        name = list(TIMINGS)[len(done) % len(TIMINGS)]
        warm = len(segments)
        done.append((name, work(), warm))
        return TIMINGS[name][(len(done) - 1) // len(TIMINGS)]

    monkeypatch.setattr(bench_stream, "Segmenter", RecordingSegmenter)
    monkeypatch.setattr(bench_stream, "run_pipeline", recording_run_pipeline)
    monkeypatch.setattr(bench_stream, "timed_fps", fake_timed_fps)
    assert bench_stream.main(["--model", str(tiny_model_files["onnx"]), "--threads", "1", "--frames", "2",
                              "--repeats", "3", "--results-dir", str(tmp_path), "--name", "s"]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert made == [{"backend": "onnxruntime", "threads": 1}]
    assert done[0][2] == 2  # both frames segmented once (the warm-up) before anything was timed
    assert len(done) == 12 and all(frames == 2 for _, frames, _ in done)  # every way did the 2 frames asked for
    assert outputs[0] is not None and outputs[0].name == "out.mp4" and outputs[1] is None  # encoded, then headless
    assert result["fps_trials"]["pipeline"] == [5.0, 6.0, 5.5]
    # medians: backend 110 FPS and 11 ms, segmenter 90 FPS, pipeline 5.5 FPS and 33 ms, headless 70 FPS
    assert result["fps"] == {"backend": 110.0, "segmenter": 90.0, "pipeline": 5.5, "pipeline_headless": 70.0}
    assert result["pipeline_loss_vs_backend"] == 0.95  # 1 - 5.5 / 110
    assert result["pipeline_loss_vs_segmenter"] == pytest.approx(1 - 5.5 / 90, abs=1e-4)
    assert result["pipeline_cpu_overhead_vs_backend"] == 2.0  # 33 / 11 - 1
    assert result["targets"]["loss_met"] is False and result["targets"]["fps_met"] is False  # 95% > 10%, 5.5 < 10
    assert "Pipeline loss vs bare backend: **95.0%**" in (tmp_path / "s.md").read_text()
