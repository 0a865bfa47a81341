"""Training augmentation applied identically to an image, its label map and its weight map.

OpenCV and numpy only. albumentations was considered and left out: its
ElasticTransform is Simard's smoothed per-pixel field, not the U-Net paper's
coarse-grid bicubic deformation (which is written here anyway), and the rest -
flips, 90-degree turns, scale/shift, brightness/contrast - are a few lines each,
while albumentations 2.0.8 brings pydantic, albucore, simsimd, stringzilla and
PyYAML with it.

Transforms, by the names ``--augment`` takes (comma-separated, applied in this order):

``hflip``/``vflip``
    mirror with probability 1/2.
``rot90``
    turn by k * 90 degrees, k uniform (k odd only for square samples, so batches keep their shape).
``scale``
    zoom by a factor in [1 - scale, 1 + scale], or drawn log-uniformly from ``zoom`` = (min, max) when given,
    and shift by up to ``shift`` of the size, or further when the zoom hides part of the image, so that
    every part can come into view (reflected border).
``elastic``
    the paper's deformation: displacement vectors drawn from N(0, elastic_sigma^2) px on a
    ``elastic_grid`` x ``elastic_grid`` grid, upsampled bicubically to a per-pixel field;
    images are resampled bicubically, labels by nearest neighbour, weights bilinearly.
``jitter``
    brightness/contrast: ``gain * image + bias``, gain in [1 - contrast, 1 + contrast], bias in +-brightness.

Geometric transforms fill with the label's ignore index where it has one (mirror otherwise);
weight maps follow the label (0 where the label is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

AUGMENTATIONS = ("hflip", "vflip", "rot90", "scale", "elastic", "jitter")


@dataclass(frozen=True)
class AugmentConfig:
    """Which transforms run and how strong they are (see the module docstring).

    Example:
        >>> AugmentConfig.parse("hflip,jitter").names
        ('hflip', 'jitter')
    """

    names: tuple[str, ...] = ("hflip", "jitter")
    scale: float = 0.1
    shift: float = 0.05
    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    contrast: float = 0.2
    brightness: float = 20.0
    zoom: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
        if self.elastic_grid < 2:
            raise ValueError(f"the elastic grid needs at least 2x2 points, got {self.elastic_grid}")
        if self.zoom is not None and not 0 < self.zoom[0] <= self.zoom[1]:
            raise ValueError(f"the zoom range needs 0 < min <= max, got {self.zoom}")
        if not 0 <= self.scale < 1 or self.shift < 0 or self.elastic_sigma < 0:
            raise ValueError(f"need 0 <= scale < 1, shift >= 0, elastic_sigma >= 0, got "
                             f"{self.scale}, {self.shift}, {self.elastic_sigma}")

    @classmethod
    def parse(cls, text: str, **settings: Any) -> AugmentConfig:
        """From a comma-separated list such as ``"hflip,vflip,elastic"`` (``"none"`` or empty: nothing)."""
        names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
        return cls(names, **settings)


def elastic_field(height: int, width: int, sigma: float, grid: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth (H, W, 2) displacement field in pixels: N(0, sigma^2) vectors on a coarse grid, bicubic upsampling.

    Example:
        >>> elastic_field(64, 48, 10.0, 3, np.random.default_rng(0)).shape
        (64, 48, 2)
    """
    coarse = _coarse_field(sigma, grid, rng)
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    return _sample_field(coarse, np.broadcast_to(xs, (height, width)), np.broadcast_to(ys, (height, width)),
                         height, width)


def _coarse_field(sigma: float, grid: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, sigma, size=(grid, grid, 2)).astype(np.float32)


def _sample_field(coarse: np.ndarray, xs: np.ndarray, ys: np.ndarray, height: int, width: int) -> np.ndarray:
    """The coarse field at the (continuous) pixel coordinates xs, ys of a height x width image."""
    grid = coarse.shape[0]
    # Grid points sit on the image corners and edges (align-corners), so the drawn vectors are exact there.
    map_x = xs * np.float32((grid - 1) / max(width - 1, 1))
    map_y = ys * np.float32((grid - 1) / max(height - 1, 1))
    return cv2.remap(coarse, np.ascontiguousarray(map_x, dtype=np.float32),
                     np.ascontiguousarray(map_y, dtype=np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def _remap(array: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interpolation: int,
           fill: int | None) -> np.ndarray:
    if fill is None:
        return cv2.remap(array, map_x, map_y, interpolation, borderMode=cv2.BORDER_REFLECT_101)
    return cv2.remap(array, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def augment(
    image: np.ndarray,
    label: np.ndarray,
    weights: np.ndarray | None,
    config: AugmentConfig,
    rng: np.random.Generator,
    ignore_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Apply ``config``'s transforms with random parameters from ``rng`` to a sample.

    The label (and the weight map with it) may be drawn at an integer multiple k of the image's size (a label kept
    finer than the network's input, see ``SegmentationDataset``'s ``label_scale``): every transform then moves it
    as it moves the image, pixel centre for pixel centre.

    Args:
        image: HxW or HxWxC uint8.
        label: (k*H)x(k*W) uint8 class ids, k a positive integer (1: the image's size).
        weights: float32 weight map of the label's size, or None.
        config: transforms and strengths.
        rng: random source.
        ignore_index: label value used to fill pixels moved in from outside (None: mirror).

    Returns:
        Contiguous (image, label, weights), same shapes and dtypes as given.

    Raises:
        ValueError: when the label is not k times the image's size or the weight map not the label's.

    Example:
        >>> img, lab, w = augment(np.zeros((8, 8), np.uint8), np.ones((16, 16), np.uint8), None,
        ...                       AugmentConfig(("rot90",)), np.random.default_rng(0))
        >>> lab.shape
        (16, 16)
    """
    height, width = image.shape[:2]
    scale = label_scale_of(image, label)
    if weights is not None and weights.shape != label.shape:
        raise ValueError(f"the weight map {weights.shape} must have the label's height and width {label.shape}")
    names = config.names
    flips = [(flag, axis) for flag, axis in (("hflip", 1), ("vflip", 0)) if flag in names]
    for _, axis in flips:
        if rng.random() < 0.5:
            image, label = np.flip(image, axis), np.flip(label, axis)
            weights = None if weights is None else np.flip(weights, axis)
    if "rot90" in names:
        turns = int(rng.integers(4)) if height == width else 2 * int(rng.integers(2))
        image, label = np.rot90(image, turns), np.rot90(label, turns)
        weights = None if weights is None else np.rot90(weights, turns)
    zoom_shift: tuple[float, float, float] | None = None
    coarse: np.ndarray | None = None
    if "scale" in names:
        if config.zoom is None:
            zoom = rng.uniform(1 - config.scale, 1 + config.scale)
        else:
            zoom = float(np.exp(rng.uniform(np.log(config.zoom[0]), np.log(config.zoom[1]))))
        reach = max(config.shift, (1 - 1 / zoom) / 2)
        dx, dy = rng.uniform(-reach, reach, 2) * (width, height)
        zoom_shift = (float(zoom), float(dx), float(dy))
    if "elastic" in names and config.elastic_sigma > 0:
        coarse = _coarse_field(config.elastic_sigma, config.elastic_grid, rng)
    if zoom_shift is not None or coarse is not None:
        # One sampling grid composes scale/shift and the elastic field, so each array is resampled once.
        map_x, map_y = _source_maps(height, width, 1, zoom_shift, coarse)
        image = _remap(np.ascontiguousarray(image), map_x, map_y, cv2.INTER_CUBIC, None)
        if scale != 1:
            map_x, map_y = _source_maps(height, width, scale, zoom_shift, coarse)
        moved = _remap(np.ascontiguousarray(label), map_x, map_y, cv2.INTER_NEAREST, ignore_index)
        if weights is not None:
            weights = _remap(np.ascontiguousarray(weights), map_x, map_y, cv2.INTER_LINEAR, None)
            if ignore_index is not None:
                weights = np.where(moved == ignore_index, np.float32(0), weights)
        label = moved
    if "jitter" in names:
        gain = rng.uniform(1 - config.contrast, 1 + config.contrast)
        bias = rng.uniform(-config.brightness, config.brightness)
        image = np.clip(image.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    weights = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
    return np.ascontiguousarray(image), np.ascontiguousarray(label), weights


def label_scale_of(image: np.ndarray, label: np.ndarray) -> int:
    """The integer k for which the label is k times the image's height and width.

    Raises:
        ValueError: when there is no such k.

    Example:
        >>> label_scale_of(np.zeros((4, 6)), np.zeros((8, 12)))
        2
    """
    height, width = image.shape[:2]
    scale = label.shape[0] // max(height, 1)
    if scale < 1 or label.shape[:2] != (scale * height, scale * width):
        raise ValueError(f"the label {label.shape[1]}x{label.shape[0]} must be the image's size "
                         f"{width}x{height} or an integer multiple of it")
    return scale


def _source_maps(height: int, width: int, scale: int, zoom_shift: tuple[float, float, float] | None,
                 coarse: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of an array ``scale`` times the image's size samples its source, as cv2.remap maps.

    The transforms are defined on the image's pixel grid; an array at ``scale`` maps its pixel centres to that grid
    and back, so both arrays move as one picture.
    """
    ys, xs = np.mgrid[0:height * scale, 0:width * scale].astype(np.float32)
    if scale != 1:
        xs, ys = (xs + 0.5) / scale - 0.5, (ys + 0.5) / scale - 0.5
    map_x, map_y = xs, ys
    if zoom_shift is not None:
        zoom, dx, dy = zoom_shift
        map_x = (xs - width / 2) / zoom + width / 2 + dx
        map_y = (ys - height / 2) / zoom + height / 2 + dy
    if coarse is not None:
        field = _sample_field(coarse, xs, ys, height, width)
        map_x, map_y = map_x + field[..., 0], map_y + field[..., 1]
    if scale != 1:
        map_x, map_y = (map_x + 0.5) * scale - 0.5, (map_y + 0.5) * scale - 0.5
    return map_x.astype(np.float32), map_y.astype(np.float32)
