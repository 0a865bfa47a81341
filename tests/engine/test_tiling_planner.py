"""unetrt.tiling: the planner, the kernels' calls over a grid, the blend windows and the blend check (identity
networks through the grid: tests/engine/test_frame_path_tiling.py)."""

from __future__ import annotations

import numpy as np
import pytest

from unetrt.geometry import valid_output_size
from unetrt.tiling import (
    WINDOW_FLOOR,
    blend_window,
    check_blend,
    extract_call,
    legal_tile_sizes,
    plan_tiles,
    plan_whole,
    shift_tile_output,
    tile_runs,
)


def test_valid_plan_has_the_papers_context_margin() -> None:
    grid = plan_tiles((1000, 800), 572, padding="valid")
    assert grid.tile_hw == (572, 572) and grid.output_hw == (388, 388) and grid.margin == (92, 92)
    assert grid.origin == (-92, -92) and grid.output_origin == (0, 0)
    assert grid.step == (388, 388) and grid.shape == (3, 3) and grid.overlap == (0, 0)


def test_same_plan_covers_the_image_with_overlap() -> None:
    grid = plan_tiles((4000, 3000), 512, overlap=64)
    assert grid.step == (448, 448) and grid.shape == (9, 7)
    assert grid.origin == (0, 0) and (grid.shape[0] - 1) * 448 + 512 >= 4000 > (grid.shape[0] - 2) * 448 + 512


def test_small_images_get_one_shrunken_legal_tile() -> None:
    grid = plan_tiles((37, 5), 64, overlap=16, depth=3)
    assert grid.shape == (1, 1) and grid.tile_hw == (40, 8)
    valid = plan_tiles((1, 1), 572, padding="valid")
    assert valid.shape == (1, 1) and valid.tile_hw[0] < 572
    assert valid_output_size(valid.tile_hw[0]) == valid.output_hw[0] >= 1


def test_whole_image_grid_is_one_mirror_padded_tile() -> None:
    grid = plan_whole(360, 480)
    assert grid.shape == (1, 1) and grid.tile_hw == (368, 480) and grid.origin == (0, 0) and grid.shift == (0, 0)
    valid = plan_whole(100, 100, "valid")
    assert valid.count == 1 and valid.output_hw[0] >= 100 and valid.origin[0] == -valid.margin[0] < 0


def test_legal_tile_sizes_follow_geometry() -> None:
    assert legal_tile_sizes(500, 600, "valid") == [508, 524, 540, 556, 572, 588]
    assert legal_tile_sizes(500, 530, "same") == [512, 528]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tile": 500}, "nearest legal sides: 496 or 512"),
    ({"tile": 512, "padding": "valid"}, "not legal for a 'valid'"),
    ({"tile": 64, "overlap": 64}, "overlap must be in"),
    ({"tile": 64, "overlap": -2}, r"overlap must be in \[0, 64\) for output tiles of 64 px, got -2"),
    ({"tile": (64, 64, 64)}, "pair"),
    ({"tile": 64, "padding": "full"}, "padding must be"),
])
def test_bad_plans_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_tiles((300, 300), **kwargs)


def test_blend_windows_are_positive_with_unit_peak() -> None:
    for kind in ("gaussian", "linear"):
        for size in (1, 2, 7, 64):
            window = blend_window(kind, size)
            assert window.dtype == np.float32 and window.shape == (size,)
            assert window.min() > 0 and window.max() == 1.0
            assert np.array_equal(window, window[::-1])
    with pytest.raises(ValueError, match="kind"):
        blend_window("box", 4)


def test_the_blend_check_names_the_modes() -> None:
    assert [check_blend(mode) for mode in ("gaussian", "linear", "crop")] == ["gaussian", "linear", "crop"]
    with pytest.raises(ValueError, match=r"blend must be one of \('gaussian', 'linear', 'crop'\), got 'max'"):
        check_blend("max")


def test_last_tiles_lie_inside_the_image_as_in_monai() -> None:
    """1440 x 1088 with 256 px tiles and 64 px overlap: the regular grid would mirror-pad 128 and 160 px past
    the bottom and right edges; the last row and column move back to end at the edges."""
    grid = plan_tiles((1088, 1440), 256, overlap=64)
    assert grid.shape == (6, 8) and grid.step == (192, 192)
    assert grid.shift == (128, 160)
    for axis, size in enumerate((1088, 1440)):
        starts = grid.axis_starts(axis)
        assert min(starts) >= 0 and starts[-1] + 256 == size
        assert starts[:-1] == [i * 192 for i in range(len(starts) - 1)]
    assert grid.tile_origin(5, 7) == (1088 - 256, 1440 - 256)
    assert grid.tile_origin(4, 6) == (4 * 192, 6 * 192)


def test_aligned_last_tiles_stay_on_the_pooling_grid() -> None:
    grid = plan_tiles((1000, 700), 256, overlap=64, align=16)
    for axis, size in enumerate((1000, 700)):
        last = grid.axis_starts(axis)[-1]
        assert last % 16 == 0 and 0 <= last + 256 - size < 16
    with pytest.raises(ValueError, match="align"):
        plan_tiles((100, 100), 32, align=0)


def test_axes_shorter_than_a_tile_keep_one_padded_tile() -> None:
    grid = plan_tiles((20, 300), 64, overlap=16, depth=3)
    assert grid.shape[0] == 1 and grid.shift[0] == 0 and grid.tile_hw[0] == 20
    assert grid.shift[1] > 0 and grid.axis_starts(1)[-1] + 64 == 300


def test_tile_runs_and_extract_calls_follow_the_shifted_grid() -> None:
    grid = plan_tiles((100, 70), 32, overlap=8, depth=3)  # 4 x 3 tiles, last row and column shifted
    jobs = [(0, tile) for tile in range(4, 10)]
    assert tile_runs(grid, jobs, regular=True) == [(0, 6, 0)]
    assert tile_runs(grid, jobs, regular=False) == [(0, 1, 0), (1, 1, 0), (2, 2, 0), (4, 1, 0), (5, 1, 0)]
    assert extract_call(grid, 3) == ((24, 0), (1, 2), 0)
    assert extract_call(grid, 5) == ((24, 70 - 32), (1, 1), 0)
    assert extract_call(grid, 10) == ((100 - 32, 0), (1, 2), 1)
    regular = plan_tiles((64, 64), 32, depth=3)
    assert regular.shift == (0, 0) and extract_call(regular, 3) == ((0, 0), (2, 2), 3)
    assert tile_runs(regular, [(0, 2), (0, 3), (1, 0)], regular=False) == [(0, 2, 0), (2, 1, 1)]


def test_gaussian_window_has_monais_floor() -> None:
    window = blend_window("gaussian", 256)
    unfloored = np.exp(-0.5 * ((np.arange(256) - 127.5) / 32.0) ** 2)
    unfloored /= unfloored.max()
    assert unfloored.min() < 1e-3
    assert window.min() == np.float32(WINDOW_FLOOR)
    np.testing.assert_allclose(window, np.maximum(unfloored, WINDOW_FLOOR), rtol=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (((100, 100), 64.0), r"tile must be an int or a \(height, width\) pair of ints, got 64.0"),
    (((1000, 1000), 64, 8.0), r"overlap must be an int or a \(height, width\) pair of ints, got 8.0"),
    (((300, 300), (64, True)), r"tile must be .*got \(64, True\)"),
    ((100, 64), r"image_hw must be a \(height, width\) pair of ints, got 100"),
    (((0, 64), 64), r"image must be at least 1 x 1, got 0 x 64"),
    (((100, None), 64), r"image_hw must be a \(height, width\) pair of ints, got \(100, None\)"),
])
def test_sizes_that_are_no_ints_are_refused_by_name(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_tiles(*args)


def test_numpy_ints_and_arrays_are_sizes_too() -> None:
    grid = plan_tiles(np.array([100, 64]), np.int64(64), (np.int32(16), 16))
    assert grid == plan_tiles((100, 64), 64, overlap=16)
    assert plan_whole(np.int64(360), 480) == plan_whole(360, 480)


@pytest.mark.parametrize(("height", "width"), [("10", 5), (10, 5.0), (0, 5), (10, -1)])
def test_a_whole_image_plan_needs_positive_int_sides(height: object, width: object) -> None:
    with pytest.raises(ValueError, match=r"image (height|width) must be a positive int, got"):
        plan_whole(height, width)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [4.5, "4", float("nan"), 0, True])
def test_blend_windows_need_a_positive_int_size(size: object) -> None:
    with pytest.raises(ValueError, match=r"window size must be an int >= 1 .*got"):
        blend_window("gaussian", size)  # type: ignore[arg-type]
    assert blend_window("linear", np.int64(4)).tolist() == [0.5, 1.0, 1.0, 0.5]


def test_tile_outputs_shift_only_within_the_tile() -> None:
    tile = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    shift_tile_output(tile, 2, 0)
    assert tile.tolist() == [[[0.0, 1.0, 2.0, 3.0]]]
    for pixels in (-1, 4, 10, 1.0):
        with pytest.raises(ValueError, match=r"pixels must be an int in \[0, 4\) for a tile 4 px long on axis 2"):
            shift_tile_output(tile, 2, pixels)  # type: ignore[arg-type]
    assert tile.tolist() == [[[0.0, 1.0, 2.0, 3.0]]]
    with pytest.raises(ValueError, match=r"axis must be 1 \(rows\) or 2 \(columns\)"):
        shift_tile_output(tile, 0, 1)
    with pytest.raises(ValueError, match=r"tile must be a K x h x w array, got \(1, 4\)"):
        shift_tile_output(tile[0], 1, 1)


def test_axis_starts_take_axis_0_or_1() -> None:
    grid = plan_tiles((100, 64), 64, overlap=16)
    with pytest.raises(ValueError, match=r"axis must be 0 \(rows\) or 1 \(columns\), got 2"):
        grid.axis_starts(2)


def test_a_last_tile_rounded_to_align_never_starts_past_its_slot() -> None:
    """472 px, 256 px tiles, 40 px overlap (step 216, not a multiple of 16): the image's edge is exactly one step
    on, so the regular slot already ends there; rounding its start up to 16 (224) must not move it past."""
    grid = plan_tiles((472, 472), 256, overlap=40, align=16)
    assert grid.shape == (2, 2) and grid.step == (216, 216) and grid.shift == (0, 0)
    for axis in (0, 1):
        assert grid.axis_starts(axis) == [0, 216]
    assert grid.tile_origin(1, 1) == (216, 216)


def test_overlap_pairs_apply_per_axis() -> None:
    grid = plan_tiles((300, 200), 64, overlap=(16, 8))
    assert grid.step == (48, 56) and grid.overlap == (16, 8)
    assert grid.shape == (6, 4) and grid.axis_starts(0)[-1] + 64 == 300 and grid.axis_starts(1)[-1] + 64 == 200


def test_an_image_exactly_one_tile_long_gets_the_one_tile_plan() -> None:
    grid = plan_tiles((64, 64), 64, overlap=16)
    assert grid.shape == (1, 1) and grid.step == (64, 64) and grid.shift == (0, 0) and grid.overlap == (0, 0)


def test_tile_runs_keep_unshifted_last_columns_in_their_row_run() -> None:
    grid = plan_tiles((100, 64), 32, depth=3)  # 4 x 2 tiles, only the last row shifted
    assert grid.shape == (4, 2) and grid.shift == (28, 0)
    jobs = [(0, tile) for tile in range(8)]
    assert tile_runs(grid, jobs, regular=False) == [(0, 2, 0), (2, 2, 0), (4, 2, 0), (6, 2, 0)]


def test_min_tile_pads_each_axis_up_to_its_own_minimum() -> None:
    """A TensorRT profile's minimum of 32 x 48 (height x width): an image 10 px high and 200 px wide gets rows of
    the height minimum, not the width's (each axis pads to its own), and columns of the asked tile."""
    grid = plan_tiles((10, 200), (64, 96), min_tile=(32, 48))
    assert grid.tile_hw == (32, 96) and grid.shape == (1, 3)
    assert plan_whole(10, 20, min_tile=(32, 48)).tile_hw == (32, 48)


def test_a_minimum_between_legal_sides_pads_to_the_next_legal_side() -> None:
    """A minimum that is no legal side (33: the legal 'same' sides of depth 5 are multiples of 16) pads to the next
    legal one, 48, never to the one below it."""
    assert plan_tiles((10, 10), 64, min_tile=33).tile_hw == (48, 48)
    assert plan_whole(10, 10, min_tile=33).tile_hw == (48, 48)
