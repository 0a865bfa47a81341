"""The CUDA kernels of unetrt._tiling equal the CPU kernels (and so the numpy reference) bit for bit.

Runs on a GPU machine with the CUDA build and CuPy or a CUDA torch; skipped elsewhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tiling_reference import extract_reference

from unetrt import _tiling, _tiling_emu
from unetrt.cuda import CudaArrayInterface, cuda_array_interface
from unetrt.tiling import blend_window

pytestmark = pytest.mark.cuda


class Device:
    """numpy <-> device arrays through CuPy or torch, whichever is installed with CUDA."""

    def __init__(self) -> None:
        self.cupy: Any = None
        self.torch: Any = None
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                self.cupy = cupy
                return
        except (ImportError, RuntimeError):  # no CuPy, or no CUDA behind it: try torch
            pass
        try:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
        except ImportError:
            pass

    @property
    def available(self) -> bool:
        return self.cupy is not None or self.torch is not None

    def put(self, array: np.ndarray) -> Any:
        if self.cupy is not None:
            return self.cupy.asarray(np.ascontiguousarray(array))
        return self.torch.from_numpy(np.ascontiguousarray(array)).cuda()

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.put(np.zeros(shape, dtype))

    def get(self, array: Any) -> np.ndarray:
        self.sync()
        if self.cupy is not None:
            return self.cupy.asnumpy(array)
        return array.cpu().numpy()

    def sync(self) -> None:
        if self.cupy is not None:
            self.cupy.cuda.runtime.deviceSynchronize()
        else:
            self.torch.cuda.synchronize()


@pytest.fixture(scope="module")
def device() -> Device:
    if not _tiling.cuda_built:
        pytest.skip("unetrt._tiling was built without CUDA")
    if _tiling.cuda_device_count() == 0:
        pytest.skip("no CUDA device")
    dev = Device()
    if not dev.available:
        pytest.skip("needs CuPy or a CUDA build of torch to allocate device memory")
    return dev


def device_args(array: Any) -> CudaArrayInterface:
    """Pointer, shape, byte strides and dtype of a CuPy or torch device array, as the kernels take them."""
    return cuda_array_interface(array, type(array).__name__)


def _extract_cuda(dev: Device, image_dev: Any, out_shape: tuple[int, ...], out_dtype: Any, **kwargs: Any) -> Any:
    img = device_args(image_dev)
    out = dev.empty(out_shape, out_dtype)
    out_args = device_args(out)
    channels = img.shape[2] if len(img.shape) == 3 else 1
    strides = img.strides if len(img.strides) == 3 else (*img.strides, 1)
    _tiling.extract_tiles_cuda(img.ptr, img.shape[:2], channels, strides, img.dtype_name, out_args.ptr, out_args.shape,
                               out_args.dtype_name, **kwargs)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("size", "tile", "origin", "step", "grid"), [
    ((1, 1, 3), (8, 8), (-3, -4), (1, 1), (1, 1)),
    ((37, 53, 3), (16, 16), (-5, -5), (12, 12), (4, 5)),
    ((300, 200, 3), (64, 48), (-20, 0), (56, 40), (6, 5)),
    ((9, 7, 1), (32, 32), (-12, -12), (3, 3), (3, 2)),
])
def test_extract_cuda_equals_cpu(device: Device, dtype: Any, size: tuple[int, ...], tile: tuple[int, int],
                                 origin: tuple[int, int], step: tuple[int, int], grid: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size, dtype=np.uint8)
    channels = size[2]
    count = grid[0] * grid[1]
    kwargs = {"origin": origin, "step": step, "grid": grid, "swap_rb": channels == 3,
              "mean": [0.4] * channels, "std": [0.3] * channels}
    got = device.get(_extract_cuda(device, device.put(image), (count, channels, *tile), dtype, **kwargs))
    cpu = np.empty((count, channels, *tile), dtype)
    _tiling.extract_tiles(image, cpu, **kwargs)
    assert np.array_equal(got.view(np.uint8), cpu.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_extract_cuda_replicates_a_gray_image(device: Device, dtype: Any) -> None:
    """A gray frame goes to the GPU as one channel; the kernel fills the colour model's three, as the CPU kernel."""
    rng = np.random.default_rng(7)
    image = (rng.random((45, 61, 1), dtype=np.float32) if np.dtype(dtype).kind == "f"
             else rng.integers(0, np.iinfo(dtype).max, (45, 61, 1), dtype=dtype, endpoint=True))
    kwargs = {"origin": (-6, -6), "step": (20, 20), "grid": (3, 4), "scale": 1.0 / 255.0,
              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    got = device.get(_extract_cuda(device, device.put(image), (12, 3, 24, 24), np.float16, **kwargs))
    cpu = np.empty((12, 3, 24, 24), np.float16)
    _tiling.extract_tiles(image, cpu, **kwargs)
    assert np.array_equal(got.view(np.uint8), cpu.view(np.uint8))


def test_extract_cuda_reads_strided_float_images(device: Device) -> None:
    rng = np.random.default_rng(1)
    big = (rng.standard_normal((80, 90, 3)) * 100).astype(np.float32)
    image_dev = device.put(big)[::2, 1::3]  # a strided device view
    image = big[::2, 1::3]
    kwargs = {"origin": (-7, -7), "step": (9, 9), "grid": (5, 4), "first": 3, "scale": 1.0}
    got = device.get(_extract_cuda(device, image_dev, (10, 3, 16, 16), np.float16, **kwargs))
    expected = extract_reference(image, (16, 16), 10, (-7, -7), (9, 9), (5, 4), 3, scale=1.0, dtype=np.float16)
    assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))


@pytest.mark.parametrize("mode", ["crop", "blend"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_stitch_and_finish_cuda_equal_cpu(device: Device, mode: str, dtype: Any) -> None:
    rng = np.random.default_rng(2)
    height, width, classes, tile, step, grid = 101, 77, 3, 32, 24, (5, 4)
    tiles = rng.standard_normal((grid[0] * grid[1], classes, tile, tile)).astype(dtype)
    window = blend_window("gaussian", tile)
    geometry = {"origin": (-3, -5), "step": (step, step), "grid": grid, "mode": mode}
    acc = np.zeros((classes, height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    acc_dev, weight_dev, window_dev = device.put(acc), device.put(weight), device.put(window)
    for first in range(0, len(tiles), 3):
        chunk = tiles[first : first + 3]
        chunk_dev = device_args(chunk_dev_array := device.put(chunk))
        blend_args = ({"window_y_ptr": device_args(window_dev).ptr, "window_x_ptr": device_args(window_dev).ptr}
                      if mode == "blend" else {})
        _tiling.stitch_tiles_cuda(chunk_dev.ptr, chunk_dev.shape, chunk_dev.dtype_name, device_args(acc_dev).ptr,
                                  acc.shape, device_args(weight_dev).ptr if mode == "blend" else 0, first=first,
                                  **geometry, **blend_args)
        device.sync()
        del chunk_dev_array
        _tiling.stitch_tiles(chunk, acc, weight if mode == "blend" else None, first=first, **geometry,
                             **({"window_y": window, "window_x": window} if mode == "blend" else {}))
    assert np.array_equal(device.get(acc_dev), acc)
    mask_dev = device.empty((height, width), np.uint8)
    use_weight = mode == "blend"
    _tiling.finish_cuda(device_args(acc_dev).ptr, acc.shape, device_args(weight_dev).ptr if use_weight else 0,
                        device_args(mask_dev).ptr, write_logits=use_weight)
    mask = np.empty((height, width), np.uint8)
    _tiling.finish(acc, weight if use_weight else None, mask, write_logits=use_weight)
    assert np.array_equal(device.get(mask_dev), mask)
    assert np.array_equal(device.get(acc_dev), acc)


def test_cuda_rejects_host_pointers(device: Device) -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    out = device.empty((9, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="image_ptr"):
        _tiling.extract_tiles_cuda(image.ctypes.data, (10, 12), 3, image.strides, "uint8", device_args(out).ptr,
                                   (9, 3, 4, 4), "float32", origin=(0, 0), step=(4, 4), grid=(3, 3))


def test_extract_cuda_reads_uint16_frames(device: Device) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    kwargs = {"origin": (-4, -4), "step": (12, 12), "grid": (4, 5), "swap_rb": True, "scale": 1.0 / 65535.0}
    image_dev = device.put(image)
    out = device.empty((20, 3, 16, 16), np.float16)
    _tiling.extract_tiles_cuda(device_args(image_dev).ptr, (40, 50), 3, image.strides, "uint16",
                               device_args(out).ptr, (20, 3, 16, 16), "float16", **kwargs)
    cpu = np.empty((20, 3, 16, 16), np.float16)
    _tiling.extract_tiles(image, cpu, **kwargs)
    assert np.array_equal(device.get(out).view(np.uint16), cpu.view(np.uint16))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("classes", "binary", "use_weight"), [(11, False, False), (5, False, True), (1, True, True),
                                                                (256, False, False)])
@pytest.mark.parametrize(("src_hw", "rect", "out_hw"), [((192, 256), (0, 0, 192, 256), (360, 480)),
                                                        ((70, 90), (3, 5, 60, 80), (37, 1001)),
                                                        ((9, 9), (0, 0, 9, 9), (9, 9))])
def test_finish_resized_cuda_equals_cpu(device: Device, dtype: Any, classes: int, binary: bool, use_weight: bool,
                                        src_hw: tuple[int, int], rect: tuple[int, int, int, int],
                                        out_hw: tuple[int, int]) -> None:
    """The mask bit for bit; probabilities within a few float32 ulp (CUDA's expf is not glibc's)."""
    rng = np.random.default_rng(classes)
    scores = (rng.standard_normal((classes, *src_hw)) * 3).astype(dtype)
    weight = rng.uniform(0.2, 2, src_hw).astype(np.float32) if use_weight else None
    mask = np.empty(out_hw, np.uint8)
    probabilities = np.empty((classes, *out_hw), np.float32)
    _tiling.finish_resized(scores, mask, rect=rect, weight=weight, binary=binary, threshold=0.1,
                           probabilities=probabilities)
    scores_dev, mask_dev = device.put(scores), device.empty(out_hw, np.uint8)
    probabilities_dev = device.empty((classes, *out_hw), np.float32)
    weight_dev = device.put(weight) if weight is not None else None
    _tiling.finish_resized_cuda(device_args(scores_dev).ptr, scores.shape, np.dtype(dtype).name,
                                device_args(mask_dev).ptr, out_hw, rect=rect,
                                weight_ptr=device_args(weight_dev).ptr if weight_dev is not None else 0,
                                probabilities_ptr=device_args(probabilities_dev).ptr, binary=binary,
                                threshold=0.1)
    assert np.array_equal(device.get(mask_dev), mask)
    np.testing.assert_allclose(device.get(probabilities_dev), probabilities, rtol=4e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("classes", "binary"), [(11, False), (1, True)])
def test_finish_resized_cuda_counts_nonfinite_pixels_as_the_cpu(device: Device, dtype: Any, classes: int,
                                                                binary: bool) -> None:
    """The device counter (atomicAdd by each thread that meets a NaN or infinite pixel) adds the CPU kernel's count
    to what it held, and the mask is still the CPU's bit for bit."""
    rng = np.random.default_rng(classes)
    scores = (rng.standard_normal((classes, 192, 256)) * 3).astype(dtype)
    picks = rng.random(scores.shape) < 0.01
    scores[picks] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype), int(picks.sum()))
    mask = np.empty((360, 480), np.uint8)
    expected = _tiling.finish_resized(scores, mask, rect=(0, 0, 192, 256), binary=binary)
    assert expected > 0
    scores_dev, mask_dev = device.put(scores), device.empty((360, 480), np.uint8)
    counter_dev = device.put(np.array([3], np.uint64))
    _tiling.finish_resized_cuda(device_args(scores_dev).ptr, scores.shape, np.dtype(dtype).name,
                                device_args(mask_dev).ptr, (360, 480), rect=(0, 0, 192, 256), binary=binary,
                                nonfinite_ptr=device_args(counter_dev).ptr)
    assert int(device.get(counter_dev)[0]) == 3 + expected
    assert np.array_equal(device.get(mask_dev), mask)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(("src", "out_hw"), [((1080, 1920, 3), (192, 256)), ((360, 480, 1), (721, 959)),
                                             ((5, 7, 4), (5, 7))])
def test_resize_cuda_equals_its_emulation(device: Device, src: tuple[int, int, int], out_hw: tuple[int, int],
                                          dtype: Any) -> None:
    rng = np.random.default_rng(6)
    image = (rng.random(src, dtype=np.float32) if np.dtype(dtype).kind == "f"
             else rng.integers(0, np.iinfo(dtype).max, src, dtype=dtype, endpoint=True))
    out_dev = device.empty((*out_hw, src[2]), dtype)
    _tiling.resize_bilinear_cuda(device_args(image_dev := device.put(image)).ptr, src, np.dtype(dtype).name,
                                 device_args(out_dev).ptr, out_hw)
    emulated = np.empty((*out_hw, src[2]), dtype)
    _tiling_emu.resize_bilinear(image, emulated)
    assert np.array_equal(device.get(out_dev), emulated)
    del image_dev
