"""FramePath on the host device with stand-in networks: the fused finish at the frame's size, batching and errors."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import tiny_info

from unetrt import _tiling, _tiling_emu
from unetrt.device import HostDevice
from unetrt.frame_path import FramePath, network_input
from unetrt.model_info import ModelInfo
from unetrt.tiling import plan_tiles, plan_whole

INFO = tiny_info(num_classes=3, working_size=(32, 24))


def channel_scores(batch: np.ndarray) -> np.ndarray:
    """A 'network' whose three class scores are its three normalised input channels (R, G, B)."""
    return batch.copy()


def test_whole_frame_mask_is_bilinear_argmax_at_the_frame_size() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    path = FramePath(HostDevice(channel_scores), INFO)
    result = path.run([frame], plan_whole(24, 32, "same", 3), probabilities=True)[0]
    small = np.empty((24, 32, 3), np.uint8)
    _tiling_emu.resize_bilinear(frame, small)  # the working-size resize: the GPU kernel's arithmetic on both paths
    small = small[..., ::-1].astype(np.float32)
    scores = (small / 255 - 0.5) / 0.25
    expected = cv2.resize(scores, (120, 90), interpolation=cv2.INTER_LINEAR)
    assert result.mask.shape == (90, 120) and (result.mask == expected.argmax(axis=2)).mean() >= 0.999
    softmax = np.exp(expected - expected.max(axis=2, keepdims=True))
    softmax /= softmax.sum(axis=2, keepdims=True)
    assert np.abs(result.probabilities - softmax.transpose(2, 0, 1)).max() < 1e-4
    assert set(result.timings_ms) == {"preprocess", "inference", "postprocess"}


def test_equal_frames_share_one_network_call_and_keep_their_order() -> None:
    calls: list[tuple[int, ...]] = []

    def record(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return batch.copy()

    # BGR frames that are pure red, green and blue: the stand-in network's classes 0, 1 and 2.
    frames = [np.zeros((24, 32, 3), np.uint8) for _ in range(3)]
    for frame, channel in zip(frames, (2, 1, 0)):
        frame[..., channel] = 255
    results = FramePath(HostDevice(record), INFO).run(frames, plan_whole(24, 32, "same", 3), False, batch_size=3)
    assert calls == [(3, 3, 24, 32)]
    assert [np.unique(r.mask).tolist() for r in results] == [[0], [1], [2]]
    assert not np.shares_memory(results[0].mask, results[1].mask)


def test_tiles_respect_the_batch_size() -> None:
    calls: list[int] = []

    def record(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return batch.copy()

    frame = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    grid = plan_tiles((24, 32), 16, 4, "same", 3)
    FramePath(HostDevice(record), INFO).run([frame, frame], grid, False, batch_size=4)
    assert sum(calls) == 2 * grid.count and max(calls) <= 4


def test_stage_timings_of_a_tiled_frame_add_up_each_chunks_own_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in clock that moves only in the work itself: 1 ms per tile extracted, 10 ms per network call, 100 ms
    per stitch call. The frame's 6 tiles in batches of 4 are 2 chunks, so by hand: preprocess 6 x 1 = 6 ms,
    inference 2 x 10 = 20 ms, postprocess 2 x 100 = 200 ms (one stitch call per chunk: both chunks' tiles are of
    one frame). Spans from the first extraction to the last network call put the second chunk's extraction and
    the first chunk's stitch in 'inference' (122 ms) and left 'preprocess' 4 ms."""
    clock = [0.0]
    monkeypatch.setattr("unetrt.frame_path.time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def network(batch: np.ndarray) -> np.ndarray:
        clock[0] += 0.010
        return batch.copy()

    device = HostDevice(network)
    extract, stitch = device.extract, device.stitch

    def timed_extract(image: np.ndarray, out: np.ndarray, **kwargs: object) -> None:
        clock[0] += 0.001 * out.shape[0]
        extract(image, out, **kwargs)  # type: ignore[arg-type]

    def timed_stitch(*args: object, **kwargs: object) -> None:
        clock[0] += 0.100
        stitch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(device, "extract", timed_extract)
    monkeypatch.setattr(device, "stitch", timed_stitch)
    frame = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    grid = plan_tiles((24, 32), 16, 4, "same", 3)
    assert grid.count == 6
    timings = FramePath(device, INFO).run([frame], grid, False, batch_size=4)[0].timings_ms
    assert timings == pytest.approx({"preprocess": 6.0, "inference": 20.0, "postprocess": 200.0})


def test_bad_calls_raise() -> None:
    path = FramePath(HostDevice(channel_scores), INFO)
    grid = plan_whole(24, 32, "same", 3)
    with pytest.raises(ValueError, match="share size"):
        path.run([np.zeros((24, 32, 3), np.uint8), np.zeros((24, 32, 3), np.uint16)], grid, False)
    with pytest.raises(ValueError, match="re-plan"):
        path.run([np.zeros((24, 32, 3), np.uint8)], plan_whole(20, 32, "same", 3), False)
    with pytest.raises(ValueError, match="batch_size"):
        path.run([np.zeros((24, 32, 3), np.uint8)], grid, False, batch_size=0)
    wrong = FramePath(HostDevice(lambda batch: batch[:, :2]), INFO)
    with pytest.raises(ValueError, match=r"network returned shape .*: the network returns 2 channels but its "
                                         r"description names 3 classes; describe it with one class name per output"):
        wrong.run([np.zeros((24, 32, 3), np.uint8)], grid, False)
    # Valid convolutions described as 'same': 2 px lost on each side of the 24 x 32 input gives 20 x 28 logits.
    smaller = FramePath(HostDevice(lambda batch: batch[:, :, 2:-2, 2:-2]), INFO)
    with pytest.raises(ValueError, match=r"gives 24x32 logits; describe the network with the padding and depth"):
        smaller.run([np.zeros((24, 32, 3), np.uint8)], grid, False)
    with pytest.raises(ValueError, match="blend must be"):
        FramePath(HostDevice(channel_scores), INFO, blend="max")


@pytest.mark.parametrize(("frames", "grid", "probabilities", "batch_size", "message"), [
    ([], None, False, 4, "non-empty list of frames .*got an empty list"),  # was IndexError
    # One array of frames in place of a list: numpy's "truth value ... is ambiguous" named no fix.
    (np.zeros((2, 24, 32, 3), np.uint8), None, False, 4, r"list of frames .*got one array of shape \(2, 24, 32, 3\)"),
    ([[[0]]], None, False, 4, "list of frames .*check_frame.*got a list of 1: list"),  # was AttributeError
    ([np.zeros((24, 32, 3), np.uint8)], (24, 32), False, 4, "grid must be a unetrt.tiling.TileGrid"),  # AttributeError
    ([np.zeros((24, 32, 3), np.uint8)], None, "no", 4, "probabilities must be True or False, got 'no'"),  # was True
    ([np.zeros((24, 32, 3), np.uint8)], None, False, 2.5, "batch_size must be an int >= 1, got 2.5"),  # TypeError
    ([np.zeros((24, 32, 3), np.uint8)], None, False, True, "batch_size must be an int >= 1, got True"),  # TypeError
])
def test_mistaken_calls_of_the_documented_run_are_named(frames: object, grid: object, probabilities: object,
                                                         batch_size: object, message: str) -> None:
    # docs/tiling.md shows FramePath.run to users: its mistakes get a ValueError, not a crash inside the path.
    path = FramePath(HostDevice(channel_scores), INFO)
    with pytest.raises(ValueError, match=message):
        path.run(frames, plan_whole(24, 32, "same", 3) if grid is None else grid,  # type: ignore[arg-type]
                 probabilities, batch_size=batch_size)  # type: ignore[arg-type]


def test_numpy_booleans_choose_the_probabilities_as_python_booleans_do() -> None:
    # A flag read from an array or made by a comparison is numpy's bool: it is True or False all the same.
    path = FramePath(HostDevice(channel_scores), INFO)
    frame, grid = np.zeros((24, 32, 3), np.uint8), plan_whole(24, 32, "same", 3)
    assert path.run([frame], grid, np.bool_(True))[0].probabilities.shape == (3, 24, 32)
    assert path.run([frame], grid, np.bool_(False))[0].probabilities is None


def test_a_same_network_described_as_valid_is_named_with_the_sizes_fed_and_expected() -> None:
    # The description's 'valid' depth-3 geometry (plan_whole) feeds the 24 x 32 frame as a 64 x 72 tile, its
    # context margin around it, and expects 24 x 32 logits; the network keeps its input's size and returns 64 x 72.
    # The hint names the size fed, then the size expected: the other way round it describes a network that shrinks.
    info = tiny_info(num_classes=3, padding="valid", working_size=(32, 24))
    path = FramePath(HostDevice(channel_scores), info)
    with pytest.raises(ValueError, match=r"returned shape \(1, 3, 64, 72\) .*: for 64x72 inputs its description "
                                         r"\(padding 'valid', depth 3\) gives 24x32 logits; describe the network"):
        path.run([np.zeros((24, 32, 3), np.uint8)], plan_whole(24, 32, "valid", 3), False)


def test_network_input_is_the_papers_mirror_padded_normalised_rgb() -> None:
    info = tiny_info(num_classes=3)
    frame = np.random.default_rng(2).integers(0, 256, (10, 13, 3), dtype=np.uint8)
    batch = network_input([frame], info)
    assert batch.shape == (1, 3, 12, 16) and batch.dtype == np.float32
    padded = np.pad(frame[..., ::-1], ((0, 2), (0, 3), (0, 0)), mode="reflect").astype(np.float32)
    np.testing.assert_allclose(batch[0], ((padded / 255 - 0.5) / 0.25).transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="one size"):
        network_input([frame, frame[:5]], info)


def _frame(dtype: type, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_every_frame_dtype_is_resized_by_the_native_kernel(dtype: type) -> None:
    """One working-size resize: a uint16 or float frame went through cv2.resize on the host path (and, resized on
    the host, on the GPU path), beside the native kernel that resized uint8 frames; now every dtype goes through
    resize_bilinear (float64 as float32), the CPU twin of the GPU path's kernel."""
    frame = _frame(dtype, (90, 120, 3))
    kernel_dtype = np.float32 if dtype == np.float64 else dtype
    small = np.empty((24, 32, 3), kernel_dtype)
    _tiling.resize_bilinear(frame.astype(kernel_dtype), small)
    assert np.array_equal(network_input([frame], INFO), network_input([small], INFO))


def test_automatic_kernel_threads_grow_with_the_work() -> None:
    device = HostDevice(channel_scores)
    assert device.threads_for(480 * 360 * 11) == 1  # a camera frame stays on the calling thread
    assert 1 <= device.threads_for(4000 * 3000 * 3) <= len(os.sched_getaffinity(0))
    assert HostDevice(channel_scores, threads=3).threads_for(10) == 3
    with pytest.raises(ValueError, match="threads"):
        HostDevice(channel_scores, threads=-1)


class MeetingNetwork:
    """The channel-scores network, entered by all ``parties`` threads together: each waits at a barrier inside
    the call, so every thread has cut its tiles before any network call reads them (the overlap a race needs)."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.barrier.wait()
        return batch.copy()


@pytest.mark.parametrize("tile", [None, 16], ids=["whole", "tiled"])
def test_calls_from_threads_inside_the_network_together_get_their_own_masks(tile: int | None) -> None:
    threads, rounds = 4, 6
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(threads * rounds)]
    grid = plan_whole(24, 32, "same", 3) if tile is None else plan_tiles((24, 32), tile, 4, "same", 3)
    sequential = FramePath(HostDevice(channel_scores), INFO)
    expected = [sequential.run([frame], grid, True, batch_size=2)[0] for frame in frames]
    path = FramePath(HostDevice(MeetingNetwork(threads)), INFO)
    results: dict[int, object] = {}

    def work(worker: int) -> None:
        for index in range(worker, len(frames), threads):
            results[index] = path.run([frames[index]], grid, True, batch_size=2)[0]

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, worker) for worker in range(threads)]:
            future.result()
    wrong = [i for i, want in enumerate(expected)
             if not (np.array_equal(results[i].mask, want.mask)  # type: ignore[attr-defined]
                     and np.array_equal(results[i].probabilities, want.probabilities))]  # type: ignore[attr-defined]
    assert wrong == []


def test_a_device_that_is_not_concurrent_takes_one_call_at_a_time() -> None:
    inside, most = 0, 0
    lock = threading.Lock()

    class OneStreamDevice(HostDevice):
        concurrent = False

    def counting(batch: np.ndarray) -> np.ndarray:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)  # a window for another thread to enter (the assertion holds however short)
        with lock:
            inside -= 1
        return batch.copy()

    path = FramePath(OneStreamDevice(counting), INFO)
    grid = plan_whole(24, 32, "same", 3)
    frame = np.zeros((24, 32, 3), np.uint8)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: path.run([frame], grid, False), range(16)))
    assert most == 1


def test_release_on_a_device_that_is_not_concurrent_waits_for_the_call_in_flight() -> None:
    """On one CUDA stream, release() frees the cached device buffers and graphs a call in flight on another thread
    is still queueing work on (a backend whose device session takes no lock of its own, ONNX Runtime's); the GPU
    would then read and write freed memory. So release takes the path's turn like a call and waits for it."""
    inside, leave = threading.Event(), threading.Event()
    released_during_call: list[bool] = []

    class OneStreamDevice(HostDevice):
        concurrent = False

        def release(self) -> None:
            released_during_call.append(inside.is_set() and not leave.is_set())

    def held(batch: np.ndarray) -> np.ndarray:
        inside.set()
        assert leave.wait(30)
        return batch.copy()

    path = FramePath(OneStreamDevice(held), INFO)
    frame = np.zeros((24, 32, 3), np.uint8)
    with ThreadPoolExecutor(2) as pool:
        call = pool.submit(path.run, [frame], plan_whole(24, 32, "same", 3), False)
        assert inside.wait(30)
        release = pool.submit(path.release)
        time.sleep(0.1)  # a window for release() to run while the call is inside the network
        leave.set()
        call.result()
        release.result()
    assert released_during_call == [False]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("frame_hw", [(24, 32), (90, 120)], ids=["working size", "resized"])
def test_a_gray_frame_is_the_colour_frame_of_its_value(dtype: type, frame_hw: tuple[int, int]) -> None:
    """A gray frame for a colour model goes to the kernels as one channel (resized as one, replicated by the extract
    kernel): the network input, mask and probabilities are those of the frame repeated to colour, bit for bit."""
    gray = _frame(dtype, frame_hw, seed=3)
    colour = np.dstack([gray] * 3)
    assert np.array_equal(network_input([gray], INFO).view(np.uint32), network_input([colour], INFO).view(np.uint32))
    path = FramePath(HostDevice(channel_scores), INFO)
    want, have = (path.run([f], plan_whole(24, 32, "same", 3), True)[0] for f in (colour, gray))
    assert np.array_equal(want.mask, have.mask)
    assert want.probabilities is not None and have.probabilities is not None
    assert np.array_equal(want.probabilities.view(np.uint32), have.probabilities.view(np.uint32))


GRAY_INFO = tiny_info(num_classes=1, in_channels=1, working_size=(32, 24))


def _old_gray_order(frame: np.ndarray, order: str = "bgr") -> np.ndarray:
    """What the path did with a colour frame for a 1-channel model until this change: cv2.cvtColor on the host
    (float64 as float32), then the gray frame's way."""
    colour = frame.astype(np.float32) if frame.dtype == np.float64 else frame
    return cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY if order == "rgb" else cv2.COLOR_BGR2GRAY)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("frame_hw", [(24, 32), (90, 120)], ids=["working size", "resized"])
def test_a_colour_frame_goes_to_the_device_in_colour_for_a_gray_model(dtype: type, frame_hw: tuple[int, int]) -> None:
    """A colour frame for a 1-channel model reaches the device as the camera gave it (resized in colour; uploaded in
    colour on the GPU path) and the extract kernel takes its gray value. Until this change the path turned it gray
    with cv2.cvtColor on the host first: a second implementation of a step beside the kernels, and on the GPU path
    a host conversion before the upload."""
    prepared: list[tuple[int, ...]] = []

    class Recording(HostDevice):
        def prepare(self, frame: np.ndarray, work_hw: tuple[int, int] | None, slot: int) -> np.ndarray:
            prepared.append(frame.shape)
            return super().prepare(frame, work_hw, slot)

    frame = _frame(dtype, (*frame_hw, 3), seed=4)
    result = FramePath(Recording(channel_scores), GRAY_INFO).run([frame], plan_whole(24, 32, "same", 3), True)[0]
    assert prepared == [(*frame_hw, 3)]
    assert result.mask.shape == frame_hw and result.probabilities is not None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_a_colour_frame_at_the_working_size_gives_cvtcolors_gray_frame(dtype: type, order: str) -> None:
    """Nothing resized: a uint8 or uint16 colour frame gives the network input of cv2.cvtColor's gray frame bit for
    bit (the kernel's fixed point is OpenCV's), a float32 one within 2.4e-7 of the [0, 1] range (OpenCV's float sum
    rounds otherwise); the frame's colour order picks the weights (pure blue: 0.114 * 255 ~ 29, not red's 76)."""
    frame = _frame(dtype, (24, 32, 3), seed=6)
    have = network_input([frame], GRAY_INFO, color_order=order)
    want = network_input([_old_gray_order(frame, order)], GRAY_INFO)
    if np.dtype(dtype).kind == "u":
        assert np.array_equal(have.view(np.uint32), want.view(np.uint32))
    else:
        assert np.abs(have - want).max() <= 2.4e-7 / GRAY_INFO.std[0]
    blue = np.zeros((24, 32, 3), np.uint8)
    blue[..., 0 if order == "bgr" else 2] = 255
    expected = (np.float32(29 / 255) - np.float32(GRAY_INFO.mean[0])) / np.float32(GRAY_INFO.std[0])
    assert np.allclose(network_input([blue], GRAY_INFO, color_order=order), expected, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("frame_hw", [(24, 32), (90, 120)], ids=["working size", "resized"])
def test_a_gray_picture_stored_as_colour_is_its_gray_frame(dtype: type, frame_hw: tuple[int, int]) -> None:
    """Three equal channels (a gray slice read with cv2.imread's default, a gray video through VideoCapture): the
    gray value is the channels' value exactly for every dtype, so a 1-channel model's network input, mask and
    probabilities are the gray frame's, bit for bit, resized or not."""
    gray = _frame(dtype, frame_hw, seed=8)
    colour = np.dstack([gray] * 3)
    assert np.array_equal(network_input([colour], GRAY_INFO).view(np.uint32),
                          network_input([gray], GRAY_INFO).view(np.uint32))
    path = FramePath(HostDevice(channel_scores), GRAY_INFO)
    want, have = (path.run([f], plan_whole(24, 32, "same", 3), True)[0] for f in (gray, colour))
    assert np.array_equal(want.mask, have.mask)
    assert want.probabilities is not None and have.probabilities is not None
    assert np.array_equal(want.probabilities.view(np.uint32), have.probabilities.view(np.uint32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_the_gray_value_after_the_resize_is_within_a_level_of_the_old_order(dtype: type) -> None:
    """Resized, the gray value is taken after the resize (of the colour frame) where cv2.cvtColor came before it
    (of the gray frame); the sample clip's frames at three working sizes then differ from the old order by at most
    one level of the frame's dtype (1/255, 1/65535; float32: 2.4e-7) of the [0, 1] range before normalisation, the
    bound measured on the clip and on noise."""
    from unetrt.benchmarks.bench_stream import read_frames
    from unetrt.bundled import sample_clip

    frames = read_frames(sample_clip(), 3)
    rng = np.random.default_rng(9)
    level = {np.uint8: 1 / 255, np.uint16: 1 / 65535, np.float32: 2.4e-7}[dtype]
    for working_size in ((224, 168), (384, 384), (700, 500)):
        info = replace(GRAY_INFO, working_size=working_size)
        for clip_frame in frames:
            frame = {np.uint8: clip_frame,
                     np.uint16: clip_frame.astype(np.uint16) * 257 + rng.integers(0, 257, clip_frame.shape,
                                                                                  dtype=np.uint16),
                     np.float32: clip_frame.astype(np.float32) / 255}[dtype]
            have, want = network_input([frame], info), network_input([_old_gray_order(frame)], info)
            # + 1e-7: the normalised values themselves round in float32.
            assert np.abs(have.astype(np.float64) - want).max() * info.std[0] <= level + 1e-7


@pytest.mark.parametrize("info", [INFO, tiny_info(num_classes=3)], ids=["at-the-working-size", "no-working-size"])
def test_a_float64_frame_that_needs_no_resize_runs_as_float32(info: ModelInfo) -> None:
    """A float64 frame already at the working size (or for a model without one) skips the resize, which is where
    float64 became float32: it still reaches the kernels as float32, not refused as a dtype they do not take."""
    frame = _frame(np.float64, (24, 32, 3))
    assert np.array_equal(network_input([frame], info), network_input([frame.astype(np.float32)], info))
    path = FramePath(HostDevice(channel_scores), info)
    grid = plan_whole(24, 32, info.padding, info.depth)
    got, want = (path.run([image], grid, True)[0] for image in (frame, frame.astype(np.float32)))
    assert np.array_equal(got.mask, want.mask) and np.array_equal(got.probabilities, want.probabilities)
