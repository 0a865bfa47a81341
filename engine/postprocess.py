"""Optional clean-up of a binary model's probability map into a cell mask.

A binary membrane model (ISBI 2012) fails in three ways that cost Rand error: a gap in a thin
membrane merges two cells, a membrane drawn too thick eats into cells, and dark structures inside
a cell (mitochondria, vesicles) are drawn as specks of membrane. A single threshold trades the
first two against each other. Two clean-ups, chosen with :class:`BinaryCleanup`:

``fill-holes``
    specks of background enclosed by one cell and smaller than ``max_hole_area`` pixels become cell.
``watershed``
    seeded watershed: the cells of the map thresholded at ``seed_threshold`` (holes filled as above,
    at least ``min_seed_area`` pixels) are the seeds, one per cell; they grow over the map, highest
    probability first, through every pixel above the mask threshold; where two growing cells meet, a
    line of background keeps them apart, so a gap no longer merges them.

Any mode can instead draw **cell lines** (``lines_threshold``): the mode's cells at that threshold grow
across the predicted membrane, each pixel to the cell nearest to it, until they meet; the one-pixel lines
where two cells meet are then background in every mask, and the mask at a threshold is the pixels above it
(specks filled as in ``fill-holes``) less the lines. At the usual thresholds this keeps the membrane as drawn
and cuts the contacts where a gap would merge two cells; thresholded near 0 it leaves every pixel to a cell
but the lines, so a membrane drawn too thick no longer eats into the cells. The ISBI challenge's Rand score counts
pixel pairs inside true cells only, which is why a true membrane can be drawn one pixel thin there.

A bundled binary model's statement names the clean-up chosen for it on its selection slices
(:func:`stated_cleanup`); :class:`unetrt.Segmenter` applies it by default (``cleanup="stated"``).

numpy and OpenCV only, so the runtime can use it.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .bundled import bundled_statement, is_bundled_name

POSTPROCESS_MODES = ("none", "fill-holes", "watershed")
# Segmenter(cleanup=STATED): the clean-up a bundled model's statement names, none for any other model.
STATED = "stated"


def _is_int(value: object) -> bool:
    # bool is an int to Python, but True as an area is a mistake, not 1 pixel.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_fraction(value: object, what: str) -> None:
    """Raise ValueError unless ``value`` is a number in [0, 1] (a threshold on probabilities)."""
    if not _is_real(value):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:  # type: ignore[operator]  # NaN fails this too
        raise ValueError(f"{what} must lie in [0, 1], got {value}")


# How far outside [0, 1] a probability map may stray by rounding before it is taken for another scale.
PROBABILITY_MARGIN = 1e-3


def _checked_map(values: object, what: str, probabilities: bool = False) -> np.ndarray:
    """``values`` as a non-empty HxW array of finite numbers (or bools), else ValueError naming ``what``; with
    ``probabilities``, numbers in [0, 1] too."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nested lists
        array = np.empty(0, object)
    if array.ndim != 2 or array.size == 0 or array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be a non-empty HxW array of numbers, got "
                         f"{f'shape {array.shape}' if array.dtype.kind in 'biuf' else repr(values)}")
    # NaN compares false with every threshold, so a NaN map would silently become all background.
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{what} holds {int(np.count_nonzero(~np.isfinite(array)))} NaN or infinite values; "
                         "it must hold finite numbers")
    # A 0-255 map or logits pass every threshold in [0, 1] almost everywhere: the cells would merge in silence.
    # The margin lets through the rounding of blended tiles (a weighted mean of probabilities can pass 1 by an ulp).
    if probabilities and array.dtype.kind != "b":
        low, high = array.min(), array.max()
        if low < -PROBABILITY_MARGIN or high > 1 + PROBABILITY_MARGIN:
            raise ValueError(f"{what} must hold probabilities in [0, 1], got min {low} and max {high}; divide a "
                             "0-255 map by 255, or pass logits through a sigmoid first")
    return array


@dataclass(frozen=True)
class BinaryCleanup:
    """Settings of a binary model's mask clean-up (see the module docstring).

    Args:
        mode: 'none', 'fill-holes' or 'watershed'.
        max_hole_area: enclosed background specks smaller than this many pixels become cell (0: none).
        seed_threshold: watershed: seeds are the cells above this probability.
        min_seed_area: watershed: seeds smaller than this many pixels are dropped.
        threshold: the mask threshold :class:`unetrt.Segmenter` applies (the challenge scorer sweeps its own).
        lines_threshold: when set, the mask at a threshold is the pixels above it (specks filled) less the
            cell lines of the mode's cells at this threshold (see the module docstring, :func:`cell_lines`);
            None: the mode's own mask.

    Raises:
        ValueError: on an unknown mode, or settings that are no numbers (areas: no ints) or out of range.

    Example:
        >>> p = np.full((5, 5), 0.9, np.float32); p[2, 2] = 0.1   # a speck inside a cell
        >>> int(BinaryCleanup("fill-holes", max_hole_area=4).apply(p).sum())
        25
    """

    mode: str = "none"
    max_hole_area: int = 0
    seed_threshold: float = 0.5
    min_seed_area: int = 10
    threshold: float = 0.5
    lines_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in POSTPROCESS_MODES:
            raise ValueError(f"unknown post-processing {self.mode!r}; choose one of {', '.join(POSTPROCESS_MODES)}")
        if not _is_int(self.max_hole_area) or self.max_hole_area < 0:
            raise ValueError(f"the maximum hole area must be an int of at least 0 pixels, got {self.max_hole_area!r}")
        check_watershed_settings(0.0, self.seed_threshold, self.min_seed_area)
        _check_fraction(self.threshold, "the mask threshold")
        if self.lines_threshold is not None:
            _check_fraction(self.lines_threshold, "the cell lines' threshold")

    @property
    def active(self) -> bool:
        """Whether the clean-up changes anything."""
        return self.mode != "none" or self.lines_threshold is not None

    def apply(self, probability: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """The HxW uint8 mask (1 = cell) of a foreground probability map.

        Args:
            probability: HxW foreground probabilities.
            threshold: the mask threshold; None (the default) takes this clean-up's own ``threshold``. A
                scorer that sweeps thresholds (:class:`unetrt.metrics.IsbiChallengeScorer`) passes each one.

        Returns:
            The cleaned mask.

        Raises:
            ValueError: when the map is no non-empty HxW array of numbers in [0, 1], or ``threshold`` is no number in
                [0, 1].

        Example:
            >>> BinaryCleanup(threshold=0.7).apply(np.array([[0.6, 0.8]], np.float32)).tolist()
            [[0, 1]]
        """
        probability = _checked_map(probability, "the probability map", probabilities=True)
        if threshold is None:
            threshold = self.threshold
        _check_fraction(threshold, "the mask threshold")
        if self.lines_threshold is None:
            return self._cells(probability, threshold)
        # The mode splits cells; the threshold only sets how thick the membrane is drawn between them. A
        # watershed below its seeds would flood flat membrane from one cell and draw lines through cells.
        mask = fill_holes((probability > threshold).astype(np.uint8), self.max_hole_area)
        mask[cell_lines(self._cells(probability, self.lines_threshold))] = 0
        return mask

    def _cells(self, probability: np.ndarray, threshold: float) -> np.ndarray:
        if self.mode == "watershed":
            seed = max(self.seed_threshold, threshold)
            return seeded_watershed(probability, threshold, seed, self.min_seed_area, self.max_hole_area)
        mask = (probability > threshold).astype(np.uint8)
        return fill_holes(mask, self.max_hole_area) if self.mode == "fill-holes" else mask


def fill_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Turn background specks smaller than ``max_area`` pixels that do not touch the image border into foreground.

    Background is taken 8-connected, so a thin diagonal membrane still counts as one piece.

    Args:
        mask: HxW uint8, non-zero = foreground.
        max_area: specks of fewer pixels are filled (0: nothing changes).

    Returns:
        HxW uint8 mask, 1 = foreground.

    Raises:
        ValueError: when the mask is no non-empty HxW array of finite numbers, or ``max_area`` is no int.

    Example:
        >>> m = np.ones((4, 4), np.uint8); m[1, 1] = 0
        >>> int(fill_holes(m, 2).sum())
        16
    """
    mask = _checked_map(mask, "the mask to fill")
    if not _is_int(max_area):
        raise ValueError(f"the maximum hole area must be an int number of pixels, got {max_area!r}")
    foreground = (mask != 0).astype(np.uint8)
    if max_area <= 0:
        return foreground
    _, labels, stats, _ = cv2.connectedComponentsWithStats(1 - foreground, connectivity=8)
    x, y, w, h = (stats[:, k] for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    inside = (x > 0) & (y > 0) & (x + w < mask.shape[1]) & (y + h < mask.shape[0])
    small = (stats[:, cv2.CC_STAT_AREA] < max_area) & inside
    small[0] = False  # label 0 is the foreground itself
    return np.where(small[labels], np.uint8(1), foreground)


def check_watershed_settings(threshold: float, seed_threshold: float, min_seed_area: int) -> None:
    """Raise ValueError unless the thresholds are numbers with 0 <= threshold <= seed_threshold <= 1 and
    min_seed_area is an int >= 1.

    Example:
        >>> check_watershed_settings(0.3, 0.8, 20)
    """
    # NaN fails the comparisons and is refused with the non-numbers.
    if not (_is_real(threshold) and _is_real(seed_threshold)) or not 0.0 <= threshold <= seed_threshold <= 1.0:
        raise ValueError(f"the watershed needs 0 <= threshold <= seed threshold <= 1, got threshold {threshold!r} "
                         f"and seed threshold {seed_threshold!r}")
    if not _is_int(min_seed_area) or min_seed_area < 1:
        raise ValueError(f"the minimum seed area must be an int of at least 1 pixel, got {min_seed_area!r}")


def seeded_watershed(probability: np.ndarray, threshold: float = 0.5, seed_threshold: float = 0.9,
                     min_seed_area: int = 30, max_hole_area: int = 0) -> np.ndarray:
    """Cell mask of a foreground probability map by seeded watershed (see the module docstring).

    Args:
        probability: HxW float probability of the foreground (cell interior), in [0, 1].
        threshold: pixels at or below it stay background (except filled holes of seeds).
        seed_threshold: seeds are the 4-connected regions above it.
        min_seed_area: seeds smaller than this many pixels are dropped (noise, not cells).
        max_hole_area: specks inside a seed smaller than this are filled first (see :func:`fill_holes`),
            so that a dark structure inside a cell does not cut its seed in two.

    Returns:
        HxW uint8 mask, 1 = foreground, with touching cells separated by background lines.

    Raises:
        ValueError: when the map is no non-empty HxW array of numbers in [0, 1], or the settings are no numbers
            (areas: no ints) or out of range.

    Example:
        >>> p = np.full((5, 7), 0.95, np.float32); p[:, 3] = 0.6   # a weak membrane in column 3
        >>> seeded_watershed(p, threshold=0.5, seed_threshold=0.9, min_seed_area=2)[0]
        array([1, 1, 1, 0, 1, 1, 1], dtype=uint8)
    """
    probability = _checked_map(probability, "the watershed's probability map", probabilities=True)
    check_watershed_settings(threshold, seed_threshold, min_seed_area)
    probability = np.asarray(probability, dtype=np.float32)
    seed_mask = fill_holes((probability > seed_threshold).astype(np.uint8), max_hole_area)
    count, seeds, stats, _ = cv2.connectedComponentsWithStats(seed_mask, connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_seed_area
    keep[0] = False
    relabel = np.zeros(count, np.int32)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    markers = relabel[seeds]
    background = (probability <= threshold) & (seed_mask == 0)
    # One marker for all background, so the flood stops at it instead of crossing it.
    background_marker = int(keep.sum()) + 1
    markers[background] = background_marker
    # cv2.watershed floods the 8-bit image from low to high: low values are where cells are surest.
    # It marks the image's outermost pixels as boundary, so it runs on a copy one pixel larger all round.
    relief = cv2.copyMakeBorder(np.clip((1.0 - probability) * 255.0 + 0.5, 0, 255).astype(np.uint8),
                                1, 1, 1, 1, cv2.BORDER_REPLICATE)
    flooded = cv2.copyMakeBorder(markers, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.watershed(cv2.merge((relief, relief, relief)), flooded)
    markers = flooded[1:-1, 1:-1]
    owner = np.where((markers > 0) & (markers != background_marker), markers, 0)
    return _apart(owner).astype(np.uint8)


def statement_cleanup(statement: Mapping[str, Any], source: str) -> BinaryCleanup | None:
    """The clean-up a model statement names (``cleanup.settings`` of a ``NAME.json``, chosen by
    tools/tune_postprocess.py on the model's selection slices), or None when it names none.

    Args:
        statement: the statement's JSON object.
        source: what the statement is, for the error message (e.g. "the statement of 'isbi'").

    Raises:
        ValueError: when the settings are not those of a :class:`BinaryCleanup`.

    Example:
        >>> statement_cleanup({"cleanup": {"settings": {"mode": "fill-holes", "max_hole_area": 50}}}, "x").mode
        'fill-holes'
    """
    stated = statement.get("cleanup")
    if stated is None:
        return None
    settings = stated.get("settings") if isinstance(stated, Mapping) else None
    known = {field.name for field in fields(BinaryCleanup)}
    if not isinstance(settings, Mapping) or not settings.keys() <= known:
        raise ValueError(f"{source} names a clean-up unetrt does not know: {settings!r}")
    return BinaryCleanup(**settings)


def stated_cleanup(name: str) -> BinaryCleanup | None:
    """The clean-up the statement of bundled model ``name`` names (:func:`statement_cleanup`), or None.

    Raises:
        ValueError: when the statement's settings are not those of a :class:`BinaryCleanup`.

    Example:
        >>> stated_cleanup("isbi").mode, stated_cleanup("camvid")  # doctest: +SKIP
        ('watershed', None)
    """
    return statement_cleanup(bundled_statement(name), f"the statement of {name!r} (reinstall unetrt)")


def resolve_cleanup(cleanup: BinaryCleanup | str | None, model: str | Path) -> BinaryCleanup | None:
    """The clean-up a Segmenter of ``model`` applies: ``cleanup`` itself, or for ``"stated"`` the one a bundled
    model's statement names (none for a model file); None when it changes nothing.

    Raises:
        ValueError: when ``cleanup`` is a string other than ``"stated"``, or no BinaryCleanup, string or None.

    Example:
        >>> resolve_cleanup("stated", "camvid") is None, resolve_cleanup(None, "isbi") is None
        (True, True)
    """
    if isinstance(cleanup, str):
        if cleanup != STATED:
            raise ValueError(f"cleanup must be a BinaryCleanup, None or {STATED!r}, got {cleanup!r}")
        cleanup = stated_cleanup(str(model)) if is_bundled_name(model) else None
    elif cleanup is not None and not isinstance(cleanup, BinaryCleanup):
        raise ValueError(f"cleanup must be a BinaryCleanup, None or {STATED!r}, got {cleanup!r}; e.g. "
                         "cleanup=BinaryCleanup('watershed') (from unetrt.postprocess)")
    return cleanup if cleanup is not None and cleanup.active else None


def cell_lines(cells: np.ndarray) -> np.ndarray:
    """The one-pixel lines where the cells of a mask meet once each has grown over the background nearest to it.

    Each pixel goes to the 4-connected cell whose nearest pixel is closest (Euclidean, OpenCV's 5x5
    approximation); where two cells then touch side by side, one pixel of the contact becomes a line, so no
    two cells are 4-connected.

    Args:
        cells: HxW mask, non-zero = cell.

    Returns:
        HxW bool, True on the lines; all False when the mask has fewer than two cells.

    Raises:
        ValueError: when the mask is no non-empty HxW array of finite numbers.

    Example:
        >>> m = np.zeros((3, 9), np.uint8); m[:, :2] = 1; m[:, 6:] = 1   # two cells, 4 pixels apart
        >>> np.nonzero(cell_lines(m)[0])[0].tolist()
        [3]
    """
    inside = _checked_map(cells, "the cell mask") != 0
    count, labels = cv2.connectedComponents(inside.astype(np.uint8), connectivity=4)
    if count <= 2:
        return np.zeros(inside.shape, bool)
    # DIST_LABEL_PIXEL gives every cell pixel its own index and every background pixel the index of the
    # cell pixel nearest to it; mapping indices to cells is the Voronoi partition of the cells.
    _, nearest = cv2.distanceTransformWithLabels((~inside).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    cell_of_index = np.zeros(int(nearest.max()) + 1, np.int32)
    cell_of_index[nearest[inside]] = labels[inside]
    return ~_apart(cell_of_index[nearest])


def _apart(owner: np.ndarray) -> np.ndarray:
    """Pixels of ``owner`` (cell ids, 0 = background) left once each side-by-side contact of two cells is cut.

    The scorer's segments are 4-connected, so a cell touching another side by side would merge with it.
    """
    cells = owner > 0
    for axis in (0, 1):
        ahead = np.roll(owner, -1, axis)
        contact = cells & (ahead > 0) & (ahead != owner)
        if axis == 0:
            contact[-1, :] = False
        else:
            contact[:, -1] = False
        cells &= ~contact
        owner = np.where(cells, owner, 0)
    return cells
