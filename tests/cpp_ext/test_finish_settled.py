"""finish_resized's mask without probabilities settles most pixels from the argmax of their four source pixels
(where those agree with a lead no rounding of the blend can overturn) and runs the class loop only on the rest:
the mask stays bit for bit the numpy reference's (the per-pixel arithmetic the CUDA kernel shares), on scenes of
large regions, at rounding-size near-ties, with NaN, infinities, huge and tiny values, float16, blend weights and
several threads."""

from __future__ import annotations

import numpy as np
import pytest
from tiling_reference import finish_resized_reference

from unetrt import _tiling

CLASSES = 11


def region_scores(rng: np.random.Generator, src_hw: tuple[int, int], classes: int = CLASSES) -> np.ndarray:
    """K x H x W scores of a scene: class regions about 24 pixels on a side, each winning by 4, plus a little
    noise (few borders, as in a network's scores: the kernel settles most pixels and does not give up)."""
    side = 24
    coarse = rng.integers(0, classes, (-(-src_hw[0] // side), -(-src_hw[1] // side)))
    labels = coarse[np.arange(src_hw[0])[:, None] // side, np.arange(src_hw[1])[None, :] // side]
    scores = (rng.standard_normal((classes, *src_hw)) * 0.5).astype(np.float32)
    scores[labels, np.arange(src_hw[0])[:, None], np.arange(src_hw[1])[None, :]] += 4
    return scores


def near_ties(scores: np.ndarray, lead: float = 0.0) -> np.ndarray:
    """Copies every winner (class > 0) to the class below it and raises the winner by one ulp, or by ``lead``: the
    winner keeps every source pixel, but with a one-ulp lead the blends of the two classes round to a tie at many
    output pixels, and the lower class wins those."""
    scores = scores.copy()
    best = scores.argmax(axis=0)
    ys, xs = np.nonzero(best > 0)
    winner = scores[best[ys, xs], ys, xs]
    scores[best[ys, xs] - 1, ys, xs] = winner
    raised = np.nextafter(winner, np.float32(np.inf)) if lead == 0 else winner + np.float32(lead)
    scores[best[ys, xs], ys, xs] = raised
    return scores


def check(scores: np.ndarray, out_hw: tuple[int, int], rect: tuple[int, int, int, int] | None = None,
          weight: np.ndarray | None = None, threads: int = 1) -> np.ndarray:
    rect = rect or (0, 0, scores.shape[1], scores.shape[2])
    mask = np.full(out_hw, 77, np.uint8)
    _tiling.finish_resized(scores, mask, rect=rect, weight=weight, threads=threads)
    _, expected, _ = finish_resized_reference(scores, out_hw, rect, weight)
    assert np.array_equal(mask, expected), f"{np.count_nonzero(mask != expected)} pixels differ from the reference"
    return expected


@pytest.mark.parametrize(("src_hw", "out_hw"), [
    ((192, 256), (360, 480)),  # camvid: the working size to the camera frame
    ((240, 320), (360, 480)),  # camvid at working_size=(320, 240)
    ((48, 61), (97, 203)),     # an upscale to a width that is no multiple of 8
    ((64, 300), (50, 41)),     # a downscale: 8 outputs span more than 8 sources (gathered)
    ((40, 40), (40, 40)),      # identity
])
@pytest.mark.parametrize("threads", [1, 3])
def test_scenes_of_regions_equal_the_reference(src_hw: tuple[int, int], out_hw: tuple[int, int],
                                               threads: int) -> None:
    scores = region_scores(np.random.default_rng(src_hw[1] + threads), src_hw)
    check(scores, out_hw, threads=threads)


def test_rounding_size_near_ties_equal_the_reference() -> None:
    """The case a settled pixel must not be: one class leads at all four source pixels by one ulp, and the blend
    rounds the two to a tie, which the lower class wins. The reference has such pixels (else the test proves
    nothing); the kernel must have them too."""
    scores = region_scores(np.random.default_rng(11), (60, 80))
    expected = check(near_ties(scores), (151, 203))
    corner_labels = finish_resized_reference(near_ties(scores, lead=1.0), (151, 203), (0, 0, 60, 80))[1]
    assert np.count_nonzero(expected != corner_labels) > 100


def test_special_values_equal_the_reference() -> None:
    """NaN (wins, as numpy's argmax), infinities, values near the float32 limits and subnormal leads."""
    rng = np.random.default_rng(13)
    scores = region_scores(rng, (50, 70))
    picks = rng.random(scores.shape)
    scores[picks < 0.002] = np.nan
    scores[(picks >= 0.002) & (picks < 0.004)] = np.inf
    scores[(picks >= 0.004) & (picks < 0.006)] = -np.inf
    huge = scores.copy()
    huge[:, :25] *= np.float32(1e37)  # above the settled pass's magnitude limit (2^100): never settled
    check(huge, (123, 171))
    tiny = scores[:, :, :35] * np.float32(1e-39)  # subnormal values and leads
    check(np.ascontiguousarray(tiny), (77, 90))


def test_subnormal_near_ties_equal_the_reference() -> None:
    """A one-step lead among subnormal scores (about 1e-41): their blend rounds to a fixed step of 2^-149 whatever the
    values, so no lead relative to the magnitude is safe there, and only the absolute floor (2^-100) keeps such a
    pixel from being settled; the blends round to ties at many output pixels, which the lower class wins. The
    subnormal scores of test_special_values_equal_the_reference lead by millions of steps and cannot show it. 85
    source columns: on an AVX2 CPU the last 5 of each row go through the portable loop, the others the AVX2 one."""
    scores = region_scores(np.random.default_rng(29), (60, 85)) * np.float32(1e-41)
    expected = check(near_ties(scores), (151, 203))
    corner_labels = finish_resized_reference(near_ties(scores, lead=1e-42), (151, 203), (0, 0, 60, 85))[1]
    assert np.count_nonzero(expected != corner_labels) > 100


def test_float16_rect_and_weight_equal_the_reference() -> None:
    rng = np.random.default_rng(17)
    scores = near_ties(region_scores(rng, (70, 90)))
    check(scores.astype(np.float16), (130, 170), rect=(5, 7, 60, 80))
    weight = rng.uniform(0.25, 3, (70, 90)).astype(np.float32)
    check(scores, (130, 170), rect=(3, 2, 64, 85), weight=weight, threads=2)


def test_noisy_scores_equal_the_reference() -> None:
    """Scores with a border nearly everywhere: the kernel gives up settling after a few rows of each band and
    runs the plain class loop; the mask is the same either way."""
    scores = np.random.default_rng(23).standard_normal((CLASSES, 96, 128)).astype(np.float32)
    for threads in (1, 2):
        check(scores, (180, 240), threads=threads)


def test_masks_of_a_segmenter_frame_are_unchanged_by_threads() -> None:
    """Each thread settles its own band of rows: the mask is the same on any number of threads."""
    scores = near_ties(region_scores(np.random.default_rng(19), (192, 256)))
    masks = []
    for threads in (1, 2, 4):
        mask = np.empty((360, 480), np.uint8)
        _tiling.finish_resized(scores, mask, rect=(0, 0, 192, 256), threads=threads)
        masks.append(mask)
    assert all(np.array_equal(masks[0], mask) for mask in masks[1:])
