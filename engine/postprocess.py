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
        ValueError: on an unknown mode or settings out of range.

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
        if self.max_hole_area < 0:
            raise ValueError(f"the maximum hole area must be at least 0 pixels, got {self.max_hole_area}")
        check_watershed_settings(0.0, self.seed_threshold, self.min_seed_area)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"the mask threshold must lie in [0, 1], got {self.threshold}")
        if self.lines_threshold is not None and not 0.0 <= self.lines_threshold <= 1.0:
            raise ValueError(f"the cell lines' threshold must lie in [0, 1], got {self.lines_threshold}")

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

        Example:
            >>> BinaryCleanup(threshold=0.7).apply(np.array([[0.6, 0.8]], np.float32)).tolist()
            [[0, 1]]
        """
        if threshold is None:
            threshold = self.threshold
        if self.lines_threshold is None:
            return self._cells(probability, threshold)
        # The mode splits cells; the threshold only sets how thick the membrane is drawn between them. A
        # watershed below its seeds would flood flat membrane from one cell and draw lines through cells.
        mask = fill_holes((np.asarray(probability) > threshold).astype(np.uint8), self.max_hole_area)
        mask[cell_lines(self._cells(probability, self.lines_threshold))] = 0
        return mask

    def _cells(self, probability: np.ndarray, threshold: float) -> np.ndarray:
        if self.mode == "watershed":
            seed = max(self.seed_threshold, threshold)
            return seeded_watershed(probability, threshold, seed, self.min_seed_area, self.max_hole_area)
        mask = (np.asarray(probability) > threshold).astype(np.uint8)
        return fill_holes(mask, self.max_hole_area) if self.mode == "fill-holes" else mask


def fill_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Turn background specks smaller than ``max_area`` pixels that do not touch the image border into foreground.

    Background is taken 8-connected, so a thin diagonal membrane still counts as one piece.

    Args:
        mask: HxW uint8, non-zero = foreground.
        max_area: specks of fewer pixels are filled (0: nothing changes).

    Returns:
        HxW uint8 mask, 1 = foreground.

    Example:
        >>> m = np.ones((4, 4), np.uint8); m[1, 1] = 0
        >>> int(fill_holes(m, 2).sum())
        16
    """
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
    """Raise ValueError unless 0 <= threshold <= seed_threshold <= 1 and min_seed_area >= 1.

    Example:
        >>> check_watershed_settings(0.3, 0.8, 20)
    """
    if not 0.0 <= threshold <= seed_threshold <= 1.0:
        raise ValueError(f"the watershed needs 0 <= threshold <= seed threshold <= 1, got threshold {threshold} "
                         f"and seed threshold {seed_threshold}")
    if min_seed_area < 1:
        raise ValueError(f"the minimum seed area must be at least 1 pixel, got {min_seed_area}")


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
        ValueError: when the map is not 2-D or the settings are out of range.

    Example:
        >>> p = np.full((5, 7), 0.95, np.float32); p[:, 3] = 0.6   # a weak membrane in column 3
        >>> seeded_watershed(p, threshold=0.5, seed_threshold=0.9, min_seed_area=2)[0]
        array([1, 1, 1, 0, 1, 1, 1], dtype=uint8)
    """
    if probability.ndim != 2 or probability.size == 0:
        raise ValueError(f"the watershed takes a non-empty HxW probability map, got shape {probability.shape}")
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
        ValueError: when ``cleanup`` is a string other than ``"stated"``.

    Example:
        >>> resolve_cleanup("stated", "camvid") is None, resolve_cleanup(None, "isbi") is None
        (True, True)
    """
    if isinstance(cleanup, str):
        if cleanup != STATED:
            raise ValueError(f"cleanup must be a BinaryCleanup, None or {STATED!r}, got {cleanup!r}")
        cleanup = stated_cleanup(str(model)) if is_bundled_name(model) else None
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
        ValueError: when the mask is not 2-D or is empty.

    Example:
        >>> m = np.zeros((3, 9), np.uint8); m[:, :2] = 1; m[:, 6:] = 1   # two cells, 4 pixels apart
        >>> np.nonzero(cell_lines(m)[0])[0].tolist()
        [3]
    """
    if cells.ndim != 2 or cells.size == 0:
        raise ValueError(f"cell lines take a non-empty HxW mask, got shape {cells.shape}")
    inside = np.asarray(cells) != 0
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
