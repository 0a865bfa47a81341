from __future__ import annotations

import copy
import multiprocessing
import pickle
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from unetrt.postprocess import BinaryCleanup
from unetrt.segmenter import Segmenter


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (64, 64), (100, 30)])
def test_any_frame_size_gives_mask_of_that_size(tiny_model_files: dict[str, Path], size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    with Segmenter(tiny_model_files["onnx"], probabilities=True) as seg:
        result = seg.segment(frame)
    assert result.mask.shape == size and result.mask.dtype == np.uint8
    assert result.mask.max() < 3
    assert result.probabilities is not None and result.probabilities.shape == (3, *size)
    assert np.allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert np.array_equal(result.probabilities.argmax(axis=0), result.mask)
    assert result.latency_ms > 0 and set(result.timings_ms) == {"preprocess", "inference", "postprocess"}


def test_padding_is_mirrored_and_cropped(tiny_model_files: dict[str, Path]) -> None:
    """A frame of illegal size gives exactly the crop of the network run on its mirror-padded version."""
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (20, 27, 3), dtype=np.uint8)
    # depth 3: sides must be multiples of 4, so 27 columns are mirror-padded to 28
    padded = np.pad(frame, ((0, 0), (0, 1), (0, 0)), mode="reflect")
    assert np.array_equal(padded[:, 27], frame[:, 25])
    with Segmenter(tiny_model_files["onnx"]) as seg:
        small = seg.segment(frame).mask
        big = seg.segment(padded).mask
    assert np.array_equal(small, big[:20, :27])


def test_onnx_and_torch_give_the_same_answer(tiny_model_files: dict[str, Path]) -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(2)]
    with Segmenter(tiny_model_files["onnx"], probabilities=True) as onnx_seg, \
            Segmenter(tiny_model_files["pt"], probabilities=True) as torch_seg:
        for a, b in zip(onnx_seg.segment_batch(frames), torch_seg.segment_batch(frames)):
            assert np.abs(a.probabilities - b.probabilities).max() < 1e-5
            assert (a.mask == b.mask).mean() > 0.999


def test_batch_equals_single_and_keeps_order(tiny_model_files: dict[str, Path]) -> None:
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(32, 32, 3), (17, 40, 3), (32, 32, 3), (9, 9)]]
    with Segmenter(tiny_model_files["onnx"]) as seg:
        batch = seg.segment_batch(frames)
        singles = [seg.segment(f) for f in frames]
    for frame, a, b in zip(frames, batch, singles):
        assert a.mask.shape == frame.shape[:2]
        assert np.array_equal(a.mask, b.mask)


def test_a_batch_of_one_size_in_several_dtypes_equals_single_calls(tiny_model_files: dict[str, Path]) -> None:
    """Frames of one size but another dtype (a uint8 colour camera and a uint16 one on one robot) cannot share a
    network batch, whose scaling is per dtype: each gets the answer it gets alone, in the order given."""
    rng = np.random.default_rng(5)
    frames: list[np.ndarray] = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
                                rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16),
                                rng.random((24, 32, 3)).astype(np.float32),
                                rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)]
    with Segmenter(tiny_model_files["onnx"]) as seg:
        batch = seg.segment_batch(frames)
        singles = [seg.segment(f) for f in frames]
    assert len(batch) == len(frames)
    for a, b in zip(batch, singles, strict=True):
        assert np.array_equal(a.mask, b.mask)


def test_probabilities_asked_per_call_override_the_segmenter_setting(tiny_model_files: dict[str, Path]) -> None:
    frame = np.random.default_rng(6).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    with Segmenter(tiny_model_files["onnx"]) as without, \
            Segmenter(tiny_model_files["onnx"], probabilities=True) as with_:
        asked = without.segment(frame, probabilities=True)
        assert asked.probabilities is not None and asked.probabilities.shape == (3, 20, 28)
        assert np.array_equal(asked.probabilities.argmax(axis=0), asked.mask)
        assert without.segment_batch([frame], probabilities=True)[0].probabilities is not None
        assert with_.segment(frame, probabilities=False).probabilities is None
        assert with_.segment(frame).probabilities is not None


def test_working_size_resizes_and_restores(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from conftest import tiny_info

    from unetrt.export.checkpoint import build_model
    from unetrt.export.onnx_export import export_onnx

    info = tiny_info(working_size=(32, 24))
    torch.manual_seed(0)
    path = export_onnx(build_model(info), info, tmp_path / "w.onnx")
    frame = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    with Segmenter(path, probabilities=True) as seg:
        result = seg.segment(frame)
        calls: list[tuple[int, ...]] = []
        original = seg.backend.infer
        seg.backend.infer = lambda batch: calls.append(batch.shape) or original(batch)  # type: ignore[method-assign]
        seg.segment(frame)
    assert calls == [(1, 3, 24, 32)]
    assert result.mask.shape == (120, 160) and result.probabilities.shape == (3, 120, 160)


def test_warm_up_runs_the_working_size_shape_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from conftest import tiny_info

    from unetrt.backends.onnxruntime import OnnxRuntimeBackend
    from unetrt.export.checkpoint import build_model
    from unetrt.export.onnx_export import export_onnx

    info = tiny_info(working_size=(32, 24))
    torch.manual_seed(0)
    path = export_onnx(build_model(info), info, tmp_path / "w.onnx")
    calls: list[tuple[int, ...]] = []
    original = OnnxRuntimeBackend.infer
    monkeypatch.setattr(OnnxRuntimeBackend, "infer",
                        lambda self, batch: calls.append(batch.shape) or original(self, batch))
    with Segmenter(path):
        assert calls == [(1, 3, 24, 32)]  # the one shape every frame reaches the network at
    with Segmenter(path, warm_up=False):
        assert calls == [(1, 3, 24, 32)]


def test_working_size_option_is_the_same_as_a_model_stating_that_size(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from conftest import tiny_info

    from unetrt.backends.onnxruntime import OnnxRuntimeBackend
    from unetrt.export.checkpoint import build_model
    from unetrt.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = build_model(tiny_info()).eval()
    trained = export_onnx(model, tiny_info(working_size=(32, 24)), tmp_path / "trained.onnx")
    stated = export_onnx(model, tiny_info(working_size=(20, 12)), tmp_path / "stated.onnx")
    shapes: list[tuple[int, ...]] = []
    original = OnnxRuntimeBackend.infer
    monkeypatch.setattr(OnnxRuntimeBackend, "infer",
                        lambda self, batch: shapes.append(batch.shape) or original(self, batch))
    frame = np.random.default_rng(4).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    with Segmenter(trained, working_size=(20, 12), probabilities=True, warm_up=False) as seg:
        overridden = seg.segment(frame)
        # One record of what runs: the segmenter's description is its backend's, at the size asked for.
        assert seg.info.working_size == (20, 12) and seg.backend.info is seg.info
    assert shapes == [(1, 3, 12, 20)]  # 12 rows: a multiple of 4 for depth 3, so no padding
    with Segmenter(stated, probabilities=True, warm_up=False) as seg:
        reference = seg.segment(frame)
    assert overridden.mask.shape == (45, 61)
    assert np.array_equal(overridden.mask, reference.mask)
    assert overridden.probabilities is not None and reference.probabilities is not None
    assert np.array_equal(overridden.probabilities, reference.probabilities)


@pytest.mark.parametrize("size", [(0, 12), (20,), "20x12", (20.0, 12), (True, 12), (20, -1)])
def test_bad_working_size_is_refused_before_the_model_opens(size: object) -> None:
    with pytest.raises(ValueError, match=r"working_size must be \(width, height\) with two positive integers, "
                                         r"e\.g\. \(256, 192\), got " + re.escape(repr(size))):
        Segmenter("no-such-model.onnx", working_size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2", True, 100_000])
def test_bad_thread_counts_are_one_value_error_before_the_model_opens(threads: object) -> None:
    # torch.set_num_threads(100000) ended the process with SIGSEGV; ONNX Runtime took minutes spawning threads.
    with pytest.raises(ValueError, match=r"threads must be an integer from 1 to 1024"):
        Segmenter("no-such-model.onnx", threads=threads)


@pytest.mark.parametrize("device", ["foo", "gpu", "cuda:-1", "CUDA:x"])
def test_an_unknown_device_is_named_as_such(device: str) -> None:
    # It was reported as "backend 'openvino' runs on the CPU", a backend the caller never asked for.
    with pytest.raises(ValueError, match=r"unknown device .* choose one of auto, cpu, cuda, cuda:N"):
        Segmenter("camvid", device=device)


def test_cuda_with_an_ordinal_asks_for_a_gpu_backend_like_cuda() -> None:
    from unetrt.backends import model_choices

    assert [c.backend for c in model_choices("camvid", device="cuda:1")] == \
        [c.backend for c in model_choices("camvid", device="cuda")]


def test_gray_frames_for_color_model(tiny_model_files: dict[str, Path]) -> None:
    frame = np.full((16, 16), 128, np.uint8)
    with Segmenter(tiny_model_files["onnx"]) as seg:
        assert seg.segment(frame).mask.shape == (16, 16)
        assert seg.segment(frame[..., None]).mask.shape == (16, 16)


@pytest.mark.parametrize(("frame", "message"), [
    (np.zeros((8, 8, 3), np.int16), "int16 is not supported"),
    (np.full((8, 8, 3), 1.5, np.float32), r"values in \[0, 1\]"),
    (np.zeros((8, 8, 2), np.uint8), "HxWx3 BGR, HxWx4 BGRA or HxW gray"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    (np.zeros((2, 8, 8, 3), np.uint8), "HxWx3 BGR, HxWx4 BGRA or HxW gray"),
    ([[1, 2], [3, 4]], "numpy array"),
])
def test_bad_frames_raise_value_error(tiny_model_files: dict[str, Path], frame: object, message: str) -> None:
    with Segmenter(tiny_model_files["onnx"]) as seg, pytest.raises(ValueError, match=message):
        seg.segment(frame)  # type: ignore[arg-type]


def test_overlay_and_colorize(tiny_model_files: dict[str, Path]) -> None:
    frame = np.random.default_rng(6).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    with Segmenter(tiny_model_files["onnx"]) as seg:
        result = seg.segment(frame)
        colored = seg.colorize(result)
        rgb = np.asarray(seg.info.colors)[result.mask]
        assert np.array_equal(colored[..., ::-1], rgb)
        assert np.array_equal(seg.overlay(frame, result, alpha=0.0), frame)
        assert np.array_equal(seg.overlay(frame, result, alpha=1.0), colored)
        with pytest.raises(ValueError, match="alpha"):
            seg.overlay(frame, result, alpha=1.5)


def test_closed_backend_refuses(tiny_model_files: dict[str, Path]) -> None:
    seg = Segmenter(tiny_model_files["onnx"])
    seg.close()
    seg.close()
    with pytest.raises(ValueError, match="closed"):
        seg.segment(np.zeros((8, 8, 3), np.uint8))


def test_a_segmenter_refuses_pickling_and_copying_by_name_and_its_results_pickle(
        tiny_model_files: dict[str, Path]) -> None:
    """ProcessPoolExecutor.map(seg.segment, ...) pickles the segmenter: it failed on an internal lock ("cannot
    pickle '_thread.RLock' object"), and copy.copy shared the backend that the copy's close() then closed under
    the original. Results are what crosses processes, so they must pickle."""
    with Segmenter(tiny_model_files["onnx"]) as seg:
        for attempt in (lambda: pickle.dumps(seg), lambda: pickle.dumps(seg.segment), lambda: copy.copy(seg),
                        lambda: copy.deepcopy(seg)):
            with pytest.raises(TypeError, match=r"a Segmenter cannot be pickled or copied.*open one in each process"):
                attempt()
        result = seg.segment(np.random.default_rng(2).integers(0, 256, (24, 32, 3), np.uint8), probabilities=True)
        # Still open: the refused copies released nothing.
        again = pickle.loads(pickle.dumps(result))
        np.testing.assert_array_equal(again.mask, result.mask)
        np.testing.assert_array_equal(again.probabilities, result.probabilities)
        assert seg.segment(np.zeros((8, 8, 3), np.uint8)).mask.shape == (8, 8)


_worker_segmenter: Segmenter | None = None


def _open_worker_segmenter(model: str) -> None:
    """A pool initializer: the segmenter of this worker process, opened in it."""
    global _worker_segmenter
    _worker_segmenter = Segmenter(model, backend="onnxruntime", threads=1)


def _worker_mask(frame: np.ndarray) -> np.ndarray:
    assert _worker_segmenter is not None
    return _worker_segmenter.segment(frame).mask


@pytest.mark.parametrize("method", [m for m in ("spawn", "forkserver") if m in multiprocessing.get_all_start_methods()])
def test_segmenters_opened_in_spawned_workers_answer_as_the_parents(tiny_model_files: dict[str, Path],
                                                                   method: str) -> None:
    """The rule docs/concurrency.md gives for processes: one segmenter per worker, opened in the pool's initializer,
    two workers opening at once; every mask equals the parent's, bit for bit."""
    frames = [np.random.default_rng(seed).integers(0, 256, (24, 32, 3), np.uint8) for seed in range(4)]
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime", threads=1) as seg:
        expected = [seg.segment(frame).mask for frame in frames]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method), initializer=_open_worker_segmenter,
                             initargs=(str(tiny_model_files["onnx"]),)) as pool:
        masks = list(pool.map(_worker_mask, frames, timeout=120))  # a worker that hangs fails the test
    for mask, wanted in zip(masks, expected, strict=True):
        np.testing.assert_array_equal(mask, wanted)


def test_every_call_after_close_is_refused_by_the_segmenter_itself(tiny_model_files: dict[str, Path]) -> None:
    """The segmenter refuses before its frame path runs: close() freed the path's buffers (device memory on the
    GPU path), so relying on the backend's own 'closed' check would run the extract kernel on freed memory first."""
    seg = Segmenter(tiny_model_files["onnx"])
    seg.close()
    frame = np.zeros((8, 8, 3), np.uint8)
    for call in (lambda: seg.segment(frame), lambda: seg.segment_batch([frame]), lambda: seg.segment_checked(frame)):
        with pytest.raises(ValueError, match=r"^this segmenter is closed; open a new one$"):
            call()


def test_uint16_and_float_frames_agree_with_the_uint8_frame(tiny_model_files: dict[str, Path]) -> None:
    """The same picture as uint8, full-range uint16 and float in [0, 1] gives the same mask (before: refused
    with advice to astype(np.uint8), which wrapped the values)."""
    frame = np.random.default_rng(7).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    variants = [frame.astype(np.uint16) * 257, (frame / 255).astype(np.float32), frame / 255.0]
    with Segmenter(tiny_model_files["onnx"], probabilities=True) as seg:
        reference = seg.segment(frame)
        for variant in variants:
            result = seg.segment(variant)
            assert (result.mask == reference.mask).mean() >= 0.999, variant.dtype
            assert np.abs(result.probabilities - reference.probabilities).max() < 1e-5


def test_bundled_model_uint16_frame_agrees_through_the_working_size(shared_data: Path) -> None:
    """camvid resizes 480x360 to its working size first: a 16-bit copy of a val frame gives the 8-bit frame's mask."""
    import cv2

    from unetrt.datasets import list_images

    frame = cv2.imread(str(list_images(shared_data / "camvid" / "val")[0]))
    # FP32: INT8 turns the last-bit differences of a 16-bit resize into a few more flipped pixels.
    with Segmenter("camvid", precision="fp32") as seg:
        reference = seg.segment(frame).mask
        deep = seg.segment(frame.astype(np.uint16) * 257).mask
        unit = seg.segment(frame.astype(np.float32) / 255).mask
    assert (deep == reference).mean() >= 0.995 and (unit == reference).mean() >= 0.995


def test_mask_is_the_argmax_of_bilinearly_resized_scores(shared_data: Path) -> None:
    """Not argmax-then-nearest: the mask at the frame's size is the argmax of the scores resized bilinearly."""
    import cv2

    from unetrt.datasets import list_images
    from unetrt.frame_path import network_input
    from unetrt.tiling import plan_whole

    frame = cv2.imread(str(list_images(shared_data / "camvid" / "val")[3]))
    with Segmenter("camvid", probabilities=True) as seg:
        result = seg.segment(frame)
        logits = seg.backend.infer(network_input([frame], seg.info))[0]
    # the working-size image's own scores: the network input is it mirror-padded to sizes the U-Net takes
    assert seg.info.working_size is not None
    width, height = seg.info.working_size
    origin_y, origin_x = plan_whole(height, width, seg.info.padding, seg.info.depth).output_origin
    logits = logits[:, origin_y : origin_y + height, origin_x : origin_x + width]
    resized = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (480, 360), interpolation=cv2.INTER_LINEAR)
    assert (result.mask == resized.argmax(axis=2)).mean() >= 0.999
    nearest = cv2.resize(logits.argmax(axis=0).astype(np.uint8), (480, 360), interpolation=cv2.INTER_NEAREST)
    assert (result.mask != nearest).mean() > 0.001  # the old blocky edges are gone
    assert np.allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)


def test_bgra_frames_are_segmented_like_bgr(tiny_model_files: dict[str, Path]) -> None:
    frame = np.random.default_rng(8).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    bgra = np.dstack([frame, np.full((20, 24), 9, np.uint8)])
    with Segmenter(tiny_model_files["onnx"]) as seg:
        assert np.array_equal(seg.segment(bgra).mask, seg.segment(frame).mask)


def test_cuda_device_path_needs_a_cuda_backend(tiny_model_files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="device_path 'cuda' needs a backend running on CUDA"):
        Segmenter(tiny_model_files["onnx"], device="cpu", device_path="cuda")
    with pytest.raises(ValueError, match="device_path must be one of"):
        Segmenter(tiny_model_files["onnx"], device_path="gpu")
    with Segmenter(tiny_model_files["onnx"], device="cpu") as seg:
        assert seg.device.name == "cpu"


def test_segment_none_says_the_read_probably_failed(tiny_model_files: dict[str, Path]) -> None:
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime") as seg, \
            pytest.raises(ValueError, match=r"^frame is None, not an image: cv2.imread returns None when it "
                                            r"cannot read a file"):
        seg.segment(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("swapped", [False, True], ids=["opened", "swapped-in"])
def test_a_segmenter_dropped_without_close_closes_the_backend_it_runs_on(tiny_model_files: dict[str, Path],
                                                                         swapped: bool) -> None:
    from unetrt.backends import open_backend
    from unetrt.dropped import wait_for_releases

    seg = Segmenter(tiny_model_files["onnx"], backend="onnxruntime")
    if swapped:  # as the benchmarks' CUDA-graph variant does
        seg.backend.close()
        seg.backend = open_backend(tiny_model_files["onnx"], "onnxruntime")
    backend, closed = seg.backend, []
    close = backend.close
    backend.close = lambda: closed.append(True) or close()  # type: ignore[method-assign]
    mask = seg.segment(np.zeros((20, 30, 3), np.uint8)).mask
    del seg
    assert wait_for_releases(10)
    assert closed == [True] and mask.shape == (20, 30)


def test_float64_frames_convert_channels_as_float32_frames_do(tiny_model_files: dict[str, Path]) -> None:
    """OpenCV's colour conversions take no float64: a gray float64 frame for a colour model was a cv2.error."""
    rng = np.random.default_rng(0)
    gray = rng.random((40, 50))
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime", probabilities=True) as seg:
        assert np.array_equal(seg.segment(gray).probabilities, seg.segment(gray.astype(np.float32)).probabilities)
    color = rng.random((40, 50, 3))
    with Segmenter("isbi", backend="onnxruntime", precision="fp32", cleanup=None, probabilities=True) as seg:
        assert np.allclose(seg.segment(color).probabilities, seg.segment(color.astype(np.float32)).probabilities,
                           atol=1e-6)


@pytest.mark.parametrize(("frames", "message"), [
    (np.zeros((9, 12, 3), np.uint8), r"takes a list of frames, got one array of shape \(9, 12, 3\); use segment"),
    (None, "takes a list of frames, got NoneType"),
    (3, "takes a list of frames, got int"),
])
def test_segment_batch_of_something_other_than_frames_is_refused(tiny_model_files: dict[str, Path], frames: object,
                                                                  message: str) -> None:
    """One frame passed as the batch was segmented row by row, each row a gray image."""
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime") as seg, pytest.raises(ValueError, match=message):
        seg.segment_batch(frames)  # type: ignore[arg-type]


def test_segment_batch_takes_any_sequence_or_iterable_of_frames(tiny_model_files: dict[str, Path]) -> None:
    frame = np.zeros((9, 12, 3), np.uint8)
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime") as seg:
        assert len(seg.segment_batch((frame, frame))) == 2
        assert len(seg.segment_batch(f for f in [frame])) == 1  # type: ignore[arg-type]


def test_a_single_frame_error_does_not_name_an_index(tiny_model_files: dict[str, Path]) -> None:
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime") as seg:
        with pytest.raises(ValueError, match=r"^frame dtype >f4 has the other byte order than this machine's; convert "
                                             r"with frame.astype\(frame.dtype.newbyteorder\('='\)\)$"):
            seg.segment(np.zeros((9, 12, 3), ">f4"))
        with pytest.raises(ValueError, match=r"^frame 1: frame dtype >u2 has the other byte order"):
            seg.segment_batch([np.zeros((9, 12), np.uint16), np.zeros((9, 12), ">u2")])


def test_a_frame_wider_than_the_kernels_take_is_refused_before_the_network_runs(tiny_model_files: dict[str, Path]
                                                                                ) -> None:
    from unetrt.preprocessing import MAX_FRAME_SIDE

    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime") as seg:
        seg.backend.infer = None  # type: ignore[assignment, method-assign]  # the network must not be reached
        with pytest.raises(ValueError, match=r"frame is 8388609x1 px; sides up to 8388608 px are supported: resize"):
            seg.segment(np.zeros((1, MAX_FRAME_SIDE + 1), np.uint8))


@pytest.mark.parametrize(("options", "message"), [
    ({"tile": 32.0}, r"tile must be a side in pixels or a \(height, width\) pair of them, e.g. 256 or \(192, 256\), "
                     r"got 32.0"),
    ({"tile": (32, "a")}, r"tile must be .*, got \(32, 'a'\)"),
    ({"tile": True}, "tile must be .*, got True"),
    ({"overlap": "a"}, r"overlap must be a whole number of pixels >= 0 \(or None for the default\), got 'a'"),
    ({"overlap": 1.5}, "overlap must be a whole number of pixels >= 0 .*, got 1.5"),
    ({"overlap": -1}, "overlap must be a whole number of pixels >= 0 .*, got -1"),
    ({"tile": 32, "overlap": 100}, r"tile 32 with overlap 100 does not fit this model: overlap must be in \[0, 32\)"),
    ({"probabilities": "no"}, "probabilities must be True or False, got 'no'"),
    ({"threads": 1, "lanes": 2, "fast": True}, r"unknown option\(s\) 'fast', 'lanes' for onnxruntime; the options "
                                               "are threads"),
])
def test_options_of_the_wrong_kind_are_refused_at_open(tiny_model_files: dict[str, Path], options: dict[str, object],
                                                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Segmenter(tiny_model_files["onnx"], backend="onnxruntime", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", [None, 3, ["camvid"]])
def test_a_model_that_is_no_path_or_name_is_refused(model: object) -> None:
    with pytest.raises(ValueError, match=r"model must be a model file's path or a bundled model's name such as "
                                         r"'camvid', got "):
        Segmenter(model)  # type: ignore[arg-type]


def test_numpy_integer_tiles_are_tiles(tiny_model_files: dict[str, Path]) -> None:
    """A tile from numpy arithmetic opened and then failed at the first frame."""
    frame = np.zeros((70, 90, 3), np.uint8)
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime", tile=np.int64(32), overlap=np.int64(8)) as seg, \
            Segmenter(tiny_model_files["onnx"], backend="onnxruntime", tile=32, overlap=8) as plain:
        assert seg.tile == (32, 32) and np.array_equal(seg.segment(frame).mask, plain.segment(frame).mask)


def test_probabilities_per_call_must_be_a_bool(tiny_model_files: dict[str, Path]) -> None:
    """A string such as 'no' counted as True."""
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime") as seg, \
            pytest.raises(ValueError, match="probabilities must be True or False, got 'no'"):
        seg.segment(np.zeros((9, 12, 3), np.uint8), probabilities="no")  # type: ignore[arg-type]


def test_overlay_draws_every_frame_segment_takes_as_8_bit_bgr(tiny_model_files: dict[str, Path]) -> None:
    """A uint16 frame came back as uint16 with the colours invisible, a float one far outside [0, 1], a BGRA one
    was a cv2.error."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (30, 40, 3), np.uint8)
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime") as seg:
        result = seg.segment(frame)
        expected = seg.overlay(frame, result)
        assert expected.dtype == np.uint8 and expected.shape == (30, 40, 3)
        for same in (frame.astype(np.uint16) * 257, frame / 255.0, (frame / 255.0).astype(np.float32),
                     np.dstack([frame, np.full((30, 40), 255, np.uint8)])):
            drawn = seg.overlay(same, result)
            assert drawn.dtype == np.uint8 and np.abs(drawn.astype(int) - expected).max() <= 1
        gray = frame[..., 0]
        assert np.array_equal(seg.overlay(gray, result), seg.overlay(np.dstack([gray] * 3), result))


@pytest.mark.parametrize(("call", "message"), [
    (lambda seg, frame, result: seg.overlay(frame, result, alpha="0.5"), r"alpha must be a number in \[0, 1\] .*"
                                                                         "got '0.5'"),
    (lambda seg, frame, result: seg.overlay(frame, result, alpha=None), r"alpha must be .*got None"),
    (lambda seg, frame, result: seg.overlay(frame, result, alpha=1.5), r"alpha must be .*got 1.5"),
    (lambda seg, frame, result: seg.overlay(None, result), "frame is None, not an image"),
    (lambda seg, frame, result: seg.overlay(frame.astype(bool), result), "frame dtype bool is not supported"),
    (lambda seg, frame, result: seg.overlay(frame, result.mask), "takes the SegmentationResult that segment"),
    (lambda seg, frame, result: seg.colorize(result.mask), r"colorize takes the SegmentationResult that segment\(\) "
                                                           "returned, got ndarray"),
    (lambda seg, frame, result: seg.colorize(None), "colorize takes the SegmentationResult .* got NoneType"),
    # The result of another frame (a later one of another size) is named as such, with the frame to pass instead.
    (lambda seg, frame, result: seg.overlay(frame[:5], result), "^frame is 12x5 but the result's mask is 12x9: "
                                                                r"overlay the frame segment\(\) took for this result$"),
])
def test_overlay_and_colorize_refuse_what_they_cannot_draw(tiny_model_files: dict[str, Path], call: Any,
                                                           message: str) -> None:
    frame = np.zeros((9, 12, 3), np.uint8)
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime") as seg:
        result = seg.segment(frame)
        with pytest.raises(ValueError, match=message):
            call(seg, frame, result)


@pytest.mark.parametrize("mask", [np.zeros((3, 4), np.int64), np.zeros((3, 4), bool), np.zeros((3, 4, 3), np.uint8),
                                  np.zeros((0, 4), np.uint8)])
def test_a_mask_that_is_not_hxw_uint8_is_refused(mask: np.ndarray) -> None:
    from unetrt.segmenter import SegmentationResult
    from unetrt.visualize import colorize_mask

    with pytest.raises(ValueError, match=rf"a mask is an HxW uint8 array of class ids \(as segment\(\) returns\), got "
                                         rf"a {mask.dtype} array of shape"):
        colorize_mask(SegmentationResult(mask, None, 0.0).mask, np.zeros((256, 3), np.uint8))


def test_the_mask_clean_up_is_timed_as_postprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in clock that moves only while the clean-up runs, 250 ms a frame: by hand, each frame's
    'postprocess' is its own 250 ms, and its latency the whole call's: 250 ms alone, 500 ms in a batch of two,
    750 ms in a batch of three (of two sizes).
    The clean-up was in no stage, so a stream's 'postprocess' hid a watershed slower than the network."""
    clock = [0.0]
    stand_in = SimpleNamespace(perf_counter=lambda: clock[0])
    apply = BinaryCleanup.apply

    def slow_apply(self: BinaryCleanup, probability: np.ndarray, threshold: float | None = None) -> np.ndarray:
        clock[0] += 0.250
        return apply(self, probability, threshold)

    frame = np.zeros((20, 30), np.uint8)
    with Segmenter("isbi", backend="onnxruntime", precision="fp32", cleanup=BinaryCleanup("fill-holes")) as seg:
        monkeypatch.setattr("unetrt.segmenter.time", stand_in)
        monkeypatch.setattr("unetrt.frame_path.time", stand_in)
        monkeypatch.setattr(BinaryCleanup, "apply", slow_apply)
        results = [seg.segment(frame), *seg.segment_batch([frame, frame])]
        # Frames of two sizes go through the network in two groups; each result's latency was its group's alone.
        mixed = seg.segment_batch([frame, np.zeros((8, 8), np.uint8), frame])
    assert [r.timings_ms for r in results] == [{"preprocess": 0.0, "inference": 0.0, "postprocess": 250.0}] * 3
    assert [r.latency_ms for r in results] == pytest.approx([250.0, 500.0, 500.0])
    assert [r.latency_ms for r in mixed] == pytest.approx([750.0] * 3)
