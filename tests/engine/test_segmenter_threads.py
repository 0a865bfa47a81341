"""One Segmenter called from several threads at once gives exactly the masks of sequential calls, on every
installed backend and precision of the bundled model (issue 21: 34-49 of 64 masks were another frame's)."""

from __future__ import annotations

import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path

import cv2
import numpy as np
import pytest
from forked import in_a_fork

from unetrt.bundled import sample_clip
from unetrt.segmenter import Segmenter

THREADS = 4
FRAMES = 16
# Rounds of two frames per thread; every thread starts each round at one barrier, so the calls overlap.
ROUNDS = FRAMES // 2
BACKENDS = [
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    pytest.param("openvino", "fp32", marks=pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                                              reason="OpenVINO is not installed")),
    pytest.param("openvino", "int8", marks=pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                                              reason="OpenVINO is not installed")),
    pytest.param("torch", "fp32", marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                                           reason="torch is not installed")),
]


@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    """16 different frames of the bundled clip (every sixth, so neighbours differ)."""
    capture = cv2.VideoCapture(str(sample_clip()))
    frames: list[np.ndarray] = []
    index = 0
    while len(frames) < FRAMES:
        ok, frame = capture.read()
        assert ok, "the sample clip has too few frames"
        if index % 6 == 0:
            frames.append(frame)
        index += 1
    capture.release()
    return frames


def planned_calls(worker: int) -> list[tuple[int, int]]:
    """The frame pairs a thread segments, one per round: each thread walks all frames from its own starting
    point, so in one round the threads hold different frames."""
    return [((worker * 4 + 2 * round_) % FRAMES, (worker * 4 + 2 * round_ + 1) % FRAMES) for round_ in range(ROUNDS)]


def segment_pair(segmenter: Segmenter, frames: list[np.ndarray], worker: int, pair: tuple[int, int]) -> list[bytes]:
    """Even threads call ``segment`` on each frame of the pair, odd ones ``segment_batch`` on both (one
    network call of batch 2, whose answer may differ in the last bits from two calls of batch 1)."""
    if worker % 2 == 0:
        return [segmenter.segment(frames[i]).mask.tobytes() for i in pair]
    return [r.mask.tobytes() for r in segmenter.segment_batch([frames[i] for i in pair])]


@pytest.mark.parametrize(("backend", "precision"), BACKENDS)
def test_four_threads_on_one_segmenter_get_the_sequential_masks(clip_frames: list[np.ndarray], backend: str,
                                                                precision: str) -> None:
    with Segmenter("camvid", backend=backend, precision=precision, threads=1) as segmenter:
        singles = [segmenter.segment(frame).mask.tobytes() for frame in clip_frames]
        assert len(set(singles)) == FRAMES  # every frame has its own mask, so a swapped one would show
        # The sequential answers, each distinct call once: the even threads' are the singles above.
        batched = {pair: segment_pair(segmenter, clip_frames, 1, pair)
                   for worker in range(1, THREADS, 2) for pair in planned_calls(worker)}
        expected = {(worker, round_): [singles[i] for i in pair] if worker % 2 == 0 else batched[pair]
                    for worker in range(THREADS) for round_, pair in enumerate(planned_calls(worker))}
        barrier = threading.Barrier(THREADS, timeout=60)
        got: dict[tuple[int, int], list[bytes]] = {}

        def work(worker: int) -> None:
            for round_, pair in enumerate(planned_calls(worker)):
                barrier.wait()
                got[(worker, round_)] = segment_pair(segmenter, clip_frames, worker, pair)

        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(work, worker) for worker in range(THREADS)]:
                future.result()
    wrong = sum(a != b for key, masks in expected.items() for a, b in zip(masks, got[key], strict=True))
    assert wrong == 0, f"{wrong} of {THREADS * FRAMES} masks differ from the sequential ones"


def test_close_waits_for_a_call_in_flight_then_refuses(tiny_model_files: dict[str, Path]) -> None:
    segmenter = Segmenter(tiny_model_files["onnx"])
    entered, release = threading.Event(), threading.Event()
    infer = segmenter.backend.infer

    def held_infer(batch: np.ndarray) -> np.ndarray:
        entered.set()
        assert release.wait(60)
        return infer(batch)

    segmenter.backend.infer = held_infer  # type: ignore[method-assign]
    frame = np.zeros((24, 32, 3), np.uint8)
    with ThreadPoolExecutor(2) as pool:
        call = pool.submit(segmenter.segment, frame)
        assert entered.wait(60)
        closing = pool.submit(segmenter.close)
        # close() may not release the backend under the call; it returns only after the call does (a close
        # that did not wait would be done well within the half second).
        with pytest.raises(FuturesTimeout):
            closing.result(timeout=0.5)
        assert not call.done()
        release.set()
        assert call.result().mask.shape == (24, 32)
        closing.result()
    with pytest.raises(ValueError, match="closed"):
        segmenter.segment(frame)


def test_a_second_close_waits_for_the_first_to_release(tiny_model_files: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads closing at once: the frame path's buffers are freed before the backend closes, and the second
    close returns only once that is done (on a GPU, a second close that closed the backend first made the release
    fail and leak the path's device memory and the retained CUDA context)."""
    segmenter = Segmenter(tiny_model_files["onnx"])
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []
    path_release, backend_close = segmenter._path.release, segmenter.backend.close

    def held_release() -> None:
        entered.set()
        assert release.wait(60)
        path_release()
        order.append("path")

    def recorded_close() -> None:
        order.append("backend")
        backend_close()

    monkeypatch.setattr(segmenter._path, "release", held_release)
    monkeypatch.setattr(segmenter.backend, "close", recorded_close)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(segmenter.close)
        assert entered.wait(60)
        second = pool.submit(segmenter.close)
        with pytest.raises(FuturesTimeout):
            second.result(timeout=0.5)
        release.set()
        first.result()
        second.result()
    assert order == ["path", "backend"]


def test_close_from_a_handler_interrupting_a_call_on_its_own_thread_returns_and_releases_after_the_call(
        tiny_model_files: dict[str, Path]) -> None:
    """A signal handler (Ctrl-C, SIGTERM of a robot's launcher) runs on the thread whose segment() it interrupted:
    a close() there that waited for calls in flight waited for its own thread's call, for ever. Here the network
    call itself closes, as such a handler would, on a daemon thread so that a hang fails the test instead of
    stopping the run."""
    segmenter = Segmenter(tiny_model_files["onnx"])
    frame = np.random.default_rng(5).integers(0, 256, (24, 32, 3), np.uint8)
    expected = segmenter.segment(frame).mask
    infer = segmenter.backend.infer
    seen: dict[str, object] = {}

    def interrupted_infer(batch: np.ndarray) -> np.ndarray:
        segmenter.close()
        seen["closed_returned"] = True
        # The release waits for the call: the network still answers within it.
        return infer(batch)

    def call() -> None:
        try:
            seen["mask"] = segmenter.segment(frame).mask
        except BaseException as exc:  # reported to the test thread
            seen["error"] = exc

    segmenter.backend.infer = interrupted_infer  # type: ignore[method-assign]
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "close() called on the thread of the call in flight hung"
    assert "error" not in seen, seen.get("error")
    assert seen["closed_returned"] is True
    np.testing.assert_array_equal(seen["mask"], expected)
    with pytest.raises(ValueError, match="this segmenter is closed"):
        segmenter.segment(frame)
    # Released once the call returned: the backend itself is closed, not only the segmenter marked so.
    with pytest.raises(ValueError, match="backend is closed"):
        infer(np.zeros((1, 3, 32, 32), np.float32))


MIXED_CASES = [
    pytest.param("onnxruntime", {}, id="onnxruntime"),
    pytest.param("onnxruntime", {"tile": 32, "blend": "crop"}, id="onnxruntime-tiled-crop"),
    pytest.param("openvino", {"threads": 2, "tile": 32}, id="openvino-lanes-tiled",
                 marks=pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                          reason="OpenVINO is not installed")),
]


@pytest.mark.parametrize("backend, options", MIXED_CASES)
def test_mixed_calls_from_threads_give_their_sequential_answers(backend: str, options: dict[str, object],
                                                                tiny_model_files: dict[str, Path]) -> None:
    """Frames of different sizes and kinds (uint8, float, grey), single and batched calls, with and without
    probabilities, tiled or whole: a model without a working size changes the frame path's buffer geometry from
    call to call, and each thread must still get exactly the answer of the same call made alone."""
    rng = np.random.default_rng(0)
    frames: list[np.ndarray] = []
    for index, (height, width) in enumerate([(48, 64), (60, 80), (32, 100), (75, 50)] * 2):
        frame = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (0, 0), 3)
        frames.append(frame.astype(np.float32) / 255 if index % 4 == 1 else
                      np.ascontiguousarray(frame[..., 0]) if index % 4 == 3 else frame)
    calls = [(kind, index, probabilities) for index in range(len(frames)) for kind, probabilities in
             (("one", False), ("one", True), ("batch", False))]
    with Segmenter(tiny_model_files["onnx"], backend=backend, **options) as segmenter:  # type: ignore[arg-type]

        def answer(call: tuple[str, int, bool]) -> list[tuple[bytes, bytes | None]]:
            kind, index, probabilities = call
            picked = [frames[index]] if kind == "one" else [frames[(index + k) % len(frames)] for k in (0, 4, 1)]
            results = (segmenter.segment_batch(picked, probabilities=probabilities) if kind == "batch"
                       else [segmenter.segment(picked[0], probabilities=probabilities)])
            return [(r.mask.tobytes(), None if r.probabilities is None else r.probabilities.tobytes())
                    for r in results]

        expected = {call: answer(call) for call in calls}
        start = threading.Barrier(THREADS)

        def work(seed: int) -> int:
            order = np.random.default_rng(seed).permutation(len(calls))
            start.wait()
            return sum(answer(calls[i]) != expected[calls[i]] for i in order)

        with ThreadPoolExecutor(THREADS) as pool:
            wrong = sum(pool.map(work, range(THREADS)))
    assert wrong == 0, f"{wrong} of {THREADS * len(calls)} calls differ from the sequential answers"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_forked_process_is_told_to_open_its_own_segmenter(tiny_model_files: dict[str, Path]) -> None:
    """A call in flight on another thread at the fork holds a lock the child inherits held: the child's calls
    must refuse at once, not wait for ever, and its close() must return."""
    with Segmenter(tiny_model_files["onnx"], threads=1) as segmenter:
        frame = np.zeros((40, 56, 3), np.uint8)
        expected = segmenter.segment(frame).mask
        holding, release = threading.Event(), threading.Event()

        def call_in_flight() -> None:
            with segmenter._calls_done:  # as a segment() call between its bookkeeping steps
                holding.set()
                release.wait(30)

        thread = threading.Thread(target=call_in_flight)
        thread.start()
        assert holding.wait(30)
        try:
            refused = in_a_fork(lambda: segmenter.segment(frame))
            closed = in_a_fork(segmenter.close)
        finally:
            release.set()
            thread.join()
        assert isinstance(refused, str)
        assert refused.startswith(f"ValueError: this segmenter was opened in process {os.getpid()}, and this "
                                  "process is a fork of it"), refused
        assert "open a new Segmenter here" in refused
        assert closed is None
        assert np.array_equal(segmenter.segment(frame).mask, expected)  # the parent's segmenter is untouched


def test_pictures_and_descriptions_from_threads_give_their_sequential_answers(
        tiny_model_files: dict[str, Path]) -> None:
    """What the tests above leave out: ``overlay``, ``colorize``, ``info`` and ``palette`` called from threads
    beside ``segment``, on uint16, float64 and BGRA frames, tiled at a ``working_size`` the model does not state."""
    rng = np.random.default_rng(3)
    frames: list[np.ndarray] = []
    for index, (height, width) in enumerate([(48, 64), (90, 120), (33, 71), (120, 40)]):
        frame = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (0, 0), 3)
        frames.append([frame.astype(np.uint16) * 257, frame.astype(np.float64) / 255,
                       np.dstack([frame, frame[..., :1]]), frame][index])
    with Segmenter(tiny_model_files["onnx"], working_size=(96, 80), tile=48, threads=1) as segmenter:

        def answer(index: int) -> tuple[bytes, ...]:
            result = segmenter.segment(frames[index], probabilities=True)
            assert result.probabilities is not None
            return (result.mask.tobytes(), result.probabilities.tobytes(), segmenter.colorize(result).tobytes(),
                    segmenter.overlay(frames[index], result, 0.3).tobytes(), repr(segmenter.info).encode(),
                    repr(segmenter.palette).encode())

        expected = [answer(index) for index in range(len(frames))]
        start = threading.Barrier(THREADS)

        def work(seed: int) -> int:
            start.wait()
            return sum(answer(i) != expected[i] for i in np.random.default_rng(seed).permutation(len(frames) * 2)
                       % len(frames))

        with ThreadPoolExecutor(THREADS) as pool:
            wrong = sum(pool.map(work, range(THREADS)))
    assert wrong == 0, f"{wrong} of {THREADS * len(frames) * 2} calls differ from the sequential answers"
