"""The CPU kernels of unetrt._tiling equal the numpy reference bit for bit, and reject bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import extract_cases, stitch_cases
from tiling_reference import extract_reference, finish_reference, stitch_reference

from unetrt import _tiling

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)


@SETTINGS
@given(case=extract_cases(), threads=st.sampled_from([0, 1, 3]))
def test_extract_equals_reference(case: dict, threads: int) -> None:
    image, kwargs = case["image"], case["kwargs"]
    count, _, th, tw = case["out_shape"]
    out = np.full(case["out_shape"], 7, case["dtype"])
    result = _tiling.extract_tiles(image, out, **kwargs, threads=threads)
    assert result is out
    expected = extract_reference(image, (th, tw), count, kwargs["origin"], kwargs["step"], kwargs["grid"],
                                 kwargs["first"], kwargs["swap_rb"], kwargs["scale"], kwargs["mean"], kwargs["std"],
                                 case["dtype"], out_channels=case["out_shape"][1])
    assert np.array_equal(out.view(np.uint8), expected.view(np.uint8)), "not bit-identical"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("swap_rb", [True, False], ids=["bgr", "rgb"])
@pytest.mark.parametrize("channels", [3, 4], ids=["colour", "with alpha"])
def test_extract_turns_a_colour_image_gray_for_one_channel(dtype: type, swap_rb: bool, channels: int) -> None:
    """A colour frame for a 1-channel model: the kernel computes the BT.601 gray value of each pixel (in the image's
    channel order, alpha ignored), cv2.cvtColor's bit for bit for uint8 and uint16 and within 1.2e-7 of it for
    float32 (OpenCV's float sum rounds otherwise), then the model's one mean and std. Until this change the frame
    path converted with cv2.cvtColor on the host first, and the GPU path uploaded the host's gray image."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    shape = (21, 30, channels)
    image = (rng.random(shape, dtype=np.float32) if np.dtype(dtype).kind == "f"
             else rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True))
    kwargs = {"origin": (-5, -3), "step": (12, 12), "grid": (2, 3), "swap_rb": swap_rb, "scale": 1.0, "mean": [0.0],
              "std": [1.0]}
    out = np.empty((6, 1, 16, 16), np.float32)
    _tiling.extract_tiles(image, out, **kwargs)
    code = {(3, True): cv2.COLOR_BGR2GRAY, (3, False): cv2.COLOR_RGB2GRAY, (4, True): cv2.COLOR_BGRA2GRAY,
            (4, False): cv2.COLOR_RGBA2GRAY}[channels, swap_rb]
    gray = cv2.cvtColor(image, code)
    from_gray = np.empty_like(out)
    _tiling.extract_tiles(gray.astype(np.float32), from_gray, **{**kwargs, "swap_rb": False})
    if np.dtype(dtype).kind == "u":
        assert np.array_equal(out, from_gray)
    else:
        assert np.abs(out - from_gray).max() <= 1.2e-7
    expected = extract_reference(image, (16, 16), 6, (-5, -3), (12, 12), (2, 3), 0, swap_rb, 1.0, [0.0], [1.0],
                                 out_channels=1)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))
    # A gray picture stored as colour (three equal channels) gives its gray value exactly, for every dtype.
    _tiling.extract_tiles(np.dstack([image[..., 1]] * channels), out, **kwargs)
    _tiling.extract_tiles(image[..., 1], from_gray, **{**kwargs, "swap_rb": False})
    assert np.array_equal(out.view(np.uint32), from_gray.view(np.uint32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("layout", ["2-D", "H x W x 1", "flipped"])
def test_extract_replicates_a_gray_image_into_every_channel(dtype: type, layout: str) -> None:
    """A gray frame for a colour model: the kernel reads its one channel for each of the model's three, each with
    that channel's mean and std; the tiles equal those of the frame repeated to 3 channels on the host first (what
    the path did before 2026-12-07, uploading three times the bytes on the GPU path)."""
    rng = np.random.default_rng(3)
    gray = (rng.random((21, 30), dtype=np.float32) if np.dtype(dtype).kind == "f"
            else rng.integers(0, np.iinfo(dtype).max, (21, 30), dtype=dtype, endpoint=True))
    image = {"2-D": gray, "H x W x 1": gray[..., None], "flipped": gray[::-1, ::-1]}[layout]
    kwargs = {"origin": (-5, -3), "step": (12, 12), "grid": (2, 3), "scale": 1.0 / 255.0,
              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    from_gray, from_colour = (np.empty((6, 3, 16, 16), np.float32) for _ in range(2))
    _tiling.extract_tiles(image, from_gray, **kwargs)
    _tiling.extract_tiles(np.repeat(np.atleast_3d(image), 3, axis=2), from_colour, **kwargs)
    assert np.array_equal(from_gray.view(np.uint32), from_colour.view(np.uint32))
    assert not np.array_equal(from_gray[:, 0], from_gray[:, 2])  # each channel its own normalisation


@pytest.mark.parametrize("swap_rb", [True, False])
@pytest.mark.parametrize(("height", "width", "tile", "origin", "step", "grid"), [
    (192, 256, (192, 256), (0, 0), (1, 1), (1, 1)),   # camvid's one tile at 256x192
    (37, 53, (16, 37), (-5, 0), (9, 16), (3, 2)),     # rows inside and mirrored; the 37-px rows' 5-px tail
    (20, 70, (20, 33), (0, -6), (1, 20), (1, 3)),     # a tile crossing each side beside one inside
])
def test_packed_bgr_rows_inside_the_frame_equal_the_reference(height: int, width: int, tile: tuple[int, int],
                                                              origin: tuple[int, int], step: tuple[int, int],
                                                              grid: tuple[int, int], swap_rb: bool) -> None:
    """A camera frame's packed BGR bytes: tile rows that need no mirroring take a vectorised row loop; they
    equal the reference bit for bit as the mirrored ones do."""
    image = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    count = grid[0] * grid[1]
    out = np.full((count, 3, *tile), 7, np.float32)
    kwargs = {"origin": origin, "step": step, "grid": grid, "swap_rb": swap_rb, "scale": 1.0 / 255.0,
              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    _tiling.extract_tiles(image, out, **kwargs, threads=1)
    expected = extract_reference(image, tile, count, origin, step, grid, 0, swap_rb, kwargs["scale"],
                                 kwargs["mean"], kwargs["std"])
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32)), "not bit-identical"


@pytest.mark.parametrize("size", [1, 2, 5])
def test_padding_wider_than_image_bounces(size: int) -> None:
    """A 1 x size image in a 9-wide tile starting 4 px left of it: reflect without repeating the edge."""
    image = np.arange(size, dtype=np.uint8).reshape(1, size)
    out = np.empty((1, 1, 1, 9), np.float32)
    _tiling.extract_tiles(image, out, origin=(0, -4), step=(1, 1), grid=(1, 1), scale=1.0)
    period = max(2 * (size - 1), 1)
    expected = [min((i - 4) % period, period - (i - 4) % period) if size > 1 else 0 for i in range(9)]
    assert out[0, 0, 0].tolist() == expected


@SETTINGS
@given(case=stitch_cases())
def test_stitch_equals_reference(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    (height, width), (th, tw), (rows, cols) = case["hw"], case["tile"], case["grid"]
    tiles = rng.standard_normal((rows * cols, case["classes"], th, tw)).astype(case["dtype"])
    windows = {"window_y": rng.uniform(0.01, 1, th).astype(np.float32),
               "window_x": rng.uniform(0.01, 1, tw).astype(np.float32)}
    acc = np.zeros((case["classes"], height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    expected_acc, expected_weight = acc.copy(), weight.copy()
    blend = case["mode"] == "blend"
    for first in range(0, rows * cols, case["batch"]):
        chunk = tiles[first : first + case["batch"]]
        _tiling.stitch_tiles(chunk, acc, weight if blend else None, origin=case["origin"], step=case["step"],
                             grid=case["grid"], first=first, mode=case["mode"], threads=case["threads"],
                             **(windows if blend else {}))
        stitch_reference(chunk, expected_acc, expected_weight, case["origin"], case["step"], case["grid"], first,
                         case["mode"], **windows)
    assert np.array_equal(acc, expected_acc)
    assert np.array_equal(weight, expected_weight)
    if not blend:
        assert np.isin(acc, tiles.astype(np.float32)).all(), "crop must copy tile values unchanged"


@SETTINGS
@given(classes=st.integers(1, 5), height=st.integers(1, 20), width=st.integers(1, 20), seed=st.integers(0, 99),
       use_weight=st.booleans(), binary=st.booleans())
def test_finish_equals_reference(classes: int, height: int, width: int, seed: int, use_weight: bool,
                                 binary: bool) -> None:
    rng = np.random.default_rng(seed)
    classes = 1 if binary else classes
    acc = rng.standard_normal((classes, height, width)).astype(np.float32)
    acc[:, 0, 0] = 0.5  # a tie: numpy's argmax keeps the first class
    weight = rng.uniform(0.1, 2, (height, width)).astype(np.float32) if use_weight else None
    expected_logits, expected_mask = finish_reference(acc, weight, binary, 0.25)
    mask = np.empty((height, width), np.uint8)
    _tiling.finish(acc, weight, mask, binary=binary, threshold=0.25, write_logits=use_weight)
    assert np.array_equal(mask, expected_mask)
    assert np.array_equal(acc, expected_logits)


# --------------------------------------------------------------------------- bad input raises, never crashes

IMAGE = np.zeros((10, 12, 3), np.uint8)
GRID = {"origin": (0, 0), "step": (4, 4), "grid": (3, 3)}


def _out(n: int = 9, c: int = 3, dtype: type = np.float32) -> np.ndarray:
    return np.empty((n, c, 4, 4), dtype)


@pytest.mark.parametrize(("image", "out", "kwargs", "message"), [
    (IMAGE.astype(np.int16), _out(), GRID, "image dtype"),
    (IMAGE.astype(np.uint32), _out(), GRID, "image dtype"),
    (IMAGE.astype(np.float16), _out(), GRID, "uint8, uint16 or float32"),
    (IMAGE[None], _out(), GRID, "H x W or H x W x C"),
    (IMAGE[:0], _out(), GRID, "empty"),
    (np.zeros((10, 12, 5), np.uint8), _out(c=5), GRID, "1 to 4 channels"),
    (IMAGE, _out(dtype=np.float64), GRID, "out dtype"),
    (IMAGE, _out(dtype=np.uint8), GRID, "out dtype"),
    (IMAGE, _out()[:, :, :, ::2], GRID, "C-contiguous"),
    (IMAGE, np.empty((9, 3, 4), np.float32), GRID, "N x C"),
    (IMAGE, _out(c=2), GRID, "channels"),
    (IMAGE[..., :2], _out(c=1), GRID, "an image of 3 or 4 channels fills 1 channel with its gray value"),
    (IMAGE[..., :1], _out(c=5), GRID, "up to 4"),
    (IMAGE, _out(n=10), GRID, "out of range"),
    (IMAGE, _out(), {**GRID, "first": 1}, "out of range"),
    (IMAGE, _out(), {**GRID, "first": -1}, "out of range"),
    (IMAGE, _out(), {**GRID, "grid": (4, 3)}, "outside the image"),
    (IMAGE, _out(), {**GRID, "origin": (-4, 0)}, "outside the image"),
    (IMAGE, _out(), {**GRID, "step": (0, 4)}, "step"),
    (IMAGE, _out(), {**GRID, "origin": (-(2**40), 0)}, "out of range"),
    (IMAGE, _out(), {**GRID, "mean": [0.0]}, "one value per channel"),
    (IMAGE, _out(), {**GRID, "std": [1.0, 0.0, 1.0]}, "positive"),
    (IMAGE, _out(), {**GRID, "threads": -1}, "threads"),
    (IMAGE[..., 0], _out(c=1), {**GRID, "swap_rb": True}, "swap_rb"),
    (IMAGE.astype(">f4"), _out(), GRID, "byte order"),
])
def test_extract_rejects_bad_input(image: np.ndarray, out: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _tiling.extract_tiles(image, out, **kwargs)


def test_extract_takes_the_full_uint16_range() -> None:
    """16-bit camera frames: 65535 with scale 1/65535 is 1.0, and no value wraps."""
    image = np.array([[0, 1, 256, 65535]], np.uint16)
    out = np.empty((1, 1, 1, 4), np.float32)
    _tiling.extract_tiles(image, out, origin=(0, 0), step=(1, 4), grid=(1, 1), scale=1.0 / 65535.0)
    assert out[0, 0, 0].tolist() == (image[0].astype(np.float32) * np.float32(1.0 / 65535.0)).tolist()
    assert out[0, 0, 0, -1] == 1.0


def test_extract_rejects_read_only_output_and_wrong_types() -> None:
    out = _out()
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _tiling.extract_tiles(IMAGE, out, **GRID)
    with pytest.raises(TypeError):
        _tiling.extract_tiles([[1, 2]], _out(), **GRID)


ACC = np.zeros((2, 10, 12), np.float32)
TILES = np.zeros((9, 2, 4, 4), np.float32)


@pytest.mark.parametrize(("tiles", "acc", "kwargs", "message"), [
    (TILES.astype(np.float64), ACC, GRID, "tiles dtype"),
    (TILES, ACC.astype(np.float16), GRID, "acc dtype"),
    (np.ascontiguousarray(TILES[:, :1]), ACC, GRID, "classes"),
    (TILES[0], ACC, GRID, "N x K"),
    (TILES[:6], ACC, {**GRID, "step": (6, 4), "grid": (2, 3)}, "no value"),
    (TILES, ACC, {**GRID, "origin": (1, 0)}, "cover"),
    (TILES, ACC, {**GRID, "grid": (2, 3)}, "out of range"),
    (TILES, ACC, {**GRID, "mode": "mean"}, "mode"),
    (TILES, ACC, {**GRID, "mode": "blend"}, "needs weight"),
    (TILES[:, :, :, ::-1], ACC, GRID, "C-contiguous"),
])
def test_stitch_rejects_bad_input(tiles: np.ndarray, acc: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _tiling.stitch_tiles(tiles, acc.copy(), **kwargs)


def test_stitch_rejects_bad_blend_buffers() -> None:
    window = np.ones(4, np.float32)
    weight = np.zeros((10, 12), np.float32)
    blend = {**GRID, "mode": "blend"}
    with pytest.raises(ValueError, match="weight must have shape"):
        _tiling.stitch_tiles(TILES, ACC.copy(), weight[1:], window_y=window, window_x=window, **blend)
    with pytest.raises(ValueError, match="window_x must have shape"):
        _tiling.stitch_tiles(TILES, ACC.copy(), weight, window_y=window, window_x=window[:3], **blend)
    with pytest.raises(ValueError, match="window_y dtype"):
        _tiling.stitch_tiles(TILES, ACC.copy(), weight, window_y=window.astype(np.float64), window_x=window, **blend)


def test_finish_rejects_bad_input() -> None:
    mask = np.zeros((10, 12), np.uint8)
    with pytest.raises(ValueError, match="binary models have 1"):
        _tiling.finish(ACC.copy(), mask=mask, binary=True)
    with pytest.raises(ValueError, match="mask must have shape"):
        _tiling.finish(ACC.copy(), mask=np.zeros((10, 11), np.uint8))
    with pytest.raises(ValueError, match="mask dtype"):
        _tiling.finish(ACC.copy(), mask=mask.astype(np.int8))
    with pytest.raises(ValueError, match="nothing to do"):
        _tiling.finish(ACC.copy())
    with pytest.raises(ValueError, match="256 classes"):
        _tiling.finish(np.zeros((300, 2, 2), np.float32), mask=np.zeros((2, 2), np.uint8))


def test_cuda_entry_points_raise_clearly_without_a_gpu() -> None:
    if _tiling.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present: the CUDA tests cover these entry points")
    with pytest.raises(RuntimeError, match="CUDA"):
        _tiling.extract_tiles_cuda(1024, (10, 12), 3, (36, 3, 1), "uint8", 4096, (9, 3, 4, 4), "float32", **GRID)
    with pytest.raises(RuntimeError, match="CUDA"):
        _tiling.finish_cuda(1024, (2, 10, 12), mask_ptr=4096)
    # Argument checks come first, so a bad call is a ValueError on any machine.
    with pytest.raises(ValueError, match="out of range"):
        _tiling.extract_tiles_cuda(1024, (10, 12), 3, (36, 3, 1), "uint8", 4096, (10, 3, 4, 4), "float32", **GRID)
    with pytest.raises(ValueError, match="dtype must be"):
        _tiling.stitch_tiles_cuda(1024, (9, 2, 4, 4), "float64", 4096, (2, 10, 12), **GRID)
