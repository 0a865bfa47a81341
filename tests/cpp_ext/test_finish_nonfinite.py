"""The finishes count the output pixels whose best score is NaN or infinite, exactly, on every build: the CPU kernels
(on this CPU the AVX2 row loops, with the portable loops on every row's tail of fewer than 8 pixels; the settled
labels and their class loop on unsettled blocks; the per-pixel finish), the CUDA kernels run by emulation, and the
CUDA pointer entry points' device counter.

The count is numpy's on the same values: the pixels where the maximum over the classes of the resized (or divided)
scores is not finite (numpy's max, like the argmax, lets a NaN win): a NaN or +inf in any class, -inf where every
class is -inf (a binary model's one score). A -inf that loses is an exact "never this class" and counts nothing.
Finite scores count 0, and their masks are unchanged (the identity and reference tests cover those)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import finish_cases
from tiling_reference import finish_reference, finish_resized_reference

from unetrt import _tiling, _tiling_emu

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)
MODULES = [pytest.param(_tiling, id="cpu"), pytest.param(_tiling_emu, id="emulated")]


def expected_count(values: np.ndarray) -> int:
    """Pixels of K x H x W values whose maximum over K (NaN where any class is NaN) is NaN or +-inf."""
    return int(np.count_nonzero(~np.isfinite(values.max(axis=0))))


@st.composite
def nonfinite_cases(draw: st.DrawFn) -> dict:
    """finish_cases with NaN, +inf and -inf (each, or mixed) at chosen pixels of chosen classes, or the largest
    finite floats (whose blend can overflow to infinity: no source value is then NaN or infinite)."""
    case = draw(finish_cases())
    scores = case["scores"]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    largest = float(np.finfo(scores.dtype).max)
    kinds = draw(st.sampled_from([[np.nan], [np.inf], [-np.inf], [np.nan, np.inf, -np.inf], [largest, -largest]]))
    share = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0]))
    picks = rng.random(scores.shape) < share
    scores[picks] = rng.choice(np.array(kinds, scores.dtype), int(picks.sum()))
    return case


def run_resized(module: Any, case: dict) -> int:
    classes = case["scores"].shape[0]
    mask = np.empty(case["out_hw"], np.uint8) if case["outputs"] != "probabilities" else None
    probabilities = np.empty((classes, *case["out_hw"]), np.float32) if case["outputs"] != "mask" else None
    return int(module.finish_resized(case["scores"], mask, rect=case["rect"], weight=case["weight"],
                                     binary=case["binary"], threshold=case["threshold"], probabilities=probabilities,
                                     threads=case["threads"]))


@pytest.mark.parametrize("module", MODULES)
@SETTINGS
@given(case=nonfinite_cases())
def test_finish_resized_counts_nonfinite_pixels_as_numpy(module: Any, case: dict) -> None:
    values, _, _ = finish_resized_reference(case["scores"], case["out_hw"], case["rect"], case["weight"],
                                            case["binary"], case["threshold"])
    assert run_resized(module, case) == expected_count(values)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("classes", [1, 2, 11], ids=["binary", "2 classes", "11 classes"])
@pytest.mark.parametrize("outputs", ["mask", "probabilities", "both"])
def test_each_kind_of_nonfinite_score_in_any_class_counts(module: Any, value: float, classes: int,
                                                          outputs: str) -> None:
    """A NaN or +inf in one class (the first, a middle or the last) of a few chosen source pixels, -inf in all of
    theirs, on a camvid-like upscale where most pixels are settled without their class loop: exactly the output
    pixels that sample them."""
    rng = np.random.default_rng(classes)
    scores = (rng.standard_normal((classes, 48, 64)) * 4).astype(np.float32)
    for k, (y, x) in zip([0, classes // 2, classes - 1], [(0, 0), (20, 33), (47, 63)]):
        if value == -np.inf:
            scores[:, y, x] = value
        else:
            scores[k, y, x] = value
    case = {"scores": scores, "out_hw": (90, 120), "rect": (0, 0, 48, 64), "weight": None, "binary": classes == 1,
            "threshold": 0.0, "threads": 1, "outputs": outputs}
    values, _, _ = finish_resized_reference(scores, case["out_hw"], case["rect"], binary=classes == 1)
    expected = expected_count(values)
    assert expected > 0
    assert run_resized(module, case) == expected


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("outputs", ["mask", "probabilities", "both"])
def test_a_losing_minus_infinity_counts_nothing_and_acts_as_a_very_low_score(module: Any, outputs: str) -> None:
    """-inf in some classes of a pixel (a head that rules classes out) is no failure: nothing is counted, the mask is
    that of a very low finite score, and the probabilities give those classes 0."""
    rng = np.random.default_rng(9)
    scores = (rng.standard_normal((5, 48, 64)) * 4).astype(np.float32)
    ruled_out = rng.random((48, 64)) < 0.3
    scores[1][ruled_out] = -np.inf
    scores[3][ruled_out[::-1]] = -np.inf
    low = np.where(np.isinf(scores), np.float32(-1e30), scores)
    case = {"scores": scores, "out_hw": (90, 120), "rect": (0, 0, 48, 64), "weight": None, "binary": False,
            "threshold": 0.0, "threads": 2, "outputs": outputs}
    assert run_resized(module, case) == 0
    mask, expected = np.empty((90, 120), np.uint8), np.empty((90, 120), np.uint8)
    probabilities = np.empty((5, 90, 120), np.float32)
    module.finish_resized(scores, mask, rect=(0, 0, 48, 64), probabilities=probabilities)
    module.finish_resized(low, expected, rect=(0, 0, 48, 64))
    assert np.array_equal(mask, expected)
    assert np.isfinite(probabilities).all()


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_finite_scores_count_nothing_and_a_whole_nan_frame_counts_every_pixel(module: Any, dtype: Any) -> None:
    rng = np.random.default_rng(5)
    scores = (rng.standard_normal((5, 48, 64)) * 4).astype(dtype)
    mask = np.empty((360, 480), np.uint8)
    assert module.finish_resized(scores, mask, rect=(0, 0, 48, 64)) == 0
    scores[:] = np.nan
    assert module.finish_resized(scores, mask, rect=(0, 0, 48, 64)) == 360 * 480
    # FP16 overflow: a half that passed 65504 is inf.
    scores[:] = 1
    with np.errstate(over="ignore"):
        scores[3, 10:20] = np.float16(70000.0) if dtype == np.float16 else np.inf
    assert module.finish_resized(scores, mask, rect=(0, 0, 48, 64), threads=3) == expected_count(
        finish_resized_reference(scores, (360, 480), (0, 0, 48, 64))[0])


@pytest.mark.parametrize("module", MODULES)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), classes=st.sampled_from([1, 2, 5]), height=st.integers(1, 20),
       width=st.integers(1, 40), use_weight=st.booleans(), with_mask=st.booleans(),
       kind=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_finish_counts_nonfinite_pixels_as_numpy(module: Any, seed: int, classes: int, height: int, width: int,
                                                 use_weight: bool, with_mask: bool, kind: float) -> None:
    """The per-pixel finish (blend weight division, argmax): the divided values' pixels whose best value is not
    finite."""
    rng = np.random.default_rng(seed)
    acc = rng.standard_normal((classes, height, width)).astype(np.float32)
    acc[rng.random(acc.shape) < 0.1] = kind
    weight = rng.uniform(0.1, 2, (height, width)).astype(np.float32) if use_weight else None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        logits, _ = finish_reference(acc, weight, classes == 1)
    mask = np.empty((height, width), np.uint8) if with_mask or weight is None else None
    count = module.finish(acc, weight, mask, binary=classes == 1, write_logits=weight is not None)
    assert count == expected_count(logits)


def test_cuda_entry_points_add_their_count_to_the_device_counter() -> None:
    """The pointer entry points (the emulated module's, on host memory) add to the uint64 at nonfinite_ptr, which
    the caller zeroes; 0 counts nowhere."""
    scores = np.ones((3, 8, 10), np.float32)
    scores[1, 2, 3] = np.nan
    scores[2, 5, 5] = np.inf
    mask = np.empty((8, 10), np.uint8)
    counter = np.array([5], np.uint64)
    _tiling_emu.finish_resized_cuda(scores.ctypes.data, scores.shape, "float32", mask.ctypes.data, mask.shape,
                                    rect=(0, 0, 8, 10), nonfinite_ptr=counter.ctypes.data)
    assert int(counter[0]) == 5 + 2
    _tiling_emu.finish_resized_cuda(scores.ctypes.data, scores.shape, "float32", mask.ctypes.data, mask.shape,
                                    rect=(0, 0, 8, 10))
    assert int(counter[0]) == 7
    weight = np.ones((8, 10), np.float32)
    _tiling_emu.finish_cuda(scores.ctypes.data, scores.shape, weight.ctypes.data, mask.ctypes.data,
                            nonfinite_ptr=counter.ctypes.data)
    assert int(counter[0]) == 9


def test_cuda_entry_points_refuse_a_misaligned_counter() -> None:
    scores = np.ones((3, 8, 10), np.float32)
    mask = np.empty((8, 10), np.uint8)
    counter = np.zeros(2, np.uint64)
    with pytest.raises(ValueError, match="nonfinite_ptr"):
        _tiling_emu.finish_resized_cuda(scores.ctypes.data, scores.shape, "float32", mask.ctypes.data, mask.shape,
                                        rect=(0, 0, 8, 10), nonfinite_ptr=counter.ctypes.data + 4)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("threads", [1, 3])
def test_a_nonfinite_score_in_a_scene_that_settles_counts_in_every_row_that_samples_it(module: Any, value: float,
                                                                                       threads: int) -> None:
    """A scene of class regions (as a camvid model's scores look) settles nearly every pixel, so the labels path runs
    over the whole frame: a NaN or infinity inside a region (-inf in every class) is counted in each output row whose
    upper or lower source row holds it, not only where it is the upper one."""
    rng = np.random.default_rng(4)
    classes, height, width = 5, 48, 64
    region = np.arange(width) // 13  # vertical bands of one class each
    scores = (rng.standard_normal((classes, height, width)) * 0.1).astype(np.float32)
    scores[region, :, np.arange(width)] += 8.0
    for y, x in [(21, 6), (30, 33), (41, 58)]:  # inside bands, past the rows that probe for a noisy frame
        if value == -np.inf:
            scores[:, y, x] = value
        else:
            scores[2, y, x] = value
    mask = np.empty((150, 200), np.uint8)
    count = module.finish_resized(scores, mask, rect=(0, 0, height, width), threads=threads)
    values, _, _ = finish_resized_reference(scores, (150, 200), (0, 0, height, width))
    assert count == expected_count(values) > 0
