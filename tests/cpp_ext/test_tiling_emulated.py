"""The CUDA kernels, run by emulation (unetrt._tiling_emu), equal the C++ kernels bit for bit and write every
output element exactly once (once per covering tile when blending).

unetrt._tiling_emu is tiling_kernels.cuh compiled by g++ under cuda_emulation.h: every (block, thread) of the
real launch configuration runs in sequence, and every store is logged. NaNs compare equal whatever their payload
(the host and the device make different ones).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import extract_cases, finish_cases, stitch_cases
from tiling_reference import resize_reference

from unetrt import _tiling, _tiling_emu

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)
MAX_LAUNCH_ROWS = 65535 * 8


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical arrays, except that any NaN equals any NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind != "f":
        return bool(np.array_equal(a, b))
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    bits = f"u{a.dtype.itemsize}"
    return bool(np.array_equal(nan_a, nan_b) and np.array_equal(a.view(bits)[~nan_a], b.view(bits)[~nan_b]))


def written_once(*arrays: np.ndarray) -> bool:
    """Stop counting writes: every element of every array written exactly once, nothing written elsewhere."""
    counts, stray = _tiling_emu.write_counts(list(arrays))
    return stray == 0 and all((c == 1).all() for c in counts)


@SETTINGS
@given(case=extract_cases())
def test_extract_emulated_equals_cpu(case: dict) -> None:
    image, kwargs = case["image"], case["kwargs"]
    cpu = np.full(case["out_shape"], 7, case["dtype"])
    emulated = cpu.copy()
    _tiling.extract_tiles(image, cpu, **kwargs)
    _tiling_emu.record_writes([emulated])
    _tiling_emu.extract_tiles(image, emulated, **kwargs)
    assert written_once(emulated)
    assert same_bits(emulated, cpu)


def coverage(case: dict) -> np.ndarray:
    """How many tiles of the grid cover each pixel."""
    (height, width), (th, tw), (oy, ox), (sy, sx), (rows, cols) = (
        case["hw"], case["tile"], case["origin"], case["step"], case["grid"])
    count = np.zeros((height, width), np.int32)
    for r in range(rows):
        for c in range(cols):
            y0, x0 = oy + r * sy, ox + c * sx
            count[max(y0, 0) : max(y0 + th, 0), max(x0, 0) : max(x0 + tw, 0)] += 1
    return count


@SETTINGS
@given(case=stitch_cases())
def test_stitch_emulated_equals_cpu(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    (height, width), (th, tw), (rows, cols) = case["hw"], case["tile"], case["grid"]
    tiles = rng.standard_normal((rows * cols, case["classes"], th, tw)).astype(case["dtype"])
    windows = {"window_y": rng.uniform(0.01, 1, th).astype(np.float32),
               "window_x": rng.uniform(0.01, 1, tw).astype(np.float32)}
    blend = case["mode"] == "blend"
    acc = {name: np.zeros((case["classes"], height, width), np.float32) for name in ("cpu", "emulated")}
    weight = {name: np.zeros((height, width), np.float32) for name in ("cpu", "emulated")}
    geometry = {"origin": case["origin"], "step": case["step"], "grid": case["grid"], "mode": case["mode"],
                **(windows if blend else {})}
    _tiling_emu.record_writes([acc["emulated"], weight["emulated"]])
    for first in range(0, rows * cols, case["batch"]):
        chunk = tiles[first : first + case["batch"]]
        for name, module in (("cpu", _tiling), ("emulated", _tiling_emu)):
            module.stitch_tiles(chunk, acc[name], weight[name] if blend else None, first=first, **geometry)
    (acc_writes, weight_writes), stray = _tiling_emu.write_counts([acc["emulated"], weight["emulated"]])
    assert stray == 0
    expected = coverage(case) if blend else np.ones((height, width), np.int32)
    assert (acc_writes == expected).all(), "each class of a pixel must change once per covering (crop: owning) tile"
    assert (weight_writes == (expected if blend else 0)).all()
    assert same_bits(acc["emulated"], acc["cpu"])
    assert same_bits(weight["emulated"], weight["cpu"])


@SETTINGS
@given(classes=st.integers(1, 12), height=st.integers(1, 30), width=st.integers(1, 30), seed=st.integers(0, 99),
       use_weight=st.booleans(), binary=st.booleans(), nans=st.booleans())
def test_finish_emulated_equals_cpu(classes: int, height: int, width: int, seed: int, use_weight: bool,
                                    binary: bool, nans: bool) -> None:
    rng = np.random.default_rng(seed)
    classes = 1 if binary else classes
    acc = rng.standard_normal((classes, height, width)).astype(np.float32)
    if nans:
        acc[rng.random(acc.shape) < 0.1] = np.nan
    weight = rng.uniform(0.1, 2, (height, width)).astype(np.float32) if use_weight else None
    outputs = {}
    for name, module in (("cpu", _tiling), ("emulated", _tiling_emu)):
        outputs[name] = (acc.copy(), np.full((height, width), 9, np.uint8))
        if name == "emulated":
            _tiling_emu.record_writes(list(outputs[name]))
        module.finish(outputs[name][0], weight, outputs[name][1], binary=binary, threshold=0.25,
                      write_logits=use_weight)
    (logit_writes, mask_writes), stray = _tiling_emu.write_counts(list(outputs["emulated"]))
    assert stray == 0 and (mask_writes == 1).all() and (logit_writes == int(use_weight)).all()
    assert same_bits(outputs["emulated"][0], outputs["cpu"][0])
    assert same_bits(outputs["emulated"][1], outputs["cpu"][1])


@SETTINGS
@given(case=finish_cases())
def test_finish_resized_emulated_equals_cpu(case: dict) -> None:
    """Mask and probabilities alike: on the host both builds call the same expf, so even probabilities agree."""
    classes = case["scores"].shape[0]
    results = {}
    for name, module in (("cpu", _tiling), ("emulated", _tiling_emu)):
        mask = np.full(case["out_hw"], 77, np.uint8) if case["outputs"] != "probabilities" else None
        probabilities = (np.full((classes, *case["out_hw"]), -1, np.float32) if case["outputs"] != "mask" else None)
        results[name] = [a for a in (mask, probabilities) if a is not None]
        if name == "emulated":
            _tiling_emu.record_writes(results[name])
        module.finish_resized(case["scores"], mask, rect=case["rect"], weight=case["weight"], binary=case["binary"],
                              threshold=case["threshold"], probabilities=probabilities, threads=case["threads"])
    assert written_once(*results["emulated"])
    for emulated, cpu in zip(results["emulated"], results["cpu"]):
        assert same_bits(emulated, cpu)


def random_frame(seed: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A frame over its dtype's whole range: 0..255, 0..65535, or [0, 1] (with -0.0 and exact zeros) for float32."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind != "f":
        return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    image = rng.random(shape, dtype=np.float32)
    # A negative zero passes check_frame (-0.0 >= 0): both kernels must keep its sign alike.
    image[rng.random(shape) < 0.2] = -0.0
    return image


@SETTINGS
@given(height=st.integers(1, 40), width=st.integers(1, 40), out_h=st.integers(1, 50), out_w=st.integers(1, 50),
       channels=st.sampled_from([0, 1, 3, 4]), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.uint8, np.uint16, np.float32]))
def test_resize_emulated_writes_each_pixel_once_and_equals_the_reference(height: int, width: int, out_h: int,
                                                                          out_w: int, channels: int, seed: int,
                                                                          dtype: Any) -> None:
    shape = (height, width) if channels == 0 else (height, width, channels)
    image = random_frame(seed, shape, dtype)
    emulated = np.empty((out_h, out_w, *shape[2:]), dtype)
    _tiling_emu.record_writes([emulated])
    _tiling_emu.resize_bilinear(image, emulated)
    assert written_once(emulated)
    assert same_bits(emulated, resize_reference(image, (out_h, out_w)))


@SETTINGS
@given(height=st.integers(1, 40), width=st.integers(1, 40), out_h=st.integers(1, 50), out_w=st.integers(1, 50),
       channels=st.sampled_from([0, 1, 3, 4]), seed=st.integers(0, 2**32 - 1), threads=st.sampled_from([0, 1, 3]),
       dtype=st.sampled_from([np.uint8, np.uint16, np.float32]))
def test_resize_cpu_equals_emulated(height: int, width: int, out_h: int, out_w: int, channels: int, seed: int,
                                    threads: int, dtype: Any) -> None:
    """The host path's working-size resize is the GPU path's kernel on the CPU, bit for bit, for every frame dtype:
    the CPU module had no resize and the host path used cv2.resize, a level away on some pixels, so the two paths'
    masks differed; until 2026-12-07 uint16 and float frames were still resized by cv2 on both paths."""
    shape = (height, width) if channels == 0 else (height, width, channels)
    image = random_frame(seed, shape, dtype)
    emulated, cpu = (np.empty((out_h, out_w, *shape[2:]), dtype) for _ in range(2))
    _tiling_emu.resize_bilinear(image, emulated)
    assert _tiling.resize_bilinear(image, cpu, threads=threads) is cpu
    assert same_bits(cpu, emulated)


# --------------------------------------------------------------------------- launch limits


def test_tallest_tile_a_launch_takes_runs() -> None:
    """524,280 rows = 65535 blocks of 8: the last row is reached and written."""
    image = np.arange(7, dtype=np.uint8).reshape(7, 1)
    out = np.empty((1, 1, MAX_LAUNCH_ROWS, 1), np.float32)
    _tiling_emu.extract_tiles(image, out, origin=(0, 0), step=(1, 1), grid=(1, 1), scale=1.0)
    cpu = np.empty_like(out)
    _tiling.extract_tiles(image, cpu, origin=(0, 0), step=(1, 1), grid=(1, 1), scale=1.0)
    assert np.array_equal(out, cpu)


def test_launches_past_65535_blocks_down_raise_value_error() -> None:
    rows = MAX_LAUNCH_ROWS + 1
    image = np.zeros((3, 1), np.uint8)
    with pytest.raises(ValueError, match="65535 thread blocks"):
        _tiling_emu.extract_tiles(image, np.empty((1, 1, rows, 1), np.float32), origin=(0, 0), step=(1, 1),
                                  grid=(1, 1))
    with pytest.raises(ValueError, match="65535 thread blocks"):
        _tiling_emu.stitch_tiles(np.zeros((1, 1, rows, 1), np.float32), np.zeros((1, rows, 1), np.float32),
                                 origin=(0, 0), step=(1, 1), grid=(1, 1))
    with pytest.raises(ValueError, match="65535 thread blocks"):
        _tiling_emu.finish_resized(np.zeros((2, 4, 4), np.float32), np.empty((rows, 1), np.uint8), rect=(0, 0, 4, 4))
    with pytest.raises(ValueError, match="65535 thread blocks"):
        _tiling_emu.resize_bilinear(np.zeros((4, 4), np.uint16), np.empty((rows, 1), np.uint16))
    # The real entry points check the same before they look for a device.
    with pytest.raises(ValueError, match="65535 thread blocks"):
        _tiling.extract_tiles_cuda(1024, (3, 1), 1, (1, 1, 1), "uint8", 4096, (1, 1, rows, 1), "float32",
                                   origin=(0, 0), step=(1, 1), grid=(1, 1))
    with pytest.raises(ValueError, match="65535 thread blocks"):
        _tiling.stitch_tiles_cuda(1024, (1, 1, rows, 1), "float32", 4096, (1, rows, 1), origin=(0, 0), step=(1, 1),
                                  grid=(1, 1))
    # The CPU kernels have no such limit.
    _tiling.finish_resized(np.zeros((2, 4, 4), np.float32), np.empty((rows, 1), np.uint8), rect=(0, 0, 4, 4))


def test_emulated_module_checks_input_as_the_cpu_one() -> None:
    with pytest.raises(ValueError, match="inside"):
        _tiling_emu.finish_resized(np.zeros((2, 4, 4), np.float32), np.empty((3, 3), np.uint8), rect=(1, 1, 4, 4))
    with pytest.raises(ValueError, match="out of range"):
        _tiling_emu.extract_tiles(np.zeros((4, 4), np.uint8), np.empty((2, 1, 2, 2), np.float32), origin=(0, 0),
                                  step=(2, 2), grid=(1, 1))


def test_pointer_entry_points_pass_the_stream_to_every_launch() -> None:
    """The *_cuda entry points of the emulated module check their arguments as the CUDA build does and hand the
    stream to every launch of the entry points in tiling_kernels.cuh, which the `<<<>>>` build compiles too:
    the emulation records the stream of each launch."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected, out = np.empty((1, 3, 20, 30), np.float16), np.empty((1, 3, 20, 30), np.float16)
    geometry = {"origin": (0, 0), "step": (20, 30), "grid": (1, 1), "swap_rb": True, "scale": 1 / 255}
    _tiling.extract_tiles(image, expected, **geometry)
    _tiling_emu.launched_streams()
    _tiling_emu.extract_tiles_cuda(image.ctypes.data, (20, 30), 3, image.strides, "uint8", out.ctypes.data,
                                   out.shape, "float16", stream=0xABC0, **geometry)
    mask = np.empty((40, 60), np.uint8)
    scores = rng.standard_normal((3, 20, 30)).astype(np.float32)
    _tiling_emu.finish_resized_cuda(scores.ctypes.data, scores.shape, "float32", mask.ctypes.data, mask.shape,
                                    rect=(0, 0, 20, 30), stream=0xDEF0)
    assert _tiling_emu.launched_streams() == [0xABC0, 0xDEF0]
    assert same_bits(out, expected)
    reference = np.empty_like(mask)
    _tiling.finish_resized(scores, reference, rect=(0, 0, 20, 30))
    assert np.array_equal(mask, reference)
    with pytest.raises(ValueError, match="aligned"):
        _tiling_emu.extract_tiles_cuda(image.ctypes.data, (20, 30), 3, image.strides, "uint8", out.ctypes.data + 1,
                                       out.shape, "float16", **geometry)
