"""A plain numpy reference of the unetrt._tiling kernels, written for clarity, not speed.

It computes every value with the same float32 operations as the kernels (multiply, then add; divide for
the finish), so the kernels must equal it bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalisation(channels: int, scale: float, mean: Sequence[float] | None,
                  std: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    mean = [0.0] * channels if mean is None else list(mean)
    std = [1.0] * channels if std is None else list(std)
    mul = np.array([np.float32(scale / s) for s in std], np.float32)
    add = np.array([np.float32(-m / s) for m, s in zip(mean, std)], np.float32)
    return mul, add


def extract_reference(image: np.ndarray, tile_hw: tuple[int, int], count: int, origin: tuple[int, int],
                      step: tuple[int, int], grid: tuple[int, int], first: int = 0, swap_rb: bool = False,
                      scale: float = 1.0 / 255.0, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, dtype: type = np.float32,
                      out_channels: int | None = None) -> np.ndarray:
    """Tiles ``first .. first + count - 1`` of the grid, cut from the image mirror-padded by np.pad('reflect'); a
    1-channel image repeated into ``out_channels`` channels first (a gray frame for a colour model), an image of 3 or
    4 channels turned into its gray value (:func:`gray_reference`) for ``out_channels`` 1 (a colour frame for a
    1-channel model)."""
    img = image if image.ndim == 3 else image[..., None]
    if out_channels is not None and img.shape[2] == 1:
        img = np.repeat(img, out_channels, axis=2)
    if out_channels == 1 and img.shape[2] >= 3:
        img = gray_reference(img, swap_rb)[..., None]
        swap_rb = False
    height, width, channels = img.shape
    (th, tw), (oy, ox), (sy, sx), (rows, cols) = tile_hw, origin, step, grid
    pad_top, pad_left = max(0, -oy), max(0, -ox)
    pad_bottom = max(0, oy + (rows - 1) * sy + th - height)
    pad_right = max(0, ox + (cols - 1) * sx + tw - width)
    padded = np.pad(img, ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)), mode="reflect")
    mul, add = normalisation(channels, scale, mean, std)
    order = list(range(channels))
    if swap_rb:
        order[0], order[2] = 2, 0
    out: np.ndarray = np.empty((count, channels, th, tw), dtype)
    for n in range(count):
        r, c = divmod(first + n, cols)
        y0, x0 = oy + r * sy + pad_top, ox + c * sx + pad_left
        patch = padded[y0 : y0 + th, x0 : x0 + tw][..., order]
        with np.errstate(over="ignore"):
            out[n] = (patch.astype(np.float32) * mul + add).transpose(2, 0, 1).astype(dtype)
    return out


def gray_reference(image: np.ndarray, bgr: bool) -> np.ndarray:
    """The BT.601 gray value of every pixel of an H x W x C (C >= 3) image in RGB order (BGR when ``bgr``), as float32:
    for uint8 and uint16 OpenCV's fixed point (weights 9798, 19235, 3735 of 2^15, rounded half up), for float32
    G + 0.299 (R - G) + 0.114 (B - G) rounded to float32 after every operation."""
    red, green, blue = (image[..., i] for i in ((2, 1, 0) if bgr else (0, 1, 2)))
    if image.dtype.kind == "u":
        wide = [channel.astype(np.uint64) for channel in (red, green, blue)]
        return ((wide[0] * 9798 + wide[1] * 19235 + wide[2] * 3735 + (1 << 14)) >> 15).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return (green + np.float32(0.299) * (red - green)) + np.float32(0.114) * (blue - green)


def crop_core(index: int, count: int, origin: int, step: int, tile: int, size: int) -> tuple[int, int]:
    """The image span [lo, hi) tile ``index`` owns along one axis in crop mode."""
    lo = 0 if index == 0 else origin + index * step + (tile - step) // 2
    hi = size if index == count - 1 else origin + (index + 1) * step + (tile - step) // 2
    lo, hi = max(lo, 0), min(hi, size)
    return lo, max(lo, hi)


def stitch_reference(tiles: np.ndarray, acc: np.ndarray, weight: np.ndarray | None, origin: tuple[int, int],
                     step: tuple[int, int], grid: tuple[int, int], first: int = 0, mode: str = "crop",
                     window_y: np.ndarray | None = None, window_x: np.ndarray | None = None) -> None:
    """Write (crop) or accumulate (blend) tiles ``first ..`` into acc (K x H x W) and weight (H x W), in place."""
    _, height, width = acc.shape
    count, _, th, tw = tiles.shape
    (oy, ox), (sy, sx), (rows, cols) = origin, step, grid
    values = tiles.astype(np.float32)
    for n in range(count):
        r, c = divmod(first + n, cols)
        y0, x0 = oy + r * sy, ox + c * sx
        if mode == "crop":
            ylo, yhi = crop_core(r, rows, oy, sy, th, height)
            xlo, xhi = crop_core(c, cols, ox, sx, tw, width)
            acc[:, ylo:yhi, xlo:xhi] = values[n, :, ylo - y0 : yhi - y0, xlo - x0 : xhi - x0]
            continue
        assert weight is not None and window_y is not None and window_x is not None
        ylo, yhi, xlo, xhi = max(y0, 0), min(y0 + th, height), max(x0, 0), min(x0 + tw, width)
        w = (window_y[:, None] * window_x[None, :])[ylo - y0 : yhi - y0, xlo - x0 : xhi - x0]
        acc[:, ylo:yhi, xlo:xhi] += w * values[n, :, ylo - y0 : yhi - y0, xlo - x0 : xhi - x0]
        weight[ylo:yhi, xlo:xhi] += w


def finish_reference(acc: np.ndarray, weight: np.ndarray | None, binary: bool,
                     threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(normalised logits, H x W uint8 mask)."""
    logits = acc / weight if weight is not None else acc.copy()
    mask = (logits[0] > np.float32(threshold)) if binary else logits.argmax(axis=0)
    return logits, mask.astype(np.uint8)


def axis_samples(out_size: int, src_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, frac) per output coordinate of a bilinear resize from src_size to out_size (OpenCV INTER_LINEAR:
    s = (o + 0.5) * scale - 0.5 clamped to [0, src_size - 1]), in float32 as the kernels compute it."""
    scale = np.float32(src_size) / np.float32(out_size)
    s = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    i0 = np.where(s > 0, np.floor(s), 0).astype(np.int64)
    frac = np.where(s > 0, s - np.floor(s), 0).astype(np.float32)
    last = i0 >= src_size - 1
    i0[last], frac[last] = src_size - 1, 0
    i1 = np.where(frac > 0, i0 + 1, i0)
    return i0, i1, frac


def _lerp(a: np.ndarray, b: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """a * (1 - frac) + b * frac in float32, and exactly a where frac is 0."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(frac == 0, a, a * (np.float32(1) - frac) + b * frac).astype(np.float32)


def bilinear_reference(src: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """float32 bilinear resize of C x h x w to C x H x W: horizontal pass, then vertical."""
    yi0, yi1, fy = axis_samples(out_hw[0], src.shape[1])
    xi0, xi1, fx = axis_samples(out_hw[1], src.shape[2])
    top = _lerp(src[:, yi0][:, :, xi0], src[:, yi0][:, :, xi1], fx[None, None, :])
    bottom = _lerp(src[:, yi1][:, :, xi0], src[:, yi1][:, :, xi1], fx[None, None, :])
    return _lerp(top, bottom, fy[None, :, None])


def finish_resized_reference(scores: np.ndarray, out_hw: tuple[int, int], rect: tuple[int, int, int, int],
                             weight: np.ndarray | None = None, binary: bool = False,
                             threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(resized values K x H x W, mask H x W uint8, probabilities K x H x W) of finish_resized."""
    y0, x0, h, w = rect
    src = scores.astype(np.float32)[:, y0 : y0 + h, x0 : x0 + w]
    if weight is not None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            src = (src / weight[y0 : y0 + h, x0 : x0 + w]).astype(np.float32)
    values = bilinear_reference(src, out_hw)
    if binary:
        best = values[0]
        mask = best > np.float32(threshold)
        with np.errstate(over="ignore"):
            probabilities = (1 / (1 + np.exp(-values.astype(np.float64)))).astype(np.float32)
    else:
        mask = values.argmax(axis=0)  # first maximum; a NaN wins as numpy's argmax does
        best = np.take_along_axis(values, mask[None], axis=0)[0]
        with np.errstate(invalid="ignore", over="ignore"):
            e = np.exp(values.astype(np.float64) - best)
            probabilities = (e / e.sum(axis=0)).astype(np.float32)
    return values, mask.astype(np.uint8), probabilities


def resize_reference(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """resize_bilinear (H x W x C or H x W, uint8, uint16 or float32): the float32 bilinear value, rounded half up and
    clamped to the range for integer images, as it is for float32 ones."""
    planes = image if image.ndim == 3 else image[..., None]
    values = bilinear_reference(planes.transpose(2, 0, 1).astype(np.float32), out_hw)
    if image.dtype.kind == "u":
        values = np.clip(np.floor(values + np.float32(0.5)), 0, np.iinfo(image.dtype).max)
    resized = values.astype(image.dtype).transpose(1, 2, 0)
    return resized if image.ndim == 3 else resized[..., 0]
