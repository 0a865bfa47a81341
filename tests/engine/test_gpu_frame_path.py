"""The GPU-resident frame path on a real GPU: the torch backend on CUDA, pycuda's driver, the CUDA kernels.

The CPU suite drives :mod:`unetrt.cuda_device` with fakes of pycuda and the driver; this module runs the same
code against the real libraries (skipped unless the CUDA build of unetrt._tiling, an NVIDIA GPU, pycuda and a
CUDA build of torch are all present: ``scripts/check_gpu.sh`` runs it on such a machine).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from unetrt import _tiling

pytestmark = pytest.mark.cuda


def _gpu_ready() -> str | None:
    """Why the GPU path cannot run here, or None."""
    if not _tiling.cuda_built:
        return "unetrt._tiling was built without CUDA"
    if _tiling.cuda_device_count() == 0:
        return "no CUDA device"
    if importlib.util.find_spec("pycuda") is None:
        return "needs pycuda"
    if importlib.util.find_spec("torch") is None:
        return "needs torch"
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA build of torch"
    return None


@pytest.fixture(scope="module", autouse=True)
def gpu() -> None:
    reason = _gpu_ready()
    if reason is not None:
        pytest.skip(reason)


def _frames(shape: tuple[int, ...], count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # Smooth frames (a blurred random field) give the network regions to segment, not noise at every pixel.
    frames: list[np.ndarray] = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (max(2, shape[0] // 8), max(2, shape[1] // 8), *shape[2:]), dtype=np.uint8)
        frames.append(cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR).reshape(shape))
    return frames


@pytest.mark.parametrize(("shape", "tile"), [((64, 64, 3), None), ((150, 130, 3), 64), ((97, 211), None),
                                              ((120, 90, 4), 48)],
                         ids=["whole", "tiled", "gray-odd", "bgra-tiled"])
def test_gpu_resident_path_gives_the_host_path_answers(tiny_model_files: dict[str, Path],
                                                      shape: tuple[int, ...], tile: int | None) -> None:
    """Same backend, same frames: the CudaDevice path (upload, extract, network, stitch, finish on the GPU) and the
    host path (CPU kernels, the network's host entry) give the same masks and probabilities."""
    from unetrt.cuda_device import CudaDevice
    from unetrt.segmenter import Segmenter

    frames = _frames(shape, 3, seed=len(shape) + (tile or 0))
    with Segmenter(tiny_model_files["pt"], device="cuda", probabilities=True, tile=tile) as on_gpu, \
            Segmenter(tiny_model_files["pt"], device="cuda", probabilities=True, tile=tile,
                      device_path="host") as on_host:
        assert isinstance(on_gpu.device, CudaDevice)
        for frame in frames:
            want, have = on_host.segment(frame), on_gpu.segment(frame)
            assert have.mask.shape == frame.shape[:2] and have.mask.dtype == np.uint8
            assert (want.mask == have.mask).mean() >= 0.999
            assert np.abs(want.probabilities - have.probabilities).max() < 1e-3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("channels", [0, 3], ids=["gray", "colour"])
def test_every_frame_kind_is_resized_on_the_gpu_as_on_the_host(tiny_model_files: dict[str, Path], dtype: type,
                                                                channels: int) -> None:
    """A model with a working size: every frame dtype goes up as it is (gray as one channel) and is resized by the
    resize kernel on the GPU, whose CPU twin the host path runs; the paths' answers agree as for uint8 frames."""
    from unetrt.cuda_device import CudaDevice
    from unetrt.segmenter import Segmenter

    shape = (90, 120) if channels == 0 else (90, 120, channels)
    scale = {np.uint8: 1, np.uint16: 257}.get(dtype)
    frames = [f.astype(dtype) * scale if scale else (f / 255).astype(dtype) for f in _frames(shape, 2, seed=3)]
    options = {"probabilities": True, "working_size": (64, 48)}
    with Segmenter(tiny_model_files["pt"], device="cuda", **options) as on_gpu, \
            Segmenter(tiny_model_files["pt"], device="cuda", device_path="host", **options) as on_host:
        assert isinstance(on_gpu.device, CudaDevice)
        for frame in frames:
            want, have = on_host.segment(frame), on_gpu.segment(frame)
            assert (want.mask == have.mask).mean() >= 0.999
            assert np.abs(want.probabilities - have.probabilities).max() < 1e-3


def test_bundled_camvid_on_the_gpu_agrees_with_the_cpu() -> None:
    """The bundled camvid checkpoint on the GPU path and its ONNX twin on ONNX Runtime's CPU path agree on the
    bundled clip's frames (the GPU's convolutions may use TF32, so a few pixels at near-ties may differ)."""
    from unetrt.bundled import bundled_model_path, sample_clip
    from unetrt.segmenter import Segmenter

    capture = cv2.VideoCapture(str(sample_clip()))
    frames = []
    while len(frames) < 4:
        ok, frame = capture.read()
        assert ok, "the bundled clip has fewer than 4 frames"
        frames.append(frame)
    capture.release()
    pt = bundled_model_path("camvid", ".pt")
    with Segmenter(pt, device="cuda") as on_gpu, \
            Segmenter(pt.with_suffix(".onnx"), backend="onnxruntime", device="cpu") as on_cpu:
        agreement = [float((on_gpu.segment(f).mask == on_cpu.segment(f).mask).mean()) for f in frames]
    assert min(agreement) >= 0.995, agreement


def test_threads_each_get_the_mask_they_would_get_alone(tiny_model_files: dict[str, Path]) -> None:
    frames = _frames((96, 128, 3), 8, seed=5)
    from unetrt.segmenter import Segmenter

    with Segmenter(tiny_model_files["pt"], device="cuda") as seg:
        alone = [seg.segment(frame).mask for frame in frames]
        results: dict[tuple[int, int], np.ndarray] = {}
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for round_ in range(3):
                    for index in range(worker, len(frames), 2):
                        results[worker * 100 + round_, index] = seg.segment(frames[index]).mask
            except BaseException as exc:  # handed to the main thread, which fails the test
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert len(results) == 4 * 3 * 4
    for (_, index), mask in results.items():
        np.testing.assert_array_equal(mask, alone[index])


def _free_device_memory() -> int:
    """The GPU's free memory once torch has returned what its caching allocator holds unused."""
    import gc

    import torch

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return int(torch.cuda.mem_get_info()[0])


def test_many_frame_sizes_keep_memory_bounded_and_close_returns_it(tiny_model_files: dict[str, Path]) -> None:
    """Device buffers are cached per frame size in a bounded least-recently-used cache: 70 more frame sizes do
    not hold 70 more sizes' buffers (about 90 MiB for these sizes if nothing were freed), and closing the
    segmenter gives back what it took."""
    from unetrt.segmenter import Segmenter

    rng = np.random.default_rng(9)
    sizes = [(int(h), int(w)) for h, w in zip(rng.integers(40, 400, 80), rng.integers(40, 400, 80), strict=True)]
    with Segmenter(tiny_model_files["pt"], device="cuda") as warm:
        warm.segment(np.zeros((64, 64, 3), np.uint8))  # cuDNN and cuBLAS handles stay for the process
    before = _free_device_memory()
    with Segmenter(tiny_model_files["pt"], device="cuda") as seg:
        for index, (height, width) in enumerate(sizes):
            mask = seg.segment(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).mask
            assert mask.shape == (height, width)
            if index == 9:
                after_ten = _free_device_memory()
        after_eighty = _free_device_memory()
    after_close = _free_device_memory()
    assert after_ten - after_eighty < 48 << 20
    assert before - after_close < 16 << 20
    with pytest.raises(ValueError, match="closed"):
        seg.segment(np.zeros((32, 32, 3), np.uint8))
