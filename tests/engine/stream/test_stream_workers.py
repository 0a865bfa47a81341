"""Streams with several inference workers: capture order, failures, stopping, and how segmenters are opened."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stream_helpers import FakeSegmenter, camera, frame_with_index, write_video

from unetrt.segmenter import SegmentationResult
from unetrt.stream import pipeline, workers
from unetrt.stream.pipeline import Stream


class UnevenSegmenter(FakeSegmenter):
    """Slow on every third frame (told by its pixel value), so workers finish out of capture order."""

    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.fail_on = fail_on

    def segment(self, frame: np.ndarray) -> SegmentationResult:
        index = int(frame[0, 0, 0])
        if index == self.fail_on:
            raise RuntimeError(f"network failed on frame {index}")
        self.delay_s = 0.02 if index % 3 == 0 else 0.0
        return super().segment(frame)


def use_segmenters(monkeypatch: pytest.MonkeyPatch, segmenters: list[Any]) -> list[Any]:
    """Make a stream opened from a model name get these segmenters as its workers."""
    monkeypatch.setattr(pipeline, "open_segmenters", lambda model, options, count: segmenters)
    return segmenters


def test_results_keep_capture_order_and_every_worker_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    segmenters = use_segmenters(monkeypatch, [UnevenSegmenter() for _ in range(3)])
    frames = [frame_with_index(i) for i in range(60)]
    with Stream(frames, "model") as stream:
        results = list(stream)
    assert [r.index for r in results] == list(range(60))
    # Each result carries its own frame's pixels, whichever worker made it.
    assert all(int(r.frame[0, 0, 0]) == r.index for r in results)
    assert sum(s.calls for s in segmenters) == 60 and all(s.calls > 0 for s in segmenters)
    assert all(s.closed for s in segmenters)  # opened by the stream, so closed by it
    assert stream.summary()["runtime"]["workers"] == 3


def test_a_failing_frame_is_raised_at_its_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    before = set(threading.enumerate())
    use_segmenters(monkeypatch, [UnevenSegmenter(fail_on=7) for _ in range(2)])
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="frame 7"), Stream([frame_with_index(i) for i in range(30)],
                                                             "model") as stream:
        seen.extend(r.index for r in stream)
    assert seen == list(range(7))
    assert set(threading.enumerate()) == before


def test_max_frames_and_stop_with_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_segmenters(monkeypatch, [UnevenSegmenter() for _ in range(2)])
    video = write_video(tmp_path / "in.avi", 4)
    assert Stream(str(video), "model", loop=-1, max_frames=10).run()["processed"] == 10

    before = set(threading.enumerate())
    use_segmenters(monkeypatch, [FakeSegmenter(0.005) for _ in range(2)])
    with Stream(lambda: camera(10**6, 500.0), "model", live=True) as stream:
        indices = []
        for result in stream:
            indices.append(result.index)
            if len(indices) == 20:
                break
    assert indices == sorted(set(indices))
    assert set(threading.enumerate()) == before


def test_workers_need_a_model_to_open(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass the model rather than a segmenter object"):
        Stream([frame_with_index(0)], FakeSegmenter(), workers=2)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        workers.open_segmenters("camvid", {}, 0)


def test_cores_are_shared_out_among_workers(monkeypatch: pytest.MonkeyPatch,
                                            tiny_model_files: dict[str, Path]) -> None:
    monkeypatch.setattr(workers.cpu, "usable_cores", lambda: 4)
    model = tiny_model_files["onnx"]
    for options, count, expected in [({}, None, [1, 1, 1, 1]), ({"threads": 2}, None, [2, 2]),
                                     ({}, 2, [2, 2]), ({}, 1, [None])]:
        opened = workers.open_segmenters(model, {"backend": "onnxruntime", **options}, count)
        try:
            assert [s.backend.threads for s in opened] == expected, (options, count)
        finally:
            for segmenter in opened:
                segmenter.close()


def test_a_gpu_model_runs_one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    class GpuSegmenter(FakeSegmenter):
        def __init__(self, model: str, **options: Any) -> None:
            super().__init__()
            self.backend = type("Backend", (), {"device": "cuda"})()

        def warm_up(self) -> None:
            pass

    import unetrt.segmenter

    monkeypatch.setattr(unetrt.segmenter, "Segmenter", GpuSegmenter)
    assert len(workers.open_segmenters("unet.plan", {}, None)) == 1
    with pytest.raises(ValueError, match="runs on cuda"):
        workers.open_segmenters("unet.plan", {}, 2)


def test_two_workers_give_the_same_masks_as_one(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    video = write_video(tmp_path / "in.avi", 12, size=(96, 64))
    masks = {}
    for count in (1, 2):
        with Stream(str(video), str(tiny_model_files["onnx"]), workers=count,
                    segmenter_options={"backend": "onnxruntime"}) as stream:
            masks[count] = [r.mask for r in stream]
    assert len(masks[1]) == len(masks[2]) == 12
    assert all(np.array_equal(a, b) for a, b in zip(masks[1], masks[2], strict=True))
