"""finish_resized (CPU) and resize_bilinear (the CUDA kernel, emulated) equal the numpy reference, and reject bad
input."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import finish_cases
from tiling_reference import finish_resized_reference, resize_reference

from unetrt import _tiling, _tiling_emu

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True)


def _run(case: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    classes = case["scores"].shape[0]
    mask = np.full(case["out_hw"], 77, np.uint8) if case["outputs"] != "probabilities" else None
    probabilities = (np.full((classes, *case["out_hw"]), -1, np.float32) if case["outputs"] != "mask" else None)
    _tiling.finish_resized(case["scores"], mask, rect=case["rect"], weight=case["weight"], binary=case["binary"],
                           threshold=case["threshold"], probabilities=probabilities, threads=case["threads"])
    return mask, probabilities


@SETTINGS
@given(case=finish_cases())
def test_finish_resized_equals_reference(case: dict) -> None:
    mask, probabilities = _run(case)
    _, expected_mask, expected_probabilities = finish_resized_reference(
        case["scores"], case["out_hw"], case["rect"], case["weight"], case["binary"], case["threshold"])
    if mask is not None:
        assert np.array_equal(mask, expected_mask), "mask differs from the reference"
    if probabilities is not None:
        # float32 expf and a float32 sum over K against a float64 reference; NaNs where it has NaNs.
        np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_identity_resize_is_an_exact_copy(dtype: type) -> None:
    """h == H, w == W: every output value is its source value, so infinities next to a pixel leave it alone
    (a blend 1 * a + 0 * inf would be NaN and win the argmax) and the mask is the argmax of the rect itself."""
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((4, 30, 40)).astype(dtype)
    scores[rng.random(scores.shape) < 0.05] = np.inf
    scores[rng.random(scores.shape) < 0.05] = -np.inf
    rect = (3, 5, 20, 30)
    window = scores[:, 3:23, 5:35].astype(np.float32)
    mask = np.empty((20, 30), np.uint8)
    probabilities = np.empty((4, 20, 30), np.float32)
    _tiling.finish_resized(scores, mask, rect=rect, probabilities=probabilities)
    assert np.array_equal(mask, window.argmax(axis=0).astype(np.uint8))
    binary_mask = np.empty((20, 30), np.uint8)
    _tiling.finish_resized(np.ascontiguousarray(scores[:1]), binary_mask, rect=rect, binary=True, threshold=0.0)
    assert np.array_equal(binary_mask, (window[0] > 0).astype(np.uint8))
    # Equal to the existing finish kernel on the cropped plane, bit for bit.
    finish_mask = np.empty((20, 30), np.uint8)
    _tiling.finish(np.ascontiguousarray(window), mask=finish_mask)
    assert np.array_equal(mask, finish_mask)


@pytest.mark.parametrize("classes", [1, 2, 7, 255, 256])
@pytest.mark.parametrize(("src_hw", "rect", "out_hw"), [
    ((1, 1), (0, 0, 1, 1), (7, 5)),       # a single source pixel everywhere
    ((9, 13), (8, 12, 1, 1), (3, 4)),     # the bottom-right corner pixel
    ((9, 13), (0, 0, 9, 13), (1, 1)),     # down to a single pixel
    ((9, 13), (5, 0, 4, 13), (50, 2)),    # a rect on the bottom edge, stretched tall
    ((9, 13), (0, 9, 9, 4), (9, 97)),     # a rect on the right edge, stretched wide
    ((3, 300), (0, 0, 3, 300), (2, 41)),  # a strong downscale: 8 outputs span more than 8 sources
    ((4, 37), (0, 0, 4, 37), (3, 203)),   # an upscale to a width that is no multiple of 8
])
def test_edges_and_class_counts(classes: int, src_hw: tuple[int, int], rect: tuple[int, int, int, int],
                                out_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(classes)
    scores = rng.standard_normal((classes, *src_hw)).astype(np.float32)
    mask = np.empty(out_hw, np.uint8)
    probabilities = np.empty((classes, *out_hw), np.float32)
    _tiling.finish_resized(scores, mask, rect=rect, probabilities=probabilities)
    _, expected_mask, expected_probabilities = finish_resized_reference(scores, out_hw, rect)
    assert np.array_equal(mask, expected_mask)
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1, rtol=1e-5)


def test_upscale_matches_opencv_interpolation() -> None:
    """The resized values follow cv2.resize INTER_LINEAR (to float32 rounding of the coordinates)."""
    rng = np.random.default_rng(9)
    scores = rng.standard_normal((1, 48, 64)).astype(np.float32)
    probabilities = np.empty((1, 90, 120), np.float32)
    _tiling.finish_resized(scores, rect=(0, 0, 48, 64), binary=True, probabilities=probabilities)
    values = -np.log(1 / probabilities[0].astype(np.float64) - 1)  # undo the sigmoid
    expected = cv2.resize(scores[0], (120, 90), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(values, expected, atol=1e-4)


def test_weight_divides_sources_before_interpolation() -> None:
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((3, 10, 10)).astype(np.float32)
    weight = rng.uniform(0.5, 2, (10, 10)).astype(np.float32)
    divided = np.ascontiguousarray(scores / weight)
    with_weight, without = np.empty((25, 17), np.uint8), np.empty((25, 17), np.uint8)
    _tiling.finish_resized(scores, with_weight, rect=(1, 2, 8, 7), weight=weight)
    _tiling.finish_resized(divided, without, rect=(1, 2, 8, 7))
    assert np.array_equal(with_weight, without)


SCORES = np.zeros((3, 8, 10), np.float32)
MASK = np.zeros((16, 20), np.uint8)
RECT = (0, 0, 8, 10)


@pytest.mark.parametrize(("scores", "mask", "kwargs", "message"), [
    (SCORES.astype(np.float64), MASK, {}, "scores dtype must be float32 or float16, got float64"),
    (SCORES.astype(np.uint8), MASK, {}, "scores dtype must be float32 or float16"),
    (SCORES[0], MASK, {}, "K x H x W"),
    (SCORES[:, :, ::2], MASK, {}, "C-contiguous"),
    (SCORES[:, :0], MASK, {}, "empty"),
    (SCORES, None, {}, "nothing to do"),
    (SCORES, MASK.astype(np.int8), {}, "mask dtype"),
    (SCORES, MASK[None], {}, "H x W"),
    (SCORES, MASK[:, ::2], {}, "C-contiguous"),
    (SCORES, MASK, {"rect": (0, 0, 9, 10)}, "inside"),
    (SCORES, MASK, {"rect": (-1, 0, 8, 10)}, "inside"),
    (SCORES, MASK, {"rect": (0, 1, 8, 10)}, "inside"),
    (SCORES, MASK, {"rect": (0, 0, 0, 10)}, "non-empty"),
    (SCORES, MASK, {"binary": True}, "binary models have 1"),
    (SCORES, MASK, {"threshold": float("nan")}, "threshold must be finite"),
    (SCORES, MASK, {"weight": np.ones((8, 9), np.float32)}, "weight must have shape"),
    (SCORES, MASK, {"weight": np.ones((8, 10), np.float64)}, "weight dtype"),
    (SCORES, MASK, {"probabilities": np.zeros((3, 16, 21), np.float32)}, "probabilities must have shape"),
    (SCORES, MASK, {"probabilities": np.zeros((3, 16, 20), np.float16)}, "probabilities dtype"),
    (SCORES, None, {"probabilities": np.zeros((16, 20), np.float32)}, "K x H x W"),
    (SCORES, MASK, {"threads": -2}, "threads"),
    (np.zeros((257, 2, 2), np.float32), MASK, {"rect": (0, 0, 2, 2)}, "256 classes"),
    (SCORES, np.zeros((1, 0), np.uint8), {}, "output width"),
])
def test_finish_resized_rejects_bad_input(scores: np.ndarray, mask: np.ndarray | None, kwargs: dict,
                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _tiling.finish_resized(scores, mask, **{"rect": RECT, **kwargs})


def test_finish_resized_rejects_read_only_outputs() -> None:
    mask = MASK.copy()
    mask.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _tiling.finish_resized(SCORES, mask, rect=RECT)


# --------------------------------------------------------------------------- resize_bilinear

FRAME_DTYPES = [np.uint8, np.uint16, np.float32]
# How far cv2.resize (INTER_LINEAR) may lie from the kernel: a level for integers (uint8: cv2's fixed point; uint16:
# its coefficients computed in double and its round half to even), and for float32 a few float32 ulps of the [0, 1]
# range (its coefficients are double rounded to float once, the kernel's float32 arithmetic; 6.3e-6 at most over 400
# random images, 0.0025 of an 8-bit level).
OPENCV_TOLERANCE = {np.dtype(np.uint8): 1.0, np.dtype(np.uint16): 1.0, np.dtype(np.float32): 1e-5}


def random_image(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Values over a frame dtype's whole range: 0..255, 0..65535, or [0, 1] for float32."""
    if np.dtype(dtype).kind == "f":
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(height=st.integers(1, 40), width=st.integers(1, 40), out_h=st.integers(1, 60), out_w=st.integers(1, 60),
       channels=st.sampled_from([0, 1, 3, 4]), seed=st.integers(0, 2**32 - 1), threads=st.sampled_from([0, 1, 3]),
       dtype=st.sampled_from(FRAME_DTYPES))
def test_resize_equals_reference_and_opencv(height: int, width: int, out_h: int, out_w: int, channels: int,
                                            seed: int, threads: int, dtype: Any) -> None:
    """Per dtype and channel count, the CPU kernel and the CUDA kernel (emulated) equal the numpy reference bit for
    bit, and OpenCV to a level (uint8: cv2 rounds in fixed point; uint16: cv2 rounds half to even) or to float32
    rounding (float32)."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 0 else (height, width, channels)
    image = random_image(rng, shape, dtype)
    out, emulated = (np.empty((out_h, out_w, *shape[2:]), dtype) for _ in range(2))
    assert _tiling.resize_bilinear(image, out, threads=threads) is out
    assert _tiling_emu.resize_bilinear(image, emulated) is emulated
    assert np.array_equal(out, resize_reference(image, (out_h, out_w)))
    assert np.array_equal(emulated, out)
    expected = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR).reshape(out.shape)
    assert np.abs(out.astype(np.float64) - expected).max() <= OPENCV_TOLERANCE[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", FRAME_DTYPES)
def test_resize_identity_and_camera_sizes(dtype: Any) -> None:
    rng = np.random.default_rng(4)
    frame = random_image(rng, (360, 480, 3), dtype)
    same = np.empty_like(frame)
    _tiling.resize_bilinear(frame, same)
    assert np.array_equal(same, frame)
    small = np.empty((192, 256, 3), dtype)
    _tiling.resize_bilinear(frame, small)
    expected = cv2.resize(frame, (256, 192), interpolation=cv2.INTER_LINEAR)
    assert np.abs(small.astype(np.float64) - expected).max() <= OPENCV_TOLERANCE[np.dtype(dtype)]


def test_resize_keeps_the_extremes_of_each_dtype() -> None:
    """Integer images are clamped to their range after rounding half up: a full-scale uint16 edge stays 65535, never
    wraps to 0; a float32 image is stored as computed (a constant stays that constant)."""
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535), (np.float32, 1.0)):
        image = np.zeros((6, 8), dtype)
        image[:, 4:] = top
        out = np.empty((11, 13), dtype)
        _tiling.resize_bilinear(image, out)
        assert out.max() == top and out.min() == 0 and np.array_equal(out[:, -1], np.full(11, top, dtype))


IMAGE = np.zeros((10, 12, 3), np.uint8)


@pytest.mark.parametrize(("image", "out", "message"), [
    (IMAGE.astype(np.float64), np.zeros((5, 6, 3), np.float64), "image dtype must be uint8, uint16 or float32"),
    (IMAGE.astype(np.int16), np.zeros((5, 6, 3), np.int16), "image dtype"),
    (IMAGE, np.zeros((5, 6, 3), np.float32), "out dtype must be the image's"),
    (IMAGE.astype(np.uint16), np.zeros((5, 6, 3), np.uint8), "out dtype must be the image's"),
    (IMAGE[:, ::2], np.zeros((5, 6, 3), np.uint8), "C-contiguous"),
    (IMAGE, np.zeros((5, 6, 3), np.uint8)[:, ::2], "C-contiguous"),
    (IMAGE, np.zeros((5, 6, 4), np.uint8), "out must have shape"),
    (IMAGE, np.zeros((5, 6), np.uint8), "as many dimensions"),
    (IMAGE[:0], np.zeros((5, 6, 3), np.uint8), "image height"),
    (IMAGE, np.zeros((0, 6, 3), np.uint8), "output height"),
    (np.zeros((4, 4, 5), np.uint8), np.zeros((2, 2, 5), np.uint8), "1 to 4 channels"),
    (np.zeros(4, np.uint8), np.zeros(2, np.uint8), "H x W"),
])
@pytest.mark.parametrize("module", [_tiling, _tiling_emu], ids=["cpu", "emulated"])
def test_resize_rejects_bad_input(image: np.ndarray, out: np.ndarray, message: str, module: Any) -> None:
    with pytest.raises(ValueError, match=message):
        module.resize_bilinear(image, out)


def test_new_cuda_entry_points_check_arguments_first() -> None:
    """Argument checks come before the device check: a bad call is a ValueError on any machine."""
    with pytest.raises(ValueError, match="inside"):
        _tiling.finish_resized_cuda(1024, (3, 8, 10), "float32", 4096, (16, 20), rect=(0, 0, 9, 10))
    with pytest.raises(ValueError, match="nothing to do"):
        _tiling.finish_resized_cuda(1024, (3, 8, 10), "float32", 0, (16, 20), rect=RECT)
    with pytest.raises(ValueError, match="524280 rows"):
        _tiling.finish_resized_cuda(1024, (3, 8, 10), "float32", 4096, (600_000, 20), rect=RECT)
    with pytest.raises(ValueError, match="scores dtype"):
        _tiling.finish_resized_cuda(1024, (3, 8, 10), "uint8", 4096, (16, 20), rect=RECT)
    with pytest.raises(ValueError, match="1 to 4 channels"):
        _tiling.resize_bilinear_cuda(1024, (10, 12, 5), "uint8", 4096, (5, 6))
    with pytest.raises(ValueError, match="image dtype must be uint8, uint16 or float32, got float16"):
        _tiling.resize_bilinear_cuda(1024, (10, 12, 3), "float16", 4096, (5, 6))
    if _tiling.cuda_device_count() == 0:
        with pytest.raises(RuntimeError, match="CUDA"):
            _tiling.finish_resized_cuda(1024, (3, 8, 10), "float32", 4096, (16, 20), rect=RECT)
        with pytest.raises(RuntimeError, match="CUDA"):
            _tiling.resize_bilinear_cuda(1024, (10, 12, 3), "uint16", 4096, (5, 6))


@pytest.mark.parametrize("module", [_tiling, _tiling_emu], ids=["cpu", "emulated"])
def test_normalising_once_equals_dividing_at_every_tap(module: Any) -> None:
    """The frame path divides the accumulator by the blend weight once per source pixel (finish with write_logits)
    and resizes the result; that is bit for bit what finish_resized computes with the weight at every tap."""
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((4, 23, 31)).astype(np.float32)
    weight = rng.uniform(0.05, 3, (23, 31)).astype(np.float32)
    per_tap_mask, per_tap_probs = np.empty((50, 70), np.uint8), np.empty((4, 50, 70), np.float32)
    module.finish_resized(scores, per_tap_mask, rect=(2, 3, 19, 26), weight=weight, probabilities=per_tap_probs)
    normalised = scores.copy()
    module.finish(normalised, weight, write_logits=True)
    once_mask, once_probs = np.empty_like(per_tap_mask), np.empty_like(per_tap_probs)
    module.finish_resized(normalised, once_mask, rect=(2, 3, 19, 26), probabilities=once_probs)
    assert np.array_equal(per_tap_mask, once_mask)
    assert np.array_equal(per_tap_probs.view(np.uint32), once_probs.view(np.uint32))
