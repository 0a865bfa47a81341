"""Clean-up of binary probability maps: gaps in membranes no longer merge cells, thick membranes no longer eat them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from unetrt.metrics import IsbiChallengeScorer, _components
from unetrt.postprocess import BinaryCleanup, cell_lines, fill_holes, resolve_cleanup, seeded_watershed


def two_cells_with_a_gap(gap: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Two cells split by a vertical membrane whose middle the model drew weakly (probability ``gap``)."""
    truth = np.ones((20, 21), np.uint8)
    truth[:, 10] = 0
    probability = np.where(truth > 0, 0.95, 0.05).astype(np.float32)
    probability[8:12, 10] = gap
    return probability, truth


def test_a_weak_membrane_gap_no_longer_merges_two_cells() -> None:
    probability, _ = two_cells_with_a_gap()
    assert _components(probability > 0.5).max() == 1  # plain thresholding merges the cells
    mask = seeded_watershed(probability, threshold=0.5, seed_threshold=0.9, min_seed_area=5)
    assert _components(mask > 0).max() == 2
    # the cells keep their interiors; only the membrane column is background
    assert mask[:, :10].all() and mask[:, 11:].all() and not mask[:, 10].any()


def test_pixels_at_or_below_the_threshold_stay_background_and_small_seeds_are_dropped() -> None:
    probability = np.full((12, 12), 0.2, np.float32)
    probability[2:9, 2:9] = 0.95
    probability[10, 10] = 0.99  # a one-pixel seed: noise
    mask = seeded_watershed(probability, threshold=0.5, seed_threshold=0.9, min_seed_area=4)
    assert mask[2:9, 2:9].all()
    assert mask.sum() == 49


def test_every_cell_of_the_mask_holds_at_most_one_seed_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        probability = cv2.GaussianBlur(rng.random((40, 40)).astype(np.float32), (5, 5), 0)
        probability = (probability - probability.min()) / np.ptp(probability)
        mask = seeded_watershed(probability, threshold=0.3, seed_threshold=0.7, min_seed_area=1)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        seeds = _components(probability > 0.7)
        cells = _components(mask > 0)
        assert seeds.max() >= 2, "the case must have several seeds to keep apart"
        for cell in range(1, int(cells.max()) + 1):
            inside = np.unique(seeds[(cells == cell) & (seeds > 0)])
            assert inside.size <= 1, f"cell {cell} merges seeds {inside}"
        # every seed pixel stays foreground
        assert mask[seeds > 0].all()


def test_the_challenge_scorer_scores_a_post_processing_step() -> None:
    probability, truth = two_cells_with_a_gap()
    plain = IsbiChallengeScorer()
    plain.update(probability, truth)
    watershed = IsbiChallengeScorer(binarize=lambda p, t: seeded_watershed(p, t, max(t, 0.9), 5))
    watershed.update(probability, truth)
    assert watershed.scores().rand_error == 0.0
    # plain thresholds either merge the cells (t < 0.6) or cut the gap pixels out of the true cells' pairs
    assert plain.scores().rand_error >= 0.0
    assert plain.scores().rand_threshold >= 0.6


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": 0.9, "seed_threshold": 0.5}, "threshold"),
    ({"threshold": 0.5, "seed_threshold": 1.5}, "seed threshold"),
    ({"min_seed_area": 0}, "seed area"),
])
def test_bad_settings_raise_value_error(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seeded_watershed(np.zeros((4, 4), np.float32), **kwargs)  # type: ignore[arg-type]


def test_a_map_that_is_not_2d_is_refused() -> None:
    with pytest.raises(ValueError, match="HxW"):
        seeded_watershed(np.zeros((2, 4, 4), np.float32))


def test_fill_holes_fills_enclosed_specks_only() -> None:
    mask = np.ones((10, 10), np.uint8)
    mask[2:4, 2:4] = 0   # a 4-pixel speck inside
    mask[6:9, 6:9] = 0   # a 9-pixel one
    mask[0, 5] = 0       # a speck on the border: not enclosed
    filled = fill_holes(mask, 5)
    assert filled[2:4, 2:4].all() and not filled[6:9, 6:9].any() and filled[0, 5] == 0
    assert np.array_equal(fill_holes(mask, 0), mask)


def test_cleanup_modes_and_their_errors() -> None:
    probability, truth = two_cells_with_a_gap()
    probability[3, 3] = 0.1  # a speck inside the left cell
    plain = BinaryCleanup().apply(probability)
    assert np.array_equal(plain, (probability > 0.5).astype(np.uint8))
    assert BinaryCleanup("fill-holes", max_hole_area=2).apply(probability)[3, 3] == 1
    cleaned = BinaryCleanup("watershed", max_hole_area=2, seed_threshold=0.9, min_seed_area=5).apply(probability)
    assert _components(cleaned > 0).max() == 2 and cleaned[3, 3] == 1
    assert np.array_equal(cleaned > 0, truth > 0)
    with pytest.raises(ValueError, match="unknown post-processing"):
        BinaryCleanup("erode")


def test_cleanup_thresholds_at_its_own_threshold_unless_a_scorer_passes_one() -> None:
    probability = np.array([[0.2, 0.6, 0.8]], np.float32)
    assert BinaryCleanup(threshold=0.7).apply(probability).tolist() == [[0, 0, 1]]
    assert BinaryCleanup(threshold=0.7).apply(probability, 0.5).tolist() == [[0, 1, 1]]
    assert BinaryCleanup("watershed", seed_threshold=0.5, min_seed_area=1, threshold=0.7).apply(probability).tolist() \
        == [[0, 0, 1]]
    with pytest.raises(ValueError, match="hole area"):
        BinaryCleanup("fill-holes", max_hole_area=-1)


def cells_and_thick_membrane() -> tuple[np.ndarray, np.ndarray]:
    """A 3x2 grid of cells whose 1-pixel true membranes the model draws 5 pixels thick, one gap left open."""
    truth = np.ones((31, 41), np.uint8)
    truth[10, :] = truth[20, :] = 0
    truth[:, 20] = 0
    probability = np.full(truth.shape, 0.95, np.float32)
    for row in (10, 20):
        probability[row - 2:row + 3, :] = 0.05
    probability[:, 18:23] = 0.05
    probability[13:17, 18:23] = 0.4  # a gap in the vertical membrane between the middle two cells
    return probability, truth


def test_cell_lines_run_midway_between_cells_and_leave_no_two_cells_4_connected() -> None:
    cells = np.zeros((9, 12), np.uint8)
    cells[:, :3] = 1
    cells[:, 8:] = 1
    lines = cell_lines(cells)
    # columns 3..7 are background; 3, 4 and 5 are nearer the left cell, 6 and 7 the right one: the line is column 5
    assert lines.dtype == bool and np.array_equal(np.nonzero(lines.any(0))[0], [5]) and lines[:, 5].all()
    grown = _components(~lines)
    assert grown.max() == 2 and (grown[:, :5] == grown[0, 0]).all() and (grown[:, 6:] == grown[0, -1]).all()


def test_cell_lines_of_one_cell_or_none_are_empty_and_bad_masks_are_refused() -> None:
    one = np.zeros((5, 5), np.uint8)
    assert not cell_lines(one).any()
    one[2, 2] = 1
    assert not cell_lines(one).any()
    with pytest.raises(ValueError, match="HxW"):
        cell_lines(np.zeros((0, 3), np.uint8))


def test_cell_lines_never_cut_a_cell_of_the_mask_they_come_from_on_random_masks() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        blobs = cv2.GaussianBlur(rng.random((48, 48)).astype(np.float32), (7, 7), 0)
        cells = (blobs > np.quantile(blobs, 0.6)).astype(np.uint8)
        lines = cell_lines(cells)
        before, after = _components(cells > 0), _components(~lines)
        assert before.max() >= 2, "the case must have several cells"
        for cell in range(1, int(before.max()) + 1):  # no cell is split...
            assert np.unique(after[(before == cell) & ~lines]).size == 1
        for grown in range(1, int(after.max()) + 1):  # ...and no two are joined
            assert np.unique(before[(after == grown) & (before > 0)]).size <= 1


def test_lines_let_thick_membranes_be_thin_where_the_challenge_scores_and_keep_the_mask_at_its_threshold() -> None:
    probability, truth = cells_and_thick_membrane()
    plain = IsbiChallengeScorer()
    plain.update(probability, truth)
    cleanup = BinaryCleanup("watershed", seed_threshold=0.9, min_seed_area=5, lines_threshold=0.5)
    lined = IsbiChallengeScorer(binarize=cleanup.apply)
    lined.update(probability, truth)
    # thick membranes cost plain masks the border pixels of every cell, and at t < 0.4 the gap merges two cells
    assert plain.scores().rand_error > 0.1
    # the lines run midway through the drawn membrane, where the true one is, but for a few pixels at its crossings
    assert lined.scores().rand_error < 0.005 and lined.scores().rand_threshold == 0.0
    # at the mask threshold the membrane keeps its drawn thickness; the gap is cut by one line, not filled
    mask = cleanup.apply(probability)
    assert np.array_equal(mask[:, :18], (probability[:, :18] > 0.5).astype(np.uint8))
    assert _components(mask > 0).max() == 6
    # this map's true membrane is one pixel thin, so the pixel error falls too
    assert lined.scores().pixel_error < 0.005 < plain.scores().pixel_error


def test_lines_threshold_out_of_range_is_refused_and_makes_the_cleanup_active() -> None:
    assert BinaryCleanup(lines_threshold=0.2).active and not BinaryCleanup().active
    with pytest.raises(ValueError, match="cell lines' threshold"):
        BinaryCleanup(lines_threshold=1.5)


@pytest.mark.parametrize("threshold", [5, -1, float("nan"), "0.5", True])
def test_apply_refuses_thresholds_the_constructor_refuses(threshold: object) -> None:
    probability = np.full((3, 3), 0.4, np.float32)
    with pytest.raises(ValueError, match=r"the mask threshold must (lie|be a number) in \[0, 1\], got"):
        BinaryCleanup().apply(probability, threshold=threshold)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"the mask threshold must (lie|be a number) in \[0, 1\], got"):
        BinaryCleanup(threshold=threshold)  # type: ignore[arg-type]


@pytest.mark.parametrize(("probability", "message"), [
    (np.zeros(5, np.float32), r"HxW array of numbers, got shape \(5,\)"),
    (np.zeros((0, 5), np.float32), r"HxW array of numbers, got shape \(0, 5\)"),
    (np.full((2, 2), np.nan, np.float32), "holds 4 NaN or infinite values"),
    (np.array([[0.9, np.inf]]), "holds 1 NaN or infinite values"),
    ([["a"]], r"HxW array of numbers, got \[\['a'\]\]"),
])
def test_maps_that_are_no_finite_2d_arrays_are_refused_everywhere(probability: object, message: str) -> None:
    for mode in ("none", "fill-holes", "watershed"):
        with pytest.raises(ValueError, match=message):
            BinaryCleanup(mode).apply(probability)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        seeded_watershed(probability)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        cell_lines(probability)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        fill_holes(probability, 2)  # type: ignore[arg-type]


def test_lists_are_maps_too() -> None:
    assert BinaryCleanup(threshold=0.5).apply([[0.2, 0.9]]).tolist() == [[0, 1]]  # type: ignore[arg-type]
    assert seeded_watershed([[0.95, 0.95]], min_seed_area=1).tolist() == [[1, 1]]  # type: ignore[arg-type]
    assert cell_lines([[1, 0, 1]]).tolist() == [[False, True, False]]  # type: ignore[arg-type]


def test_fill_holes_refuses_colour_and_empty_masks_and_odd_areas() -> None:
    with pytest.raises(ValueError, match=r"the mask to fill must be a non-empty HxW array .*got shape \(4, 4, 3\)"):
        fill_holes(np.ones((4, 4, 3), np.uint8), 2)
    with pytest.raises(ValueError, match=r"got shape \(0, 4\)"):
        fill_holes(np.ones((0, 4), np.uint8), 2)
    with pytest.raises(ValueError, match="the maximum hole area must be an int number of pixels, got '2'"):
        fill_holes(np.ones((4, 4), np.uint8), "2")  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_hole_area": "5"}, "the maximum hole area must be an int of at least 0 pixels, got '5'"),
    ({"max_hole_area": float("nan")}, "the maximum hole area must be an int of at least 0 pixels, got nan"),
    ({"max_hole_area": 2.5}, "the maximum hole area must be an int"),
    ({"max_hole_area": True}, "the maximum hole area must be an int"),
    ({"min_seed_area": 2.0}, "the minimum seed area must be an int of at least 1 pixel, got 2.0"),
    ({"min_seed_area": True}, "the minimum seed area must be an int"),
    ({"threshold": "0.5"}, r"the mask threshold must be a number in \[0, 1\], got '0.5'"),
    ({"threshold": float("nan")}, r"the mask threshold must lie in \[0, 1\], got nan"),
    ({"seed_threshold": float("nan")}, "seed threshold nan"),
    ({"seed_threshold": "0.9"}, "seed threshold '0.9'"),
    ({"lines_threshold": float("nan")}, r"the cell lines' threshold must lie in \[0, 1\], got nan"),
])
def test_settings_of_the_wrong_type_or_nan_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BinaryCleanup("watershed", **kwargs)


def test_numpy_numbers_are_settings_too() -> None:
    cleanup = BinaryCleanup("fill-holes", max_hole_area=np.int64(4), min_seed_area=np.int32(2),
                            threshold=np.float32(0.5))
    probability = np.full((5, 5), 0.9, np.float32)
    probability[2, 2] = 0.1
    assert int(cleanup.apply(probability).sum()) == 25


def test_the_watershed_cleanup_drops_seeds_smaller_than_its_min_seed_area() -> None:
    probability = np.full((12, 12), 0.2, np.float32)
    probability[2:9, 2:9] = 0.95
    probability[10, 10] = 0.99  # a one-pixel seed: noise
    cleanup = BinaryCleanup("watershed", seed_threshold=0.9, min_seed_area=4)
    mask = cleanup.apply(probability)
    assert mask[2:9, 2:9].all() and mask[10, 10] == 0 and mask.sum() == 49


def test_lines_masks_fill_specks_as_fill_holes_does() -> None:
    probability, _ = two_cells_with_a_gap()
    probability[3, 3] = 0.1  # a speck inside the left cell
    cleanup = BinaryCleanup("none", max_hole_area=2, lines_threshold=0.5)
    assert cleanup.apply(probability)[3, 3] == 1
    assert BinaryCleanup("none", lines_threshold=0.5).apply(probability)[3, 3] == 0


def test_fill_holes_keeps_a_speck_of_exactly_max_area_pixels() -> None:
    mask = np.ones((6, 6), np.uint8)
    mask[2:4, 2:4] = 0  # 4 pixels: "smaller than max_area" fills it at 5, not at 4
    assert np.array_equal(fill_holes(mask, 4), mask)
    assert fill_holes(mask, 5).all()


def test_fill_holes_keeps_specks_on_the_bottom_and_right_borders() -> None:
    mask = np.ones((6, 6), np.uint8)
    mask[5, 2] = 0  # bottom border
    mask[2, 5] = 0  # right border
    assert np.array_equal(fill_holes(mask, 5), mask)


def test_fill_holes_keeps_a_one_pixel_diagonal_membrane() -> None:
    # 8-connected, the diagonal is one piece touching the border; 4-connected it would be 1-pixel specks, filled.
    mask = np.ones((8, 8), np.uint8)
    mask[np.arange(8), np.arange(8)] = 0
    assert np.array_equal(fill_holes(mask, 5), mask)


def test_a_watershed_pixel_exactly_at_the_threshold_stays_background_even_inside_a_cell() -> None:
    probability = np.full((5, 5), 0.95, np.float32)
    probability[2, 2] = 0.5
    mask = seeded_watershed(probability, threshold=0.5, seed_threshold=0.9, min_seed_area=1)
    assert mask[2, 2] == 0 and mask.sum() == 24


@pytest.mark.parametrize("scale", ["0-255", "logits"])
def test_maps_that_are_no_probabilities_are_refused_not_thresholded(scale: str) -> None:
    # A 0-255 map (a saved PNG) or logits lie above every threshold almost everywhere: the weak membrane of
    # two_cells_with_a_gap (0.05 -> 12 or -2.9) vanished and the two cells merged without a word.
    probability, _ = two_cells_with_a_gap()
    wrong = ((probability * 255).astype(np.uint8) if scale == "0-255"
             else np.log(probability / (1 - probability)))
    for mode in ("none", "fill-holes", "watershed"):
        with pytest.raises(ValueError, match=r"must hold probabilities in \[0, 1\].*divide a 0-255 map by 255"):
            BinaryCleanup(mode).apply(wrong)
    with pytest.raises(ValueError, match=r"must hold probabilities in \[0, 1\]"):
        seeded_watershed(wrong)
    # Masks are no probabilities: any non-zero value is foreground there, 255 as much as 1.
    mask = (probability > 0.9).astype(np.uint8) * 255  # two cells apart: cell_lines finds the line between them
    assert np.array_equal(fill_holes(mask, 2), mask // 255)
    assert np.array_equal(cell_lines(mask), cell_lines(mask // 255)) and cell_lines(mask).any()


def test_a_map_that_strays_outside_0_1_by_rounding_is_cleaned_as_the_same_map_clipped() -> None:
    # Blended tiles' weighted means can pass 1 (or 0) by an ulp or so: within the 1e-3 margin the map is taken,
    # and every mask is the one of the map clipped to [0, 1].
    probability, _ = two_cells_with_a_gap()
    rounded = probability.copy()
    rounded[0, 0], rounded[0, 1] = 1 + 1e-4, -1e-4
    clipped = np.clip(rounded, 0, 1)
    for mode in ("none", "fill-holes", "watershed"):
        assert np.array_equal(BinaryCleanup(mode).apply(rounded), BinaryCleanup(mode).apply(clipped))
    assert np.array_equal(seeded_watershed(rounded), seeded_watershed(clipped))


def test_a_map_below_0_is_refused_though_it_stays_below_1() -> None:
    # A network's tanh output (2p - 1, in [-1, 1]) never passes 1, yet a threshold of 0.5 on it is one of 0.75 on
    # the probability: another mask than the one asked for, without a word.
    probability, _ = two_cells_with_a_gap()
    # Its minimum is 2 x 0.05 - 1, which float32 holds as -0.89999...
    with pytest.raises(ValueError, match=r"must hold probabilities in \[0, 1\], got min -0\.8999"):
        BinaryCleanup("watershed").apply(2 * probability - 1)


@pytest.mark.parametrize("cleanup", [True, 1, {"mode": "watershed"}])
def test_a_cleanup_of_no_known_kind_is_named_not_a_crash(cleanup: object) -> None:
    # Segmenter(cleanup=True) ended in AttributeError: 'bool' object has no attribute 'active'.
    with pytest.raises(ValueError, match=r"cleanup must be a BinaryCleanup, None or 'stated', got .*BinaryCleanup\("):
        resolve_cleanup(cleanup, "isbi")  # type: ignore[arg-type]
