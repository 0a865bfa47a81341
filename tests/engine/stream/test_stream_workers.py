"""Streams with several inference workers: capture order, failures, stopping, and how segmenters are opened."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from stream_helpers import FakeSegmenter, camera, frame_with_index, write_video

from unetrt.segmenter import SegmentationResult
from unetrt.stream import pipeline, workers
from unetrt.stream.capture import CapturedFrame, EndOfStream, FrameQueue
from unetrt.stream.inference import InferenceWorkers
from unetrt.stream.pipeline import Stream
from unetrt.stream.result import StreamResult
from unetrt.stream.stats import StreamStats


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
    # One worker is what a segmenter object gives anyway: asking for it explicitly is fine.
    assert Stream([frame_with_index(0)], FakeSegmenter(), workers=1).run()["processed"] == 1
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


def test_segmenters_the_stream_opened_are_closed_when_its_set_up_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bad --ignore-class is found only once the models are open (their palette names the classes); the stream must
    # close them there, not leave a GPU engine to the garbage collector.
    segmenters = use_segmenters(monkeypatch, [FakeSegmenter() for _ in range(2)])
    with pytest.raises(ValueError, match="ignore-class"):
        Stream([frame_with_index(0)], "model", ignore_classes=("road",))
    assert all(s.closed for s in segmenters)


class ConcurrencyRecordingQueue(FrameQueue):
    """A stored-source hand-off that records how many workers are inside ``get`` at once. Its first ``get`` waits a
    little for a second caller, so that workers taking frames without the take lock meet there."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._lock = threading.Lock()
        self._inside = 0
        self.most_inside = 0
        self._first = True
        self._second_caller = threading.Event()

    def get(self, timeout: float) -> object:
        with self._lock:
            self._inside += 1
            self.most_inside = max(self.most_inside, self._inside)
            first, self._first = self._first, False
            if self._inside > 1:
                self._second_caller.set()
        try:
            if first:
                self._second_caller.wait(0.2)  # with the take lock nobody comes: the 0.2 s pass once
            return super().get(timeout)
        finally:
            with self._lock:
                self._inside -= 1


def test_workers_take_frames_one_at_a_time_so_each_frame_gets_one_result() -> None:
    # Two workers taking at once could both take a frame under one take number (one result lost, the stream waiting
    # for ever on the other) or take past max_frames.
    handoff = ConcurrencyRecordingQueue(20)
    for index in range(10):
        handoff.put(CapturedFrame(frame_with_index(index), index, 0.0, 0.0, 0.0))
    handoff.finish(EndOfStream())
    stop = threading.Event()
    workers = InferenceWorkers([FakeSegmenter(), FakeSegmenter()], handoff, StreamStats(), stop, None, None)
    workers.start()
    outcomes: list[object] = []
    deadline = time.monotonic() + 60
    while not outcomes or not isinstance(outcomes[-1], EndOfStream):
        # outcome() gives None when woken by another worker's outcome: ask again until this one is in.
        outcome = workers.outcome(len(outcomes), 1.0)
        assert outcome is not None or time.monotonic() < deadline, f"outcome {len(outcomes)} never came"
        if outcome is not None:
            outcomes.append(outcome)
    stop.set()
    workers.join()
    assert handoff.most_inside == 1
    assert [o.index for o in outcomes[:-1] if isinstance(o, StreamResult)] == list(range(10))


class RecordingSegmenter(FakeSegmenter):
    """Stands in for unetrt's Segmenter on a CPU backend: keeps the options it was opened with and its warm-ups."""

    opened: ClassVar[list[RecordingSegmenter]] = []

    def __init__(self, model: str, **options: Any) -> None:
        super().__init__()
        self.options = options
        self.warm_ups = 0
        self.backend = type("Backend", (), {"device": "cpu", "name": "openvino"})()
        RecordingSegmenter.opened.append(self)

    def warm_up(self) -> None:
        self.warm_ups += 1


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[RecordingSegmenter]:
    """Every segmenter open_segmenters opens, on a 2-core machine."""
    import unetrt.segmenter

    monkeypatch.setattr(unetrt.segmenter, "Segmenter", RecordingSegmenter)
    monkeypatch.setattr(workers.cpu, "usable_cores", lambda: 2)
    monkeypatch.setattr(RecordingSegmenter, "opened", [])
    return RecordingSegmenter.opened


def test_the_other_workers_open_on_the_backend_the_first_one_runs_on(recording: list[RecordingSegmenter]) -> None:
    # The first, opened with backend 'auto', runs on OpenVINO: the others go there at once instead of trying the
    # automatic first choice again (a TensorRT build of minutes on a Jetson, failing each time).
    opened = workers.open_segmenters("model", {}, 2)
    assert len(opened) == 2 and all(s.options["backend"] == "openvino" for s in opened)
    assert recording[0].closed and recording[0] not in opened  # it held both cores' threads


def test_warm_up_false_is_kept_and_the_first_is_warmed_once(recording: list[RecordingSegmenter]) -> None:
    workers.open_segmenters("model", {"threads": 1, "warm_up": False}, 2)
    assert [s.warm_ups for s in recording] == [0, 0]
    assert all(s.options["warm_up"] is False for s in recording)
    recording.clear()
    workers.open_segmenters("model", {"threads": 1}, 1)
    assert [s.warm_ups for s in recording] == [1]


def test_up_to_four_workers_per_core(recording: list[RecordingSegmenter]) -> None:
    # 2 cores (the fixture): 8 workers are allowed, 9 are refused before any model is opened.
    assert len(workers.open_segmenters("model", {"threads": 1}, 8)) == 8
    with pytest.raises(ValueError, match="workers=9 is more than 8"):
        workers.open_segmenters("model", {"threads": 1}, 9)
    assert len(recording) == 8
    # More threads asked per worker than there are cores still gives one worker.
    assert workers.auto_worker_count(2, 4) == 1


@pytest.mark.parametrize(("live", "waiting"), [(True, 1), (False, 3)])
def test_a_live_streams_results_wait_for_a_slow_loop_one_at_a_time(monkeypatch: pytest.MonkeyPatch, live: bool,
                                                                   waiting: int) -> None:
    # With one result per worker waiting, a robot's loop taking 200 ms a result got masks of frames 415 ms old with
    # 2 workers (715 ms at worst) where 1 worker gave 224 ms: each result waiting is one more loop period old. A
    # live stream's newer frames wait in the hand-off instead, where stale ones are replaced; a stored one's workers
    # all stay busy.
    use_segmenters(monkeypatch, [FakeSegmenter() for _ in range(3)])
    frames = [frame_with_index(i) for i in range(10)]
    with Stream(lambda: iter(frames), "model", live=live) as stream:
        next(iter(stream))
        assert stream._workers is not None and stream._workers._ordered.ahead == waiting
