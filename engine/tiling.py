"""Overlap-tile inference for images of any size: plan a tile grid, run tiles through a network, stitch.

Tiles are cut with mirror padding wherever they reach past the image (the U-Net paper's overlap-tile
strategy) by the native kernels of :mod:`unetrt._tiling`. A 'same' network's tiles overlap by ``overlap``
pixels; a 'valid' network's tiles additionally carry its context margin (92 px for 572 -> 388), so their
outputs abut exactly. Outputs are stitched by cropping each tile to its core ('crop') or by a weighted
average with a Gaussian or linear window ('gaussian', 'linear').
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _tiling  # type: ignore[attr-defined,unused-ignore]  # the native extension has no stub
from .cuda import cuda_array_interface
from .geometry import PADDING_MODES, is_legal_size, legal_sizes, nearest_legal_sizes, plan_padding, valid_output_size

BLEND_MODES = ("gaussian", "linear", "crop")
GAUSSIAN_SIGMA_SCALE = 0.125  # sigma as a fraction of the tile side, as MONAI's sliding-window inference
# MONAI clamps its importance map at 1e-3: without a floor, a pixel seen only by tile edges (exp(-8) ~ 3e-4)
# takes its class from whichever edge is least tiny, which alone moved 4 % of argmax pixels on a 1440 x 1088 frame.
WINDOW_FLOOR = 1e-3

Predictor = Callable[[np.ndarray], np.ndarray]


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

        Example:
            >>> plan_tiles((100, 64), 64, overlap=16).axis_starts(0)
            [0, 36]
        """
        count, start, step = self.shape[axis], self.output_origin[axis], self.step[axis]
        return [start + i * step - (self.shift[axis] if i == count - 1 else 0) for i in range(count)]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an int or a (height, width) pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


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
               align: int) -> tuple[int, int, int, int, int, int, int]:
    """(tile_in, tile_out, margin, origin, step, count, shift) along one axis."""
    _check_tile(tile, padding, depth)
    # A tile larger than the image needs wastes work: shrink it to the smallest legal size that still covers it.
    tile_in = min(tile, plan_padding(size, padding, depth).network_input)
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
               padding: str = "same", depth: int = 5, align: int = 1) -> TileGrid:
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

    Returns:
        The grid. Where the image is at least a tile long, every tile lies inside it (the last one up to
        ``align - 1`` px past its edge); a shorter axis gets one tile, mirror-padded.

    Raises:
        ValueError: on an illegal tile (naming the nearest legal ones), a bad overlap or align, or an empty image.

    Example:
        >>> grid = plan_tiles((1000, 800), 572, padding="valid")
        >>> grid.output_hw, grid.origin, grid.shape
        ((388, 388), (-92, -92), (3, 3))
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    height, width = _pair(tuple(image_hw), "image_hw")
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1 x 1, got {height} x {width}")
    if not isinstance(align, (int, np.integer)) or align < 1:
        raise ValueError(f"align must be a positive int, got {align!r}")
    tiles, overlaps = _pair(tile, "tile"), _pair(overlap, "overlap")
    rows = _plan_axis(height, tiles[0], overlaps[0], padding, depth, int(align))
    cols = _plan_axis(width, tiles[1], overlaps[1], padding, depth, int(align))
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

    Example:
        >>> tile = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
        >>> shift_tile_output(tile, 2, 1); tile.tolist()
        [[[1.0, 2.0, 3.0, 3.0]]]
    """
    size = tile.shape[axis]
    # numpy copes with the overlap of source and destination.
    if axis == 1:
        tile[:, : size - pixels] = tile[:, pixels:]
    else:
        tile[:, :, : size - pixels] = tile[:, :, pixels:]


def plan_whole(height: int, width: int, padding: str = "same", depth: int = 5) -> TileGrid:
    """The one-tile grid of an image that goes through the network whole: mirror-padded to the smallest legal
    input (at the end for 'same' networks; with the context margin around it for 'valid' ones).

    Example:
        >>> plan_whole(360, 480).tile_hw
        (368, 480)
    """
    padded = (plan_padding(height, padding, depth).network_input, plan_padding(width, padding, depth).network_input)
    return plan_tiles((height, width), padded, 0, padding, depth)


def blend_window(kind: str, size: int) -> np.ndarray:
    """A 1-D blending window of ``size`` float32 weights, all positive, peak 1.

    'gaussian': sigma = size / 8 around the centre, floored at :data:`WINDOW_FLOOR` (as MONAI);
    'linear': a tent falling to the edges.

    Raises:
        ValueError: on an unknown kind or a size below 1.

    Example:
        >>> blend_window("linear", 4).tolist()
        [0.5, 1.0, 1.0, 0.5]
    """
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
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


@dataclass
class TiledResult:
    """What :func:`tiled_inference` returns.

    Attributes:
        logits: K x H x W float32: stitched network outputs at the image's size.
        mask: H x W uint8 class ids (argmax, or logit > 0 for binary models), when asked for.
    """

    logits: np.ndarray
    mask: np.ndarray | None


def _check_outputs(outputs: object, count: int, grid: TileGrid) -> np.ndarray:
    if not isinstance(outputs, np.ndarray) or outputs.ndim != 4:
        shape = getattr(outputs, "shape", outputs)
        raise ValueError(f"predictor must return an N x K x h x w numpy array, got {shape}")
    if outputs.shape[0] != count or tuple(outputs.shape[2:]) != grid.output_hw:
        raise ValueError(f"predictor returned shape {outputs.shape} for {count} tiles; expected "
                         f"({count}, K, {grid.output_hw[0]}, {grid.output_hw[1]})")
    if outputs.dtype not in (np.float32, np.float16):
        outputs = outputs.astype(np.float32)
    return np.ascontiguousarray(outputs)


def tiled_inference(image: np.ndarray, predictor: Predictor, grid: TileGrid, *, blend: str = "gaussian",
                    batch_size: int = 4, swap_rb: bool = False, scale: float = 1.0 / 255.0,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    binary: bool | None = None, dtype: Any = np.float32, threads: int = 0) -> TiledResult:
    """Run ``predictor`` over an image tile by tile and stitch its outputs.

    Memory is bounded by the result (K x H x W float32, plus H x W weights when blending) and one batch of
    tiles, whatever the image's size.

    Args:
        image: H x W or H x W x C uint8 or float32, any strides.
        predictor: N x C x th x tw batch (``dtype``) -> N x K x oh x ow outputs (e.g. ``backend.infer``).
        grid: from :func:`plan_tiles` for ``image.shape[:2]``.
        blend: 'gaussian' or 'linear' (weighted average of overlapping outputs) or 'crop' (each output
            keeps the middle of its overlaps; exact for 'valid' networks).
        batch_size: tiles per predictor call (respect the backend's ``max_batch``).
        swap_rb: swap channels 0 and 2 (BGR frame into an RGB network).
        scale, mean, std: normalisation ``(x * scale - mean) / std`` per channel.
        binary: also return the mask: True thresholds logit > 0, False takes the argmax; None: no mask.
        dtype: np.float32 or np.float16 network input.
        threads: CPU threads for the kernels (0 = one per core).

    Returns:
        The stitched logits and, if asked, the mask.

    Raises:
        ValueError: on a grid not made for this image, an unknown blend, a bad batch size or predictor output.

    Example:
        >>> grid = plan_tiles(frame.shape[:2], 256, overlap=32)  # doctest: +SKIP
        >>> result = tiled_inference(frame, backend.infer, grid, swap_rb=True, mean=m, std=s)  # doctest: +SKIP
    """
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ValueError(f"image must be an H x W or H x W x C numpy array, got {getattr(image, 'shape', image)}")
    if tuple(image.shape[:2]) != grid.image_hw:
        raise ValueError(f"grid was planned for a {grid.image_hw} image, got {image.shape[:2]}; re-plan it")
    channels = 1 if image.ndim == 2 else image.shape[2]
    height, width = grid.image_hw
    mode = "crop" if blend == "crop" else "blend"
    windows = {} if mode == "crop" else {"window_y": blend_window(blend, grid.output_hw[0]),
                                         "window_x": blend_window(blend, grid.output_hw[1])}
    geometry = {"step": grid.step, "grid": grid.shape}
    batch = np.empty((min(batch_size, grid.count), channels, *grid.tile_hw), dtype=dtype)
    acc: np.ndarray | None = None
    weight = np.zeros((height, width), np.float32) if mode == "blend" else None
    jobs = [(0, tile) for tile in range(grid.count)]
    for first in range(0, grid.count, batch_size):
        chunk = jobs[first : first + batch_size]
        tiles = batch[: len(chunk)]
        for start, count, _ in tile_runs(grid, chunk, regular=False):
            origin, shape, first_tile = extract_call(grid, chunk[start][1])
            _tiling.extract_tiles(image, tiles[start : start + count], origin=origin, step=grid.step, grid=shape,
                                  first=first_tile, swap_rb=swap_rb, scale=scale,
                                  mean=None if mean is None else list(mean), std=None if std is None else list(std),
                                  threads=threads)
        outputs = _check_outputs(predictor(tiles), len(chunk), grid)
        if grid.shift != (0, 0):
            outputs = outputs.copy()  # the predictor may have handed out its own buffer
            for index, (_, tile) in enumerate(chunk):
                row, col = divmod(tile, grid.shape[1])
                if row == grid.shape[0] - 1 and grid.shift[0]:
                    shift_tile_output(outputs[index], 1, grid.shift[0])
                if col == grid.shape[1] - 1 and grid.shift[1]:
                    shift_tile_output(outputs[index], 2, grid.shift[1])
        if acc is None:
            acc = np.zeros((outputs.shape[1], height, width), np.float32)
        _tiling.stitch_tiles(outputs, acc, weight, origin=grid.output_origin, first=first, mode=mode,
                             threads=threads, **geometry, **windows)
    assert acc is not None  # the grid has at least one tile
    mask = None if binary is None else np.empty((height, width), np.uint8)
    if weight is not None or mask is not None:
        # One pass: divide by the blend weight and reduce to the mask.
        _tiling.finish(acc, weight, mask, binary=bool(binary), write_logits=weight is not None, threads=threads)
    return TiledResult(acc, mask)


class TiledInferer:
    """Settings for :func:`tiled_inference`, planned per image.

    Args:
        tile: network input tile side or (height, width).
        overlap: pixels shared by neighbouring outputs.
        padding, depth: the network's convolutions and levels (for legal tile sizes and the context margin).
        blend: 'gaussian', 'linear' or 'crop'.
        batch_size: tiles per predictor call.
        **normalisation: swap_rb, scale, mean, std, dtype, threads for :func:`tiled_inference`.

    Example:
        >>> inferer = TiledInferer(572, padding="valid", blend="crop")  # doctest: +SKIP
        >>> logits = inferer(image, backend.infer).logits  # doctest: +SKIP
    """

    def __init__(self, tile: int | Sequence[int], overlap: int | Sequence[int] = 0, padding: str = "same",
                 depth: int = 5, blend: str = "gaussian", batch_size: int = 4, **normalisation: Any) -> None:
        plan_tiles((1, 1), tile, overlap, padding, depth)  # fail early on illegal settings
        if blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
        self.tile, self.overlap, self.padding, self.depth = tile, overlap, padding, depth
        self.blend, self.batch_size, self.normalisation = blend, batch_size, normalisation

    def plan(self, image_hw: Sequence[int]) -> TileGrid:
        """The grid for an image of this size."""
        return plan_tiles(image_hw, self.tile, self.overlap, self.padding, self.depth)

    def __call__(self, image: np.ndarray, predictor: Predictor, binary: bool | None = None) -> TiledResult:
        """Tiled inference of ``predictor`` over ``image`` with these settings."""
        return tiled_inference(image, predictor, self.plan(image.shape[:2]), blend=self.blend,
                               batch_size=self.batch_size, binary=binary, **self.normalisation)


@dataclass(frozen=True)
class CudaArrayArgs:
    """A device array as the ``*_cuda`` kernels of :mod:`unetrt._tiling` take it.

    Attributes:
        ptr: device address.
        shape: the array's shape.
        strides: strides in bytes (C-contiguous ones when the producer gives none).
        dtype: 'uint8', 'uint16', 'float16' or 'float32'.
    """

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: str


_TYPESTR = {"|u1": "uint8", "<u2": "uint16", "<f2": "float16", "<f4": "float32"}


def cuda_array_args(array: Any) -> CudaArrayArgs:
    """Pointer, shape, byte strides and dtype of any ``__cuda_array_interface__`` array (CuPy, torch CUDA
    tensors, pycuda GPUArray, Numba).

    Raises:
        ValueError: when the object is no CUDA array or has a dtype the kernels do not take.

    Example:
        >>> args = cuda_array_args(torch.zeros(4, 3, 64, 64, device="cuda"))  # doctest: +SKIP
        >>> _tiling.extract_tiles_cuda(..., args.ptr, args.shape, args.dtype, ...)  # doctest: +SKIP
    """
    interface = cuda_array_interface(array, type(array).__name__)
    typestr = interface.dtype.str
    if typestr not in _TYPESTR:
        raise ValueError(f"device array dtype {typestr!r} is not uint8, uint16, float16 or float32")
    return CudaArrayArgs(interface.ptr, interface.shape, interface.strides, _TYPESTR[typestr])
