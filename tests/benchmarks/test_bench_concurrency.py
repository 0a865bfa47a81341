"""bench_concurrency: one short run writes both result files with every way measured; bad arguments are one-line
errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from unetrt.benchmarks import bench_concurrency
from unetrt.benchmarks.bench_concurrency import WAYS, main


def test_short_run_writes_markdown_and_json(tmp_path: Path) -> None:
    assert main(["--callers", "2", "--frames", "2", "--repeats", "1", "--backends", "onnxruntime:int8",
                 "--results-dir", str(tmp_path), "--name", "c"]) == 0
    result = json.loads((tmp_path / "c.json").read_text())
    (row,) = result["rows"]
    assert (row["backend"], row["precision"]) == ("onnxruntime", "int8")
    assert set(row["fps"]) == set(WAYS) and all(v > 0 for v in row["fps"].values())
    assert result["machine"]["cpu_model"] and result["load_average_before"] is not None
    assert "| onnxruntime | int8 |" in (tmp_path / "c.md").read_text()


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--callers", "1", "--results-dir", str(tmp_path)]) == 2
    assert "callers >= 2" in capsys.readouterr().err
    assert main(["--frames", "0", "--results-dir", str(tmp_path)]) == 2
    assert "got callers 2, frames 0, repeats 3" in capsys.readouterr().err
    assert main(["--backends", "tensorrt:fp16", "--results-dir", str(tmp_path)]) == 2
    assert "unknown pair" in capsys.readouterr().err


def test_the_callers_share_the_frames_and_the_rate_counts_each_frame_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[np.ndarray] = []
    frames = [np.full((2, 2), index) for index in range(5)]
    # The clock reads 10 s when the callers are released and 12 s when the last one is done.
    monkeypatch.setattr(bench_concurrency, "time", SimpleNamespace(perf_counter=iter([10.0, 12.0]).__next__))
    fps = bench_concurrency.frames_per_second([SimpleNamespace(segment=seen.append)], 2, frames)
    assert sorted(int(frame[0, 0]) for frame in seen) == [0, 1, 2, 3, 4]
    # 5 frames in 2 s.
    assert fps == 2.5


class _Segmenter:
    """Records how it was opened and whether it was closed."""

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.closed = False

    def segment(self, frame: np.ndarray) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_each_way_runs_on_its_own_segmenters_with_the_inference_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[_Segmenter] = []
    monkeypatch.setattr(bench_concurrency, "Segmenter", lambda model, **kwargs: opened.append(
        _Segmenter(model, **kwargs)) or opened[-1])
    monkeypatch.setattr(bench_concurrency, "read_frames", lambda clip, count: [np.zeros((4, 4, 3), np.uint8)] * count)
    # A rate per (segmenters, callers): 10 fps alone, 15 sharing one segmenter, 18 with one each.
    rates = {(1, 1): 10.0, (1, 2): 15.0, (2, 2): 18.0}
    monkeypatch.setattr(bench_concurrency, "frames_per_second",
                        lambda segmenters, callers, frames: rates[(len(segmenters), callers)])
    result = bench_concurrency.benchmark("camvid", 2, 3, 1, 3, [("onnxruntime", "int8")])
    assert [s.kwargs for s in opened] == [{"backend": "onnxruntime", "precision": "int8", "threads": 3}] * 2
    assert all(s.closed for s in opened)
    (row,) = result["rows"]
    assert row["fps"] == {WAYS[0]: 10.0, WAYS[1]: 15.0, WAYS[2]: 18.0}
    # 15 / 10 and 18 / 10.
    assert (row["shared_speedup"], row["separate_speedup"]) == (1.5, 1.8)
