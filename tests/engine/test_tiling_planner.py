"""unetrt.tiling: the planner, and identity predictors proving extract + stitch return the input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unetrt.geometry import valid_output_size
from unetrt.tiling import (
    WINDOW_FLOOR,
    TiledInferer,
    blend_window,
    cuda_array_args,
    extract_call,
    legal_tile_sizes,
    plan_tiles,
    plan_whole,
    tile_runs,
    tiled_inference,
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
    ({"tile": 64, "overlap": -2}, "overlap must be in"),
    ({"tile": (64, 64, 64)}, "pair"),
    ({"tile": 64, "padding": "full"}, "padding must be"),
])
def test_bad_plans_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_tiles((300, 300), **kwargs)


def _identity_same(batch: np.ndarray) -> np.ndarray:
    return batch.copy()


SIZES = st.tuples(st.integers(1, 90), st.integers(1, 90))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(size=SIZES, tile=st.sampled_from([8, 16, 32]), overlap=st.integers(0, 7), batch=st.integers(1, 5),
       channels=st.sampled_from([1, 3]), blend=st.sampled_from(["crop", "gaussian", "linear"]))
def test_identity_predictor_returns_the_image(size: tuple[int, int], tile: int, overlap: int, batch: int,
                                              channels: int, blend: str) -> None:
    rng = np.random.default_rng(size[0] * 97 + size[1])
    image = rng.integers(0, 256, (*size, channels), dtype=np.uint8)[:, ::-1]  # non-contiguous on purpose
    grid = plan_tiles(size, tile, overlap, depth=3)
    result = tiled_inference(image, _identity_same, grid, blend=blend, batch_size=batch, scale=1.0,
                             binary=False)
    expected = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
    if blend == "crop":
        assert np.array_equal(result.logits, expected)
    else:
        np.testing.assert_allclose(result.logits, expected, rtol=1e-6, atol=1e-4)
    assert result.mask is not None and np.array_equal(result.mask, result.logits.argmax(axis=0))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(size=SIZES, tile_index=st.integers(0, 3), swap=st.booleans())
def test_identity_through_a_valid_network_is_exact(size: tuple[int, int], tile_index: int, swap: bool) -> None:
    """A 'valid' identity network drops its context margin; crop stitching gives back the image exactly."""
    tile = legal_tile_sizes(30, 120, "valid", depth=3)[tile_index]
    grid = plan_tiles(size, tile, padding="valid", depth=3)
    my, mx = grid.margin

    def valid_identity(batch: np.ndarray) -> np.ndarray:
        return batch[:, :, my : batch.shape[2] - my, mx : batch.shape[3] - mx].copy()

    image = np.random.default_rng(7).integers(0, 256, (*size, 3), dtype=np.uint8)
    result = tiled_inference(image, valid_identity, grid, blend="crop", scale=1.0, swap_rb=swap,
                             mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0))
    rgb = image[..., ::-1] if swap else image
    expected = rgb.transpose(2, 0, 1).astype(np.float32) - np.array([1, 2, 3], np.float32)[:, None, None]
    assert np.array_equal(result.logits, expected)
    assert result.mask is None


def test_binary_mask_thresholds_at_zero() -> None:
    image = np.array([[0, 10], [20, 0]], np.uint8)
    grid = plan_tiles(image.shape, 4, depth=3)
    result = tiled_inference(image, _identity_same, grid, scale=1.0, mean=(5.0,), binary=True)
    assert result.mask is not None and result.mask.tolist() == [[0, 1], [1, 0]]


def test_bad_predictor_and_grid_raise() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    grid = plan_tiles((20, 20), 8, depth=3)
    with pytest.raises(ValueError, match="predictor returned shape"):
        tiled_inference(image, lambda b: b[:, :, :4], grid)
    with pytest.raises(ValueError, match="numpy array"):
        tiled_inference(image, lambda b: b.tolist(), grid)
    with pytest.raises(ValueError, match="re-plan"):
        tiled_inference(np.zeros((21, 20, 3), np.uint8), _identity_same, grid)
    with pytest.raises(ValueError, match="blend must be"):
        tiled_inference(image, _identity_same, grid, blend="max")
    with pytest.raises(ValueError, match="batch_size"):
        tiled_inference(image, _identity_same, grid, batch_size=0)


def test_inferer_holds_settings_and_plans_per_image() -> None:
    inferer = TiledInferer(16, overlap=4, depth=3, blend="linear", batch_size=2, scale=1.0)
    image = np.random.default_rng(3).integers(0, 256, (50, 33, 3), dtype=np.uint8)
    assert inferer.plan(image.shape[:2]).shape == (4, 3)
    out = inferer(image, _identity_same).logits
    np.testing.assert_allclose(out, image.transpose(2, 0, 1), rtol=1e-6)
    with pytest.raises(ValueError, match="not legal"):
        TiledInferer(15, depth=3)


def test_blend_windows_are_positive_with_unit_peak() -> None:
    for kind in ("gaussian", "linear"):
        for size in (1, 2, 7, 64):
            window = blend_window(kind, size)
            assert window.dtype == np.float32 and window.shape == (size,)
            assert window.min() > 0 and window.max() == 1.0
            assert np.array_equal(window, window[::-1])
    with pytest.raises(ValueError, match="kind"):
        blend_window("box", 4)


def test_cuda_array_args_reads_the_interface() -> None:
    class FakeDeviceArray:
        def __init__(self, typestr: str = "<f2") -> None:
            self.__cuda_array_interface__ = {"data": (1234, False), "shape": (2, 3, 4), "typestr": typestr,
                                             "strides": None, "version": 3}

    args = cuda_array_args(FakeDeviceArray())
    assert args.ptr == 1234 and args.shape == (2, 3, 4) and args.strides == (24, 8, 2) and args.dtype == "float16"
    assert cuda_array_args(FakeDeviceArray("<u2")).dtype == "uint16"  # 16-bit camera frames
    with pytest.raises(ValueError, match="is not uint8"):
        cuda_array_args(FakeDeviceArray("<f8"))
    with pytest.raises(ValueError, match="__cuda_array_interface__"):
        cuda_array_args(np.zeros(3))


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


def test_shifted_last_tile_sees_only_real_pixels() -> None:
    image = np.random.default_rng(8).integers(0, 256, (100, 70), dtype=np.uint8)
    grid = plan_tiles(image.shape, 32, overlap=8, depth=3)
    assert grid.shift == (4, 10)
    seen: list[np.ndarray] = []

    def record(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return batch.copy()

    result = tiled_inference(image, record, grid, blend="gaussian", batch_size=3, scale=1.0)
    tiles = np.concatenate(seen)[:, 0]
    for tile in range(grid.count):
        y0, x0 = grid.tile_origin(*divmod(tile, grid.shape[1]))
        assert y0 >= 0 and x0 >= 0 and y0 + 32 <= 100 and x0 + 32 <= 70
        assert np.array_equal(tiles[tile], image[y0 : y0 + 32, x0 : x0 + 32])
    np.testing.assert_allclose(result.logits[0], image, rtol=1e-6, atol=1e-4)


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
