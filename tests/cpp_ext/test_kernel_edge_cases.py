"""Edge cases of the kernels found by mutation testing: the packed-BGR fast path's bounds and layouts, exact ties of
the finish's threshold and NaN rules, and argument checks at their boundaries."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from tiling_reference import extract_reference, finish_reference

from unetrt import _tiling, _tiling_emu

MODULES = pytest.mark.parametrize("module", [_tiling, _tiling_emu], ids=["cpu", "emulated"])
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _extract(module: ModuleType, image: np.ndarray, tile: tuple[int, int], origin: tuple[int, int],
             step: tuple[int, int], grid: tuple[int, int], swap_rb: bool = False) -> None:
    """Extract every tile of the grid with the ImageNet normalisation and compare with the reference bit for bit."""
    count = grid[0] * grid[1]
    out = np.full((count, 3, *tile), 7, np.float32)
    module.extract_tiles(image, out, origin=origin, step=step, grid=grid, swap_rb=swap_rb, scale=1.0 / 255.0,
                         mean=MEAN, std=STD, threads=1)
    expected = extract_reference(image, tile, count, origin, step, grid, 0, swap_rb, 1.0 / 255.0, MEAN, STD)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32)), "not bit-identical"


@MODULES
@pytest.mark.parametrize("width", [15, 31, 47])
def test_packed_rows_of_fifteen_past_a_multiple_of_sixteen(module: ModuleType, width: int) -> None:
    """Tile rows of 16 n + 15 packed BGR pixels: the vectorised loop takes 16 pixels at a time and leaves the last 15
    to the scalar loop; it must not store a 16th value into the next row or the next channel's plane."""
    image = np.random.default_rng(width).integers(0, 256, (6, width + 4, 3), dtype=np.uint8)
    _extract(module, image, (3, width), (0, 2), (3, 1), (2, 1))


@MODULES
@pytest.mark.parametrize("swap_rb", [False, True])
def test_packed_row_ending_one_past_the_right_edge_is_mirrored(module: ModuleType, swap_rb: bool) -> None:
    """A tile that starts inside the frame and ends one pixel past its right edge: its last column is mirrored
    (x = width reflects to width - 2), not read from past the end of the row."""
    image = np.random.default_rng(3).integers(0, 256, (9, 40, 3), dtype=np.uint8)
    _extract(module, image, (9, 21), (0, 20), (9, 1), (1, 1), swap_rb)
    _extract(module, image, (4, 17), (0, 24), (4, 1), (3, 1), swap_rb)


@MODULES
@pytest.mark.parametrize("swap_rb", [False, True])
def test_packed_row_starting_one_before_the_left_edge_is_mirrored(module: ModuleType, swap_rb: bool) -> None:
    """A tile that starts one pixel left of the frame (an overlap tile's padding) and ends inside it: its first
    column is mirrored (x = -1 reflects to 1), not read from the 3 bytes before the row (the row above's last pixel,
    or before the frame)."""
    image = np.random.default_rng(4).integers(0, 256, (9, 40, 3), dtype=np.uint8)
    _extract(module, image, (9, 21), (0, -1), (9, 1), (1, 1), swap_rb)
    _extract(module, image, (4, 17), (0, -1), (4, 1), (3, 1), swap_rb)

@MODULES
@pytest.mark.parametrize("swap_rb", [False, True])
def test_channel_reversed_view_is_read_through_its_strides(module: ModuleType, swap_rb: bool) -> None:
    """frame[..., ::-1] (an RGB view of a BGR frame: 3-byte pixels, channel stride -1) is not packed BGR; each
    channel is read through the view's strides."""
    bgr = np.random.default_rng(5).integers(0, 256, (12, 40, 3), dtype=np.uint8)
    _extract(module, bgr[..., ::-1], (12, 32), (0, 4), (12, 1), (1, 1), swap_rb)


@MODULES
def test_finish_first_nan_wins(module: ModuleType) -> None:
    """Several NaN classes at a pixel: the first NaN wins, as numpy's argmax (also after dividing by the weight)."""
    acc = np.array([[[1.0, np.nan, 5.0, np.nan]], [[np.nan, np.nan, 2.0, 3.0]], [[np.nan, 0.0, np.nan, np.nan]]],
                   np.float32)
    for weight in (None, np.full((1, 4), 2.0, np.float32)):
        mask = np.full((1, 4), 77, np.uint8)
        module.finish(acc.copy(), weight, mask)
        assert mask.tolist() == [[1, 0, 2, 0]]
        assert np.array_equal(mask, finish_reference(acc, weight, binary=False)[1])


@MODULES
def test_finish_binary_threshold_is_strict(module: ModuleType) -> None:
    """Binary masks are value > threshold: a logit exactly at the threshold is background."""
    acc = np.array([[[0.25, np.nextafter(np.float32(0.25), np.float32(1)), 0.0, -1.0]]], np.float32)
    mask = np.full((1, 4), 77, np.uint8)
    module.finish(acc.copy(), mask=mask, binary=True, threshold=0.25)
    assert mask.tolist() == [[0, 1, 0, 0]]
    at_zero = np.zeros((1, 1, 3), np.float32)
    module.finish(at_zero, mask=mask[:, :3].copy(), binary=True)
    module.finish_resized(at_zero, mask[:, :3], rect=(0, 0, 1, 3), binary=True)
    assert mask[:, :3].tolist() == [[0, 0, 0]]


# --------------------------------------------------------------------------- reads stay inside the arrays

GUARDED_RUN = r"""
import ctypes, mmap, sys
import numpy as np
from unetrt import _tiling

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def guarded(values):
    '''A C-contiguous copy of values ending exactly where an unreadable page begins.'''
    pages = -(-values.nbytes // PAGE) + 1
    memory = mmap.mmap(-1, pages * PAGE)
    start = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    if libc.mprotect(start + (pages - 1) * PAGE, PAGE, 0) != 0:
        sys.exit(3)
    out = np.frombuffer(memory, values.dtype, values.size, (pages - 1) * PAGE - values.nbytes).reshape(values.shape)
    out[...] = values
    return out


rng = np.random.default_rng(7)
for classes, src_hw, out_hw in [(3, (20, 29), (45, 67)), (11, (48, 64), (90, 120)), (2, (9, 13), (9, 40))]:
    scores = rng.standard_normal((classes, *src_hw)).astype(np.float32)
    mask = np.empty(out_hw, np.uint8)
    _tiling.finish_resized(guarded(scores), mask, rect=(0, 0, *src_hw), threads=1)
    reference = np.empty(out_hw, np.uint8)
    _tiling.finish_resized(scores, reference, rect=(0, 0, *src_hw), threads=1)
    assert np.array_equal(mask, reference)
print("ok")
"""


def test_finish_resized_reads_nothing_past_the_scores() -> None:
    """The row loops read 8 floats at a time: at the end of the last class's last row they must read a padded copy,
    not past the scores (here followed by an unreadable page; the run is in a child process, which a stray read
    kills with SIGSEGV)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", GUARDED_RUN], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


# --------------------------------------------------------------------------- argument checks at their boundaries

IMAGE = np.zeros((10, 12, 3), np.uint8)


@MODULES
def test_extract_rejects_a_last_tile_starting_at_the_edge(module: ModuleType) -> None:
    """A tile starting at row 10 of a 10-row image lies wholly outside it: a planning error, not something to
    mirror. One row earlier it overlaps the image and is fine."""
    out = np.empty((3, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="outside the image"):
        module.extract_tiles(IMAGE, out, origin=(2, 0), step=(4, 4), grid=(3, 1))
    with pytest.raises(ValueError, match="outside the image"):
        module.extract_tiles(IMAGE, out, origin=(0, 4), step=(4, 4), grid=(1, 3))
    module.extract_tiles(IMAGE, out, origin=(1, 0), step=(4, 4), grid=(3, 1))


@MODULES
def test_extract_rejects_strides_that_split_items(module: ModuleType) -> None:
    """A uint16 view whose pixels lie 3 bytes apart cannot be read item by item."""
    data = np.zeros(64, np.uint8)
    image = np.lib.stride_tricks.as_strided(data.view(np.uint16)[:1], shape=(4, 5), strides=(16, 3))
    with pytest.raises(ValueError, match="multiples of the item size"):
        module.extract_tiles(image, np.empty((1, 1, 4, 5), np.float32), origin=(0, 0), step=(1, 1), grid=(1, 1))


@MODULES
def test_stitch_rejects_a_one_pixel_gap_between_tiles(module: ModuleType) -> None:
    """Tiles 4 wide every 5 px leave every fifth column without a value."""
    tiles = np.zeros((3, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="no value"):
        module.stitch_tiles(tiles, np.zeros((2, 4, 14), np.float32), origin=(0, 0), step=(4, 5), grid=(1, 3))


@MODULES
def test_finish_rejects_257_classes(module: ModuleType) -> None:
    """Class 256 does not fit in a uint8 mask (it would read as class 0)."""
    mask = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="256 classes"):
        module.finish(np.zeros((257, 2, 2), np.float32), mask=mask)
    module.finish(np.zeros((256, 2, 2), np.float32), mask=mask)


@MODULES
def test_finish_rejects_a_strided_weight(module: ModuleType) -> None:
    acc = np.zeros((2, 3, 4), np.float32)
    weight = np.ones((3, 8), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="weight must be C-contiguous"):
        module.finish(acc, weight, np.zeros((3, 4), np.uint8))


@MODULES
def test_finish_resized_rejects_a_rect_of_zero_width(module: ModuleType) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        module.finish_resized(np.zeros((3, 8, 10), np.float32), np.zeros((4, 4), np.uint8), rect=(0, 0, 8, 0))
    with pytest.raises(ValueError, match="non-empty"):
        module.finish_resized(np.zeros((3, 8, 10), np.float32), np.zeros((4, 4), np.uint8), rect=(0, 10, 8, 0))


@MODULES
def test_finish_rejects_a_weight_of_the_wrong_shape(module: ModuleType) -> None:
    with pytest.raises(ValueError, match="weight must have shape"):
        module.finish(np.zeros((2, 3, 4), np.float32), np.ones((3, 3), np.float32), np.zeros((3, 4), np.uint8))


@MODULES
def test_finish_resized_rejects_a_strided_weight(module: ModuleType) -> None:
    weight = np.ones((8, 20), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="weight must be C-contiguous"):
        module.finish_resized(np.zeros((3, 8, 10), np.float32), np.zeros((4, 4), np.uint8), rect=(0, 0, 8, 10),
                              weight=weight)


@MODULES
def test_stitch_rejects_strided_windows(module: ModuleType) -> None:
    tiles = np.zeros((9, 2, 4, 4), np.float32)
    window = np.ones(8, np.float32)[::2]
    with pytest.raises(ValueError, match="window_y must be C-contiguous"):
        module.stitch_tiles(tiles, np.zeros((2, 10, 12), np.float32), np.zeros((10, 12), np.float32),
                            origin=(0, 0), step=(4, 4), grid=(3, 3), mode="blend", window_y=window,
                            window_x=np.ones(4, np.float32))


@MODULES
def test_extract_rejects_a_non_finite_mean(module: ModuleType) -> None:
    """A NaN or infinite mean would turn every tile into NaN."""
    for mean in ([0.0, float("nan"), 0.0], [float("inf"), 0.0, 0.0]):
        with pytest.raises(ValueError, match="mean values finite"):
            module.extract_tiles(IMAGE, np.empty((1, 3, 4, 4), np.float32), origin=(0, 0), step=(4, 4),
                                 grid=(1, 1), mean=mean)
