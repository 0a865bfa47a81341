"""Overlap-tile geometry for images of any size: the tile grid, the kernels' calls over it, the blend windows.

Tiles are cut with mirror padding wherever they reach past the image (the U-Net paper's overlap-tile
strategy). A 'same' network's tiles overlap by ``overlap`` pixels; a 'valid' network's tiles additionally
carry its context margin (92 px for 572 -> 388), so their outputs abut exactly. Outputs are stitched by
cropping each tile to its core ('crop') or by a weighted average with a Gaussian or linear window
('gaussian', 'linear'). This module only plans; :class:`unetrt.frame_path.FramePath` runs frames through a
grid with the native kernels of :mod:`unetrt._tiling` (on the CPU or on a GPU, one path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import PADDING_MODES, is_legal_size, legal_sizes, nearest_legal_sizes, plan_padding, valid_output_size
from .values import is_whole_number

BLEND_MODES = ("gaussian", "linear", "crop")
GAUSSIAN_SIGMA_SCALE = 0.125  # sigma as a fraction of the tile side, as MONAI's sliding-window inference
# MONAI clamps its importance map at 1e-3: without a floor, a pixel seen only by tile edges (exp(-8) ~ 3e-4)
# takes its class from whichever edge is least tiny, which alone moved 4 % of argmax pixels on a 1440 x 1088 frame.
WINDOW_FLOOR = 1e-3


def check_blend(blend: str) -> str:
    """The blend mode, checked (the one check of it in unetrt).

    Args:
        blend: 'gaussian' or 'linear' (weighted average of overlapping tile outputs) or 'crop' (each output
            keeps the middle of its overlaps; exact for 'valid' networks).

    Returns:
        ``blend`` itself.

    Raises:
        ValueError: on any other value, naming the modes.

    Example:
        >>> check_blend("crop")
        'crop'
    """
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
    return blend


@dataclass(frozen=True)
class TileGrid:
    """A grid of network tiles over one image: regular slots, the last row and column moved back inside.

    Slot ``(r, c)`` starts at ``origin + (r, c) * step`` in image coordinates (its output at
    ``output_origin + (r, c) * step``, ``output_hw`` pixels); the stitch kernels see this regular grid. The
    tiles of the last row (column) run ``shift`` px before their slot, so that they end at the image's edge
    instead of mirror-padding up to a whole step past it (as MONAI's sliding window places its last window);
    their outputs move forward by ``shift`` into the slot before stitching (:meth:`tile_origin`).

    Attributes:
        image_hw: the image's (height, width).
        tile_hw: network input per tile.
        output_hw: network output per tile (smaller by ``2 * margin`` for 'valid' networks).
        margin: context margin lost on each side, per axis (0 for 'same').
        origin: top-left of tile 0's input.
        step: distance between neighbouring slots.
        shape: (rows, cols) of tiles.
        shift: how far the last row's and last column's tiles lie before their slots (0 when one tile spans
            the axis or the slots end at the image's edge).
    """

    image_hw: tuple[int, int]
    tile_hw: tuple[int, int]
    output_hw: tuple[int, int]
    margin: tuple[int, int]
    origin: tuple[int, int]
    step: tuple[int, int]
    shape: tuple[int, int]
    shift: tuple[int, int] = (0, 0)

    @property
    def count(self) -> int:
        """Number of tiles."""
        return self.shape[0] * self.shape[1]

    @property
    def output_origin(self) -> tuple[int, int]:
        """Where tile 0's network output starts in image coordinates."""
        return self.origin[0] + self.margin[0], self.origin[1] + self.margin[1]

    @property
    def overlap(self) -> tuple[int, int]:
        """Pixels shared by neighbouring outputs, per axis (0 when one tile spans the axis)."""
        return tuple(0 if n == 1 else o - s for n, o, s in zip(self.shape, self.output_hw, self.step))  # type: ignore[return-value]

    def tile_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left corner of tile ``(row, col)``'s network input in image coordinates (the slot, less ``shift``
        in the last row and column).

        Example:
            >>> plan_tiles((100, 64), 64, overlap=16).tile_origin(1, 0)
            (36, 0)
        """
        return (self.origin[0] + row * self.step[0] - (self.shift[0] if row == self.shape[0] - 1 else 0),
                self.origin[1] + col * self.step[1] - (self.shift[1] if col == self.shape[1] - 1 else 0))

    def axis_starts(self, axis: int) -> list[int]:
        """Where each tile's network *output* starts along ``axis`` (0 rows, 1 columns), in image coordinates.

        Raises:
            ValueError: when ``axis`` is not 0 or 1.

        Example:
            >>> plan_tiles((100, 64), 64, overlap=16).axis_starts(0)
            [0, 36]
        """
        if not is_whole_number(axis) or axis not in (0, 1):
            raise ValueError(f"axis must be 0 (rows) or 1 (columns), got {axis!r}")
        count, start, step = self.shape[axis], self.output_origin[axis], self.step[axis]
        return [start + i * step - (self.shift[axis] if i == count - 1 else 0) for i in range(count)]


def _pair(value: object, name: str, single: bool = True) -> tuple[int, int]:
    """``value`` as a (height, width) pair of ints; with ``single``, one int stands for both."""
    if single and is_whole_number(value):
        pair: tuple[object, ...] = (value, value)
    else:
        try:
            pair = tuple(value)  # type: ignore[arg-type]
        except TypeError:  # not iterable: a float, None, a 0-d array
            pair = ()
    if len(pair) != 2 or not all(is_whole_number(v) for v in pair):
        what = "an int or a (height, width) pair of ints" if single else "a (height, width) pair of ints"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(pair[0]), int(pair[1])  # type: ignore[call-overload]


def legal_tile_sizes(lo: int, hi: int, padding: str = "same", depth: int = 5) -> list[int]:
    """Tile sides in ``[lo, hi]`` the network accepts: multiples of ``2 ** (depth - 1)`` ('same'), or sizes where
    every 2x2 max-pool sees an even size ('valid').

    Example:
        >>> legal_tile_sizes(500, 600, "valid")
        [508, 524, 540, 556, 572, 588]
    """
    return legal_sizes(lo, hi, padding, depth)


def _check_tile(tile: int, padding: str, depth: int) -> None:
    if not is_legal_size(tile, padding, depth):
        below, above = nearest_legal_sizes(tile, padding, depth)
        nearest = f"{below} or {above}" if below is not None else f"{above}"
        raise ValueError(f"tile side {tile} is not legal for a {padding!r} U-Net of depth {depth}; "
                         f"nearest legal sides: {nearest} (see unetrt.tiling.legal_tile_sizes)")


def _plan_axis(size: int, tile: int, overlap: int, padding: str, depth: int,
               align: int, least: int = 1) -> tuple[int, int, int, int, int, int, int]:
    """(tile_in, tile_out, margin, origin, step, count, shift) along one axis."""
    _check_tile(tile, padding, depth)
    # A tile larger than the image needs wastes work: shrink it to the smallest legal size that still covers it,
    # but not below the smallest input the backend takes (a TensorRT profile's minimum), to which a shorter image
    # is mirror-padded as it is to a legal size.
    fits = max(plan_padding(size, padding, depth).network_input, nearest_legal_sizes(least, padding, depth)[1])
    tile_in = min(tile, fits)
    tile_out = tile_in if padding == "same" else valid_output_size(tile_in, depth)
    assert tile_out is not None  # tile_in is legal
    margin = (tile_in - tile_out) // 2
    if tile_out >= size:
        return tile_in, tile_out, margin, -margin, tile_out, 1, 0
    if not 0 <= overlap < tile_out:
        raise ValueError(f"overlap must be in [0, {tile_out}) for output tiles of {tile_out} px, got {overlap}")
    step = tile_out - overlap
    count = -(-(size - tile_out) // step) + 1
    slot = (count - 1) * step
    # The last tile ends at the image's edge, its start rounded up to the network's pooling grid.
    last = -(-(size - tile_out) // align) * align
    return tile_in, tile_out, margin, -margin, step, count, slot - min(last, slot)


def plan_tiles(image_hw: Sequence[int], tile: int | Sequence[int], overlap: int | Sequence[int] = 0,
               padding: str = "same", depth: int = 5, align: int = 1,
               min_tile: int | Sequence[int] = 1) -> TileGrid:
    """The tile grid covering an image.

    Args:
        image_hw: the image's (height, width) as fed to the network.
        tile: the network's input tile side, or (height, width); must be legal for ``padding`` and ``depth``.
            Tiles are shrunk to the smallest legal size that covers a smaller image.
        overlap: pixels neighbouring *outputs* share ('same': also the inputs' overlap). 'valid' networks
            need none: their context margin already supplies the surroundings.
        padding: the network's convolutions, 'same' or 'valid'.
        depth: the network's resolution levels.
        align: the last row's and column's tiles start on a multiple of this (e.g. the network's size multiple,
            which keeps every tile on the untiled image's pooling grid); 1 places them exactly at the edge.
        min_tile: the smallest input side the backend takes, or (height, width) (a TensorRT engine's optimisation
            profile minimum): a shorter axis gets one tile of the smallest legal side at or above it, mirror-padded,
            whose output is cropped back to the image.

    Returns:
        The grid. Where the image is at least a tile long, every tile lies inside it (the last one up to
        ``align - 1`` px past its edge); a shorter axis gets one tile, mirror-padded.

    Raises:
        ValueError: on an illegal tile (naming the nearest legal ones), a tile, overlap or image size that is no
            int (or pair of ints), a bad overlap or align, or an empty image.

    Example:
        >>> grid = plan_tiles((1000, 800), 572, padding="valid")
        >>> grid.output_hw, grid.origin, grid.shape
        ((388, 388), (-92, -92), (3, 3))
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    height, width = _pair(image_hw, "image_hw", single=False)
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1 x 1, got {height} x {width}")
    if not isinstance(align, (int, np.integer)) or align < 1:
        raise ValueError(f"align must be a positive int, got {align!r}")
    tiles, overlaps, least = _pair(tile, "tile"), _pair(overlap, "overlap"), _pair(min_tile, "min_tile")
    if min(least) < 1:
        raise ValueError(f"min_tile must be at least 1, got {min_tile!r}")
    rows = _plan_axis(height, tiles[0], overlaps[0], padding, depth, int(align), least[0])
    cols = _plan_axis(width, tiles[1], overlaps[1], padding, depth, int(align), least[1])
    return TileGrid(image_hw=(height, width), tile_hw=(rows[0], cols[0]), output_hw=(rows[1], cols[1]),
                    margin=(rows[2], cols[2]), origin=(rows[3], cols[3]), step=(rows[4], cols[4]),
                    shape=(rows[5], cols[5]), shift=(rows[6], cols[6]))


def tile_runs(grid: TileGrid, jobs: Sequence[tuple[int, int]], regular: bool) -> list[tuple[int, int, int]]:
    """Split ``(frame, tile)`` jobs into runs the kernels take in one call: ``(start, count, frame)`` with
    consecutive tiles of one frame. With ``regular=False`` (extraction from a grid that shifts its last tiles,
    whose origins leave the regular grid), a run also stays in one tile row and a shifted last column is a run
    of its own.

    Example:
        >>> tile_runs(plan_tiles((64, 64), 32), [(0, 0), (0, 1), (0, 2), (1, 0)], regular=True)
        [(0, 3, 0), (3, 1, 1)]
    """
    runs: list[tuple[int, int, int]] = []
    cols = grid.shape[1]
    for index, (frame, tile) in enumerate(jobs):
        if runs:
            start, count, run_frame = runs[-1]
            joins = run_frame == frame and tile == jobs[index - 1][1] + 1
            if not regular and grid.shift != (0, 0):
                col = tile % cols
                joins = joins and col != 0 and not (grid.shift[1] and col == cols - 1)
            if joins:
                runs[-1] = (start, count + 1, frame)
                continue
        runs.append((index, 1, frame))
    return runs


def extract_call(grid: TileGrid, tile: int) -> tuple[tuple[int, int], tuple[int, int], int]:
    """``(origin, grid, first)`` of the regular grid an extract call starting at ``tile`` uses: the whole grid
    when nothing is shifted, else the tile's row (its regular columns, or the shifted last column alone).

    Example:
        >>> extract_call(plan_tiles((100, 64), 64, overlap=16), 1)
        ((36, 0), (1, 1), 0)
    """
    if grid.shift == (0, 0):
        return grid.origin, grid.shape, tile
    cols = grid.shape[1]
    row, col = divmod(tile, cols)
    y0, x0 = grid.tile_origin(row, col)
    if grid.shift[1] and col == cols - 1:
        return (y0, x0), (1, 1), 0
    return (y0, grid.origin[1]), (1, cols - (1 if grid.shift[1] else 0)), col


def shift_tile_output(tile: np.ndarray, axis: int, pixels: int) -> None:
    """Move one K x h x w tile output ``pixels`` toward the start of ``axis`` (1 rows, 2 columns), in place: a
    shifted last tile's output then lines up with its slot (:class:`TileGrid`).

    Raises:
        ValueError: when ``tile`` is no K x h x w array, ``axis`` is not 1 or 2, or ``pixels`` is no int in
            ``[0, side)`` (a grid's shift is always shorter than the tile output it moves).

    Example:
        >>> tile = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
        >>> shift_tile_output(tile, 2, 1); tile.tolist()
        [[[1.0, 2.0, 3.0, 3.0]]]
    """
    if not isinstance(tile, np.ndarray) or tile.ndim != 3:
        raise ValueError(f"tile must be a K x h x w array, got {getattr(tile, 'shape', type(tile).__name__)}")
    if not is_whole_number(axis) or axis not in (1, 2):
        raise ValueError(f"axis must be 1 (rows) or 2 (columns) of a K x h x w tile, got {axis!r}")
    size = tile.shape[axis]
    if not is_whole_number(pixels) or not 0 <= pixels < size:
        raise ValueError(f"pixels must be an int in [0, {size}) for a tile {size} px long on axis {axis}, "
                         f"got {pixels!r}")
    # numpy copes with the overlap of source and destination.
    if axis == 1:
        tile[:, : size - pixels] = tile[:, pixels:]
    else:
        tile[:, :, : size - pixels] = tile[:, :, pixels:]


def plan_whole(height: int, width: int, padding: str = "same", depth: int = 5,
               min_tile: int | Sequence[int] = 1) -> TileGrid:
    """The one-tile grid of an image that goes through the network whole: mirror-padded to the smallest legal
    input (at the end for 'same' networks; with the context margin around it for 'valid' ones) that is at least
    ``min_tile`` (the smallest input the backend takes: a TensorRT profile's minimum, as in :func:`plan_tiles`).

    Raises:
        ValueError: when ``height`` or ``width`` is no positive int, or ``min_tile`` no int (or pair) >= 1.

    Example:
        >>> plan_whole(360, 480).tile_hw
        (368, 480)
        >>> plan_whole(20, 40, min_tile=64).tile_hw
        (64, 64)
    """
    for name, side in (("height", height), ("width", width)):
        if not is_whole_number(side) or side < 1:
            raise ValueError(f"image {name} must be a positive int, got {side!r}")
    least = _pair(min_tile, "min_tile")
    if min(least) < 1:
        raise ValueError(f"min_tile must be at least 1, got {min_tile!r}")
    padded = tuple(max(plan_padding(side, padding, depth).network_input, nearest_legal_sizes(low, padding, depth)[1])
                   for side, low in zip((height, width), least))
    return plan_tiles((height, width), padded, 0, padding, depth, min_tile=least)


def blend_window(kind: str, size: int) -> np.ndarray:
    """A 1-D blending window of ``size`` float32 weights, all positive, peak 1.

    'gaussian': sigma = size / 8 around the centre, floored at :data:`WINDOW_FLOOR` (as MONAI);
    'linear': a tent falling to the edges.

    Raises:
        ValueError: on an unknown kind or a size that is no int of at least 1.

    Example:
        >>> blend_window("linear", 4).tolist()
        [0.5, 1.0, 1.0, 0.5]
    """
    if not is_whole_number(size) or size < 1:
        # A fractional size would give a window off-centre by half a pixel.
        raise ValueError(f"window size must be an int >= 1 (a tile output's side in pixels), got {size!r}")
    size = int(size)
    index = np.arange(size, dtype=np.float64)
    if kind == "gaussian":
        sigma = GAUSSIAN_SIGMA_SCALE * size
        window = np.exp(-0.5 * ((index - (size - 1) / 2) / sigma) ** 2)
    elif kind == "linear":
        window = np.minimum(index + 1, size - index)
    else:
        raise ValueError(f"window kind must be 'gaussian' or 'linear', got {kind!r}")
    window = window / window.max()
    if kind == "gaussian":
        window = np.maximum(window, WINDOW_FLOOR)
    return window.astype(np.float32)
