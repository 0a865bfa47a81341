from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from forked import in_a_fork
from stream_helpers import CollectingSink, FakeSegmenter, camera, count_video_frames, frame_with_index, write_video

from unetrt.segmenter import SegmentationResult
from unetrt.stream import pipeline
from unetrt.stream import writer as writer_module
from unetrt.stream.pipeline import Stream, StreamResult
from unetrt.stream.rosbag import FrameHeader
from unetrt.stream.sources import IterableSource, SourceError
from unetrt.stream.stats import StreamStats
from unetrt.stream.writer import OutputError, ResultWriter

FAST_RECONNECT = (0.01, 0.05)


def test_video_file_every_frame_in_order_and_written(tmp_path: Path) -> None:
    video = write_video(tmp_path / "in.mp4", 15)
    out = tmp_path / "out.mp4"
    results: list[StreamResult] = []
    with Stream(str(video), FakeSegmenter(), str(out), callback=results.append) as stream:
        yielded = [r.index for r in stream]
    summary = stream.summary()
    assert yielded == list(range(15)) == [r.index for r in results]
    assert summary["processed"] == summary["captured"] == summary["written"] == 15
    assert summary["dropped"] == 0 and not summary["live"]
    assert count_video_frames(out) == 15
    first = results[0]
    assert first.mask.shape == (48, 64) and first.mask.dtype == np.uint8
    assert set(first.timings_ms) == {"capture", "preprocess", "inference", "postprocess"}
    assert set(summary["stages_ms"]) >= {"capture", "inference", "visualize", "write"}
    assert summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"] > 0


def test_folder_source_skips_corrupt_image(tmp_path: Path) -> None:
    for index in range(5):
        cv2.imwrite(str(tmp_path / f"{index:02d}.png"), frame_with_index(index * 50))
    (tmp_path / "02b.png").write_bytes(b"\x89PNG but truncated")
    out = tmp_path / "out" / "f_%02d.png"
    summary = Stream(str(tmp_path), FakeSegmenter(), str(out), visualize="overlay,mask").run()
    assert summary["processed"] == 5 and summary["corrupt"] == 1
    written = sorted((tmp_path / "out").glob("f_*.png"))
    assert len(written) == 5
    assert cv2.imread(str(written[0])).shape == (48, 128, 3)  # overlay and mask side by side


def test_generator_with_bad_items_counts_them() -> None:
    items = [frame_with_index(0), "not a frame", np.full((4, 4), 3.0, np.float64), frame_with_index(1)]
    summary = Stream(items, FakeSegmenter()).run()
    assert summary["processed"] == 2 and summary["corrupt"] == 2


@pytest.mark.parametrize(("items", "processed"), [([0, None, 1, 2], 3), ([None, 0], 1)])
def test_none_items_are_skipped_and_counted_like_corrupt_frames(items: list[int | None], processed: int,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    # [f, None, f, f] gave one result and no message; [None, f] said the source was empty.
    frames = [None if item is None else frame_with_index(item) for item in items]
    with caplog.at_level(logging.WARNING):
        summary = Stream(frames, FakeSegmenter()).run()
    assert summary["processed"] == processed and summary["corrupt"] == 1
    assert "skipping a corrupt frame from python frames: item" in caplog.text


def test_a_malformed_frame_among_good_ones_is_named_by_its_place(caplog: pytest.LogCaptureFixture) -> None:
    # The warning named what was wrong (a float frame of 0..255) but not which of the camera loop's frames it was.
    items = [frame_with_index(0), frame_with_index(1), np.full((48, 64, 3), 200.0, np.float32), frame_with_index(3)]
    with caplog.at_level(logging.WARNING):
        summary = Stream(items, FakeSegmenter()).run()
    assert summary["processed"] == 3 and summary["corrupt"] == 1
    lines = [record.getMessage() for record in caplog.records if "corrupt" in record.getMessage()]
    assert len(lines) == 1 and "(frame 2 since it opened): float frames must hold values in [0, 1]" in lines[0], lines


def test_a_live_plain_iterable_that_fails_ends_the_stream_at_once(caplog: pytest.LogCaptureFixture) -> None:
    # A generator cannot be made again: each reopen failed with "can be read only once" and, with the default
    # max_reconnects, the loop waited for ever with a warning every 8 s.
    def camera_loop() -> Iterator[np.ndarray]:
        yield frame_with_index(0)
        yield frame_with_index(1)
        raise RuntimeError("driver hiccup")

    stream = Stream(camera_loop(), FakeSegmenter(), live=True, reconnect_delay=FAST_RECONNECT, max_reconnects=3)
    with caplog.at_level(logging.WARNING), pytest.raises(SourceError) as raised:
        stream.run()
    message = str(raised.value)
    assert "item 2 raised RuntimeError('driver hiccup')" in message, message
    assert "cannot be reopened: pass a function returning a new iterable" in message, message
    assert "reopening" not in caplog.text


def test_only_none_items_is_a_source_with_no_frame_that_decodes() -> None:
    with pytest.raises(SourceError, match=r"has no frame that decodes \(2 corrupt\)"):
        Stream([None, None], FakeSegmenter()).run()


def test_a_camera_slower_than_inference_loses_nothing() -> None:
    # Each frame comes only once the previous one went through the network: inference always keeps up, whatever
    # the load on the machine (a camera paced on the clock catches up in bursts when its thread is starved).
    segmenter = FakeSegmenter()

    def camera_behind_inference() -> Iterator[np.ndarray]:
        for index in range(30):
            deadline = time.monotonic() + 60
            while segmenter.calls < index:
                assert time.monotonic() < deadline, f"frame {index - 1} never reached the network"
                time.sleep(0.001)
            yield frame_with_index(index)

    with Stream(camera_behind_inference, segmenter, live=True) as stream:
        indices = [r.index for r in stream]
    assert indices == list(range(30))
    assert stream.summary()["dropped"] == 0


def test_fast_camera_drops_stale_frames_and_bounds_latency() -> None:
    # Camera at 200 Hz, inference 25 ms: keeping only the newest frame holds latency near one inference.
    with Stream(lambda: camera(100, 200.0), FakeSegmenter(0.025), live=True) as stream:
        indices = [r.index for r in stream]
    live = stream.summary()
    assert live["dropped"] > 0
    assert live["processed"] + live["dropped"] == live["captured"] == 100
    assert indices == sorted(set(indices)) and indices[-1] == 99
    assert live["latency_ms"]["p95"] < 150

    # The same camera through a queue that never drops: latency grows with the backlog.
    stored = Stream(lambda: camera(100, 200.0), FakeSegmenter(0.025), live=False, queue_size=1000).run()
    assert stored["dropped"] == 0 and stored["processed"] == 100
    assert stored["latency_ms"]["p95"] > 5 * live["latency_ms"]["p95"]


class FlakyCamera:
    """A live source that fails after frames 10 and 20 and refuses the first reopen attempt after each."""

    live = True
    fps: float | None = 100.0
    name = "flaky camera"

    def __init__(self, total: int = 30) -> None:
        self.total = total
        self.next_index = 0
        self.opens = 0
        self.failed_at: set[int] = set()
        self.refuse_next_open = False
        self.is_open = False
        self.opens_while_open = 0

    def open(self) -> None:
        self.opens += 1
        self.opens_while_open += self.is_open
        if self.refuse_next_open:
            self.refuse_next_open = False
            raise SourceError("device busy")
        self.is_open = True

    def read(self) -> np.ndarray | None:
        assert self.is_open, "read from a closed source"
        if self.next_index in (10, 20) and self.next_index not in self.failed_at:
            self.failed_at.add(self.next_index)
            self.refuse_next_open = True
            raise SourceError("USB disconnect")
        if self.next_index >= self.total:
            return None
        time.sleep(0.002)
        self.next_index += 1
        return frame_with_index(self.next_index - 1)

    def close(self) -> None:
        self.is_open = False


def test_live_source_failing_twice_is_reopened(caplog: pytest.LogCaptureFixture) -> None:
    source = FlakyCamera()
    with caplog.at_level(logging.WARNING, logger="unetrt.stream"), \
            Stream(source, FakeSegmenter(), reconnect_delay=FAST_RECONNECT) as stream:
        indices = [r.index for r in stream]
    summary = stream.summary()
    assert summary["reconnects"] == 2 and summary["captured"] == 30
    assert indices[-1] == 29 and summary["processed"] + summary["dropped"] == 30
    assert source.opens == 1 + 2 * 2  # first open, then per failure one refused and one good attempt
    assert sum("reopening" in record.getMessage() for record in caplog.records) == 4
    # The failed camera is closed before each attempt: held through the backoff it stays busy for other programs,
    # and a FrameSource's open() need not close what was open.
    assert not source.is_open and source.opens_while_open == 0


def test_a_started_stream_dropped_without_close_releases_its_camera() -> None:
    # Started (say in a node's constructor) and dropped without a loop or close(): nothing stopped the capture
    # thread, which kept the camera open until the process ended.
    source = FlakyCamera(total=10**9)
    stream = Stream(source, FakeSegmenter()).start()
    capture = stream._capture
    assert capture is not None
    del stream
    gc.collect()
    capture.join(60)
    assert not capture.is_alive() and not source.is_open


def test_live_source_that_never_comes_back_ends_with_an_error() -> None:
    opens = []

    def camera_that_dies() -> object:
        opens.append(1)
        if len(opens) > 1:
            raise RuntimeError("no such device")
        return (frame_with_index(i) if i < 3 else None for i in range(4))  # None: a broken frame

    def frames() -> object:
        for frame in camera_that_dies():
            if frame is None:
                raise RuntimeError("cable pulled")
            yield frame

    stream = Stream(IterableSource(lambda: frames(), live=True), FakeSegmenter(),
                    reconnect_delay=FAST_RECONNECT, max_reconnects=3)
    with pytest.raises(SourceError, match="after 3 attempts"), stream:
        list(stream)
    assert len(opens) == 4


def test_stop_is_prompt_and_leaves_no_threads_or_open_sources(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    source = FlakyCamera(total=10**9)
    source.failed_at = {10, 20}
    stream = Stream(source, FakeSegmenter(), str(tmp_path / "o.avi"))
    seen = 0
    with stream:
        for result in stream:
            seen += 1
            if result.index >= 5:
                stopped_at = time.perf_counter()
                stream.stop()
    assert time.perf_counter() - stopped_at < 1.0
    assert not source.is_open
    assert set(threading.enumerate()) == before
    assert count_video_frames(tmp_path / "o.avi") == seen


def test_break_out_of_the_loop_cleans_up() -> None:
    before = set(threading.enumerate())
    segmenter = FakeSegmenter()
    with Stream(lambda: camera(10**6, 1000.0), segmenter, live=True) as stream:
        for result in stream:
            if result.index > 3:
                break
    assert set(threading.enumerate()) == before
    assert not segmenter.closed  # the caller's segmenter stays the caller's
    with pytest.raises(ValueError, match="runs once"):
        list(stream)


def test_a_second_ctrl_c_while_the_stream_winds_down_still_finishes_the_video(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C ends the loop and the stream's own shutdown waits for the workers; a second Ctrl-C there left that
    shutdown counted as done, so the close() after it (unet-stream's, with Ctrl-C ignored) skipped it: the writer was
    never finished and the video was left without its index."""
    from unetrt.stream import inference

    join = inference.InferenceWorkers.join
    interrupts = iter([True])

    def second_ctrl_c(self: inference.InferenceWorkers) -> None:
        if next(interrupts, False):
            raise KeyboardInterrupt  # the impatient user's second Ctrl-C, while the workers finish their frame
        join(self)

    def first_ctrl_c(result: StreamResult) -> None:
        if result.index == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(inference.InferenceWorkers, "join", second_ctrl_c)
    out = tmp_path / "out.mp4"
    stream = Stream([frame_with_index(i) for i in range(20)], FakeSegmenter(), str(out), callback=first_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        for _ in stream:
            pass
    stream.close()
    assert count_video_frames(out) == 4
    assert not [thread.name for thread in threading.enumerate()
                if thread.name in ("unetrt-writer", "unetrt-capture") or thread.name.startswith("unetrt-infer")]


def test_max_frames_loop_and_max_fps(tmp_path: Path) -> None:
    video = write_video(tmp_path / "in.avi", 4)
    looped = Stream(str(video), FakeSegmenter(), loop=2).run()
    assert looped["processed"] == 12
    capped = Stream(str(video), FakeSegmenter(), loop=-1, max_frames=10).run()
    assert capped["processed"] == 10
    started = time.perf_counter()
    paced = Stream(str(video), FakeSegmenter(), max_fps=20.0).run()
    assert paced["processed"] == 4 and time.perf_counter() - started >= 3 / 20.0


def test_input_size_resizes_frames() -> None:
    with Stream([frame_with_index(0, (64, 48))], FakeSegmenter(), input_size=(32, 16)) as stream:
        (result,) = list(stream)
    assert result.frame.shape == (16, 32, 3) and result.mask.shape == (16, 32)


def test_output_failure_is_raised_in_the_consuming_thread(tmp_path: Path) -> None:
    class BrokenSink:
        name = "broken sink"
        wants_stop = False

        def write(self, image: np.ndarray) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    with pytest.raises(OSError, match="disk full"), Stream(lambda: camera(10**6, 1000.0), FakeSegmenter(),
                                                         BrokenSink(), live=True) as stream:
        list(stream)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"alpha": 1.5}, "alpha"), ({"max_fps": 0}, "max_fps"), ({"loop": -2}, "loop"),
    ({"visualize": "edges"}, "visualize mode"), ({"max_frames": 0}, "max_frames"),
    ({"reconnect_delay": (2.0, 1.0)}, "reconnect_delay"),
])
def test_bad_options(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Stream([frame_with_index(0)], FakeSegmenter(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"segmenter": None}, "segmenter must be a model name or path .* got None"),
    ({"segmenter": 3}, "segmenter must be a model name or path .* got 3"),
    ({"output": 3}, "output must be .* got 3"),
    ({"output": ["x"]}, r"output must be .* got \['x'\]"),
    ({"callback": 3}, "callback must be .* got 3"),
    # Without colorize the first write failed, after the output was opened.
    ({"segmenter": SimpleNamespace(segment=lambda frame: None), "output": CollectingSink()},
     r"has no colorize\(result\) method, which drawing the output needs"),
])
def test_a_bad_segmenter_output_or_callback_is_refused_by_the_constructor(kwargs: dict[str, object],
                                                                           words: str) -> None:
    # These failed later: an AttributeError from deep inside, or a TypeError at the first result.
    arguments: dict[str, object] = {"segmenter": FakeSegmenter(), **kwargs}
    with pytest.raises(ValueError, match=words):
        Stream([frame_with_index(0)], **arguments)  # type: ignore[arg-type]


def test_a_segmenter_object_returning_a_bare_mask_is_told_what_to_return() -> None:
    # It failed with an AttributeError about timings_ms, from inside the stream.
    segmenter = SimpleNamespace(segment=lambda frame: frame[..., 0])
    with pytest.raises(ValueError, match=r"segment\(frame\) must return a unetrt SegmentationResult, got ndarray; "
                                         r"wrap a mask as SegmentationResult\(mask, None, 0.0\)"):
        list(Stream([frame_with_index(0)], segmenter))


def test_an_output_path_object_is_an_output(tmp_path: Path) -> None:
    # A pathlib.Path was taken for a sink object and failed with an AttributeError when the stream started.
    summary = Stream([frame_with_index(0)], FakeSegmenter(), tmp_path / "out.avi").run()
    assert summary["written"] == 1 and count_video_frames(tmp_path / "out.avi") == 1


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_soak_2000_frames_memory_stays_flat() -> None:
    # 2,000 160x120 frames through capture, inference, rendering and a sink. Holding on to
    # every frame would grow RSS by > 150 MB; the pipeline must stay within 16 MB of warm-up.
    class CountingSink:
        name = "counter"
        wants_stop = False
        written = 0

        def write(self, image: np.ndarray) -> None:
            self.written += 1

        def close(self) -> None:
            pass

    sink = CountingSink()
    rss: dict[int, int] = {}

    def sample_rss(result: StreamResult) -> None:
        if result.index in (200, 1999):
            rss[result.index] = rss_bytes()

    frames = (frame_with_index(i, (160, 120)) for i in range(2000))
    summary = Stream(frames, FakeSegmenter(), sink, callback=sample_rss).run()
    assert summary["processed"] == 2000 and sink.written == 2000
    assert rss[1999] - rss[200] < 16 * 1024 * 1024


def test_reconnect_attempts_count_in_a_row_so_a_camera_that_fails_now_and_then_keeps_streaming() -> None:
    # Each failure costs two attempts (one refused, one good): with max_reconnects=2 every failure is survived, as
    # the count starts again once a frame comes; counting over the whole run would give up at the second failure.
    source = FlakyCamera()
    with Stream(source, FakeSegmenter(), reconnect_delay=FAST_RECONNECT, max_reconnects=2) as stream:
        indices = [r.index for r in stream]
    assert indices[-1] == 29 and stream.summary()["reconnects"] == 2


def test_a_camera_opened_before_the_output_fails_to_open_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    # display:// without a display is found only at start(), after the camera is open: a robot that retries with
    # another output would find its camera busy.
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    source = FlakyCamera()
    with pytest.raises(ValueError, match="display"), Stream(source, FakeSegmenter(), "display://0") as stream:
        list(stream)
    assert source.opens == 1 and not source.is_open


class HeaderedSource(FlakyCamera):
    """A stored source that, like a ROS 2 bag, gives each frame's message header as ``last_header``."""

    live = False

    def read(self) -> np.ndarray | None:
        frame = super().read()
        self.last_header = FrameHeader(self.next_index, 0, "camera", self.next_index * 10)
        return frame


def test_each_result_carries_the_header_of_its_own_frame() -> None:
    # A robot matches a mask with its other sensors by the input's header (checked here without the rosbags package).
    with Stream(HeaderedSource(total=5), FakeSegmenter()) as stream:
        headers = [(r.index, r.header) for r in stream]
    assert headers == [(i, FrameHeader(i + 1, 0, "camera", (i + 1) * 10)) for i in range(5)]


class StoppingSink(CollectingSink):
    """A sink whose user asks to end after ``after`` pictures (a closed window, 'q' pressed)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def write(self, image: np.ndarray) -> None:
        super().write(image)
        self.wants_stop = len(self.images) >= self.after


def test_a_sink_that_asks_to_stop_ends_the_stream() -> None:
    sink = StoppingSink(after=3)
    summary = Stream([frame_with_index(i) for i in range(100)], FakeSegmenter(), sink).run()
    # Results already past the writer's bounded queue still go out; the other frames are never taken.
    assert 3 <= summary["written"] == len(sink.images) and summary["processed"] < 20


class FailingCloseSink(CollectingSink):
    def close(self) -> None:
        raise OSError("No space left on device: the video's index was not written")


def test_an_output_that_cannot_be_finished_is_an_output_error() -> None:
    with pytest.raises(OutputError, match="index was not written"):
        Stream([frame_with_index(i) for i in range(3)], FakeSegmenter(), FailingCloseSink()).run()


class BlockedSink(CollectingSink):
    """A sink stuck in its first write (a slow SD card, a browser that stopped reading) until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def write(self, image: np.ndarray) -> None:
        self.entered.set()
        assert self.release.wait(60)
        super().write(image)


def test_results_for_a_stuck_sink_wait_in_a_bounded_queue() -> None:
    # An unbounded writer queue grows by a frame and its mask per result for as long as the sink is stuck: the
    # sender must wait once the queue holds queue_size results.
    sink, queue_size = BlockedSink(), 2
    writer = ResultWriter(sink, lambda result: result.frame, StreamStats(), threading.Event(), queue_size)
    writer.start()
    with Stream([frame_with_index(i) for i in range(queue_size + 2)], FakeSegmenter()) as stream:
        results = list(stream)
    writer.send(results[0])
    assert sink.entered.wait(60)  # the first result is in the sink's hands, out of the queue
    def send_the_rest() -> None:
        for result in results[1:]:
            writer.send(result)

    sender = threading.Thread(target=send_the_rest)
    sender.start()
    sender.join(0.5)  # the last of these sends waits for the sink, so the sender must still be there
    blocked = sender.is_alive()
    sink.release.set()
    sender.join()
    writer.finish()
    assert blocked and len(sink.images) == queue_size + 2


class FailsOnSecondSink(CollectingSink):
    """Fails on its second picture only (a full disk that frees up again), then cannot finish its file."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def write(self, image: np.ndarray) -> None:
        self.calls += 1
        if self.calls == 2:
            raise OSError("No space left on device")
        super().write(image)

    def close(self) -> None:
        raise OSError("the video's index was not written")


def test_after_a_failed_write_nothing_more_is_written_and_the_first_failure_is_reported() -> None:
    # A file with a hole where a frame failed would look whole; the close error is only a consequence.
    with Stream([frame_with_index(i) for i in range(4)], FakeSegmenter()) as stream:
        results = list(stream)
    sink, stop = FailsOnSecondSink(), threading.Event()
    writer = ResultWriter(sink, lambda result: result.frame, StreamStats(), stop, len(results))
    for result in results:  # all queued before the thread starts: no send sees the failure
        writer.send(result)
    writer.start()
    writer.finish()
    assert len(sink.images) == 1 and (sink.images[0] == results[0].frame).all()
    assert stop.is_set(), "the failure stops the stream"
    with pytest.raises(OutputError, match="No space left on device"):
        writer.raise_error()


class ResultCollectingSink(CollectingSink):
    """A sink that takes whole results with their pictures, as a ROS 2 bag and the live view do."""

    def __init__(self) -> None:
        super().__init__()
        self.indices: list[int] = []

    def write_result(self, result: StreamResult, image: np.ndarray) -> None:
        self.indices.append(result.index)
        self.images.append(image)


def test_a_result_sink_gets_every_whole_result_with_its_picture() -> None:
    sink = ResultCollectingSink()
    summary = Stream([frame_with_index(i) for i in range(5)], FakeSegmenter(), sink, draw_stats=False).run()
    assert sink.indices == [0, 1, 2, 3, 4] and len(sink.images) == summary["written"] == 5


class ClockedSink(CollectingSink):
    """Takes ``write_s`` seconds of the test's clock to write each picture."""

    def __init__(self, clock: list[float], write_s: float) -> None:
        super().__init__()
        self.clock, self.write_s = clock, write_s

    def write(self, image: np.ndarray) -> None:
        self.clock[0] += self.write_s
        super().write(image)


def test_the_writer_times_each_step_and_the_whole_way_from_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that moves only when told: rendering takes 3 ms, writing 5 ms, and the frame was captured 10 ms
    # before the writer took it, so the output latency is 10 + 3 + 5 = 18 ms.
    with Stream([frame_with_index(0)], FakeSegmenter()) as stream:
        (result,) = list(stream)
    clock = [100.0]
    monkeypatch.setattr(writer_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def render(result: StreamResult) -> np.ndarray:
        clock[0] += 0.003
        return result.frame

    stats = StreamStats()
    writer = ResultWriter(ClockedSink(clock, 0.005), render, stats, threading.Event(), 1)
    writer.start()
    writer.send(dataclasses.replace(result, captured_at=99.99))
    writer.finish()
    writer.raise_error()
    summary = stats.summary()
    assert summary["stages_ms"]["visualize"]["mean"] == pytest.approx(3.0)
    assert summary["stages_ms"]["write"]["mean"] == pytest.approx(5.0)
    assert summary["output_latency_ms"]["mean"] == pytest.approx(18.0)
    assert summary["written"] == 1


def test_each_result_carries_the_live_fps_of_its_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    # The caption, the live view and a caller's loop read the rate from the result; a stream measured at 12.5 FPS
    # (held there, so no clock decides the figure) hands that to every result.
    class SteadyStats(StreamStats):
        def live_fps(self) -> float:
            return 12.5

    monkeypatch.setattr(pipeline, "StreamStats", SteadyStats)
    with Stream([frame_with_index(i) for i in range(3)], FakeSegmenter()) as stream:
        assert [result.fps for result in stream] == [12.5, 12.5, 12.5]


def test_a_stored_video_keeps_its_own_rate_in_the_output(tmp_path: Path) -> None:
    # max_fps paces the processing; the written video still plays at the rate the input was recorded at (12 FPS).
    video = write_video(tmp_path / "in.avi", 3, fps=12.0)
    Stream(str(video), FakeSegmenter(), tmp_path / "out.avi", max_fps=50.0).run()
    capture = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    capture.release()


def test_queue_size_reaches_the_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each result waiting for the output holds a frame and its mask: queue_size bounds what a stuck output holds
    # (the bound itself: test_results_for_a_stuck_sink_wait_in_a_bounded_queue).
    sizes: list[int] = []

    class RecordingWriter(ResultWriter):
        def __init__(self, sink: CollectingSink, render: object, stats: StreamStats, stop: threading.Event,
                     queue_size: int) -> None:
            sizes.append(queue_size)
            super().__init__(sink, render, stats, stop, queue_size)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "ResultWriter", RecordingWriter)
    Stream([frame_with_index(0)], FakeSegmenter(), CollectingSink(), queue_size=3).run()
    assert sizes == [3]


def test_a_second_loop_over_a_running_stream_is_refused_rather_than_splitting_its_frames() -> None:
    # A second loop (another thread, or one in the callback) took frames from the same capture for itself: each
    # loop silently missed the frames the other one got.
    with Stream([frame_with_index(i) for i in range(6)], FakeSegmenter()) as stream:
        first = iter(stream)
        assert next(first).index == 0
        with pytest.raises(ValueError, match="already being iterated"):
            next(iter(stream))
        assert [result.index for result in first] == [1, 2, 3, 4, 5]


def test_a_stream_left_running_at_exit_finishes_its_video(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    # The script keeps an unfinished iterator and never closes the stream. Its threads are daemons, killed at the
    # interpreter's end: the video was left empty, and ONNX Runtime inferring on one of them aborted the process
    # (exit 134) in some runs. Each of the 5 results taken went to the writer before the loop got it, so the
    # finished video holds exactly those 5 frames.
    out = tmp_path / "out.avi"
    script = ("import numpy as np\n"
              "from unetrt import Segmenter\n"
              "from unetrt.stream import Stream\n"
              f"segmenter = Segmenter({str(tiny_model_files['onnx'])!r}, backend='onnxruntime', threads=1)\n"
              "frames = [np.full((48, 64, 3), i, np.uint8) for i in range(40)]\n"
              f"results = iter(Stream(frames, segmenter, {str(out)!r}))\n"
              "for _ in range(5):\n"
              "    next(results)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert count_video_frames(out) == 5


class SignallingSegmenter(FakeSegmenter):
    """Sets ``third_done`` once its third frame is segmented."""

    def __init__(self) -> None:
        super().__init__()
        self.third_done = threading.Event()

    def segment(self, frame: np.ndarray) -> SegmentationResult:
        result = super().segment(frame)
        if self.calls == 3:
            self.third_done.set()
        return result


def test_close_in_the_callback_ends_the_loop_with_the_output() -> None:
    # The worker segments frame 2 while the callback of frame 1 runs; close() joins it, so frame 2's result is
    # waiting. It reached the loop and the callback after close() had finished the output, which never got it.
    segmenter = SignallingSegmenter()
    sink = CollectingSink()
    seen: list[int] = []

    def callback(result: StreamResult) -> None:
        seen.append(result.index)
        if result.index == 1:
            assert segmenter.third_done.wait(60)
            stream.close()

    stream = Stream([frame_with_index(i) for i in range(6)], segmenter, sink, callback=callback)
    assert [result.index for result in stream] == [0, 1]
    assert seen == [0, 1] and len(sink.images) == 2


# Before the fix OpenCV's open blocked the calling thread in native code for good, where no timeout that
# raises can reach it: the thread method ends the test run instead of hanging it.
@pytest.mark.skipif(sys.platform == "win32", reason="named pipes are POSIX")
@pytest.mark.timeout(120, method="thread")
def test_a_named_pipe_that_sends_nothing_does_not_hang_the_stream(tmp_path: Path) -> None:
    # A robot's frame source that stalls: OpenCV's open waited on the pipe in native code on the calling thread,
    # so stop() (what SIGTERM calls) and Ctrl-C were never acted on and `unet-stream` hung until killed.
    pipe = tmp_path / "stalled.avi"
    os.mkfifo(pipe)
    # Held open for writing, sending nothing: the reader's open gets past open(2) and waits for bytes.
    writer = os.open(pipe, os.O_RDWR)
    try:
        stream = Stream(str(pipe), FakeSegmenter())
        stream.stop()
        assert list(stream) == []
        stream.close()
    finally:
        os.close(writer)
    _end_opens_waiting_on(pipe)


def _end_opens_waiting_on(pipe: Path) -> None:
    """End the open given up on, so no thread is left inside OpenCV when the interpreter shuts down.

    OpenCV tries one video library after another, and each opens the pipe again and waits for a writer: every
    writer that comes and goes gives the one waiting now an end of file.
    """
    deadline = time.monotonic() + 60
    opening = [thread for thread in threading.enumerate() if thread.name == "unetrt-source-open"]
    while any(thread.is_alive() for thread in opening) and time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # ENXIO: no reader has the pipe open at this moment
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        for thread in opening:
            thread.join(0.05)
    assert not any(thread.is_alive() for thread in opening)


def test_a_callback_that_draws_on_its_result_leaves_the_output_as_segmented() -> None:
    """Robot code draws on ``result.frame`` or hides classes in ``result.mask`` in its callback; the writer thread
    drew the same arrays later, so the output showed the callback's changes on some frames and not on others."""
    sink = CollectingSink()
    changed: dict[int, threading.Event] = {index: threading.Event() for index in range(4)}

    def callback(result: StreamResult) -> None:
        result.frame[...] = 255
        result.mask[...] = 1
        changed[result.index].set()

    stream = Stream([frame_with_index(i) for i in range(4)], FakeSegmenter(), sink, callback=callback,
                    visualize="overlay", draw_stats=False, legend="off")
    render = stream.renderer.render

    def render_after_the_callback(result: StreamResult, dropped: int) -> np.ndarray:
        assert changed[result.index].wait(60)  # the writer draws only once the callback has changed the result
        return render(result, dropped)

    stream.renderer.render = render_after_the_callback  # type: ignore[method-assign]
    with stream:
        assert len(list(stream)) == 4
    # Frame i is gray level i with class 0 (drawn black): no pixel of the output comes near the callback's 255.
    assert len(sink.images) == 4 and max(int(image.max()) for image in sink.images) < 4


def test_a_malformed_frame_after_a_none_item_is_named_by_its_place_in_the_source(
        caplog: pytest.LogCaptureFixture) -> None:
    # The place is the item's in the source, not its result's: the None item before it has no result.
    items = [frame_with_index(0), None, np.full((48, 64, 3), 200.0, np.float32), frame_with_index(3)]
    with caplog.at_level(logging.WARNING):
        Stream(items, FakeSegmenter()).run()
    lines = [record.getMessage() for record in caplog.records if "float frames" in record.getMessage()]
    assert len(lines) == 1 and "(frame 2 since it opened)" in lines[0], lines


def test_a_malformed_frame_is_named_by_its_place_on_every_loop(caplog: pytest.LogCaptureFixture) -> None:
    # --loop replays the source from its start: its frames are numbered from there again.
    items = [frame_with_index(0), frame_with_index(1), np.full((48, 64, 3), 200.0, np.float32), frame_with_index(3)]
    with caplog.at_level(logging.WARNING):
        summary = Stream(lambda: iter(items), FakeSegmenter(), loop=1).run()
    assert summary["corrupt"] == 2
    lines = [record.getMessage() for record in caplog.records if "float frames" in record.getMessage()]
    assert len(lines) == 2 and all("(frame 2 since it opened)" in line for line in lines), lines


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_stream_used_in_a_forked_child_says_so_and_leaves_the_parents_output_alone(tmp_path: Path) -> None:
    """A loop the parent started, resumed in a fork child (a pre-fork server, multiprocessing's 'fork'), waited for
    ever for results from capture and inference threads the child does not have; a new stream's loop there
    failed on its segmenter, naming a Segmenter. Now both refuse at once, naming the Stream; and close() there
    leaves the parent's output to the parent."""
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(12)]
    out = tmp_path / "out.avi"
    with Stream(frames, FakeSegmenter(), str(out)) as started, Stream(frames, FakeSegmenter()) as unstarted:
        loop = iter(started)
        first = next(loop)
        resumed = in_a_fork(lambda: list(loop))
        fresh = in_a_fork(lambda: list(unstarted))
        closed = in_a_fork(started.close)
        rest = [r.index for r in loop]
    for refused in (resumed, fresh):
        assert isinstance(refused, str)
        assert refused.startswith(f"ValueError: this stream was made in process {os.getpid()}, and this process is "
                                  "a fork of it"), refused
        assert "make a new Stream here" in refused
    assert closed is None
    assert [first.index, *rest] == list(range(12))
    assert count_video_frames(out) == 12


def test_a_stream_refuses_pickling_and_copying_by_name_and_its_results_pickle() -> None:
    """A Stream given to a process pool or a 'spawn' Process is pickled: that failed on an internal lock ("cannot
    pickle '_thread.lock' object"), naming neither the stream nor the fix."""
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(3)]
    with Stream(frames, FakeSegmenter()) as stream:
        for attempt in (lambda: pickle.dumps(stream), lambda: copy.copy(stream)):
            with pytest.raises(TypeError, match=r"^a Stream cannot be pickled or copied: .*make the Stream in the "
                                                r"process that iterates it"):
                attempt()
        result = next(iter(stream))
        again = pickle.loads(pickle.dumps(result))
    assert again.index == result.index == 0
    np.testing.assert_array_equal(again.mask, result.mask)
