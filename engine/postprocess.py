"""Optional clean-up of a binary model's probability map into a cell mask: seeded watershed.

A binary membrane model (ISBI 2012) fails in two ways that cost Rand error: a gap in a thin
membrane merges two cells, and a membrane drawn too thick eats into cells. A single threshold
trades one for the other. The seeded watershed takes both from the same map: confident
interiors (probability above ``seed_threshold``, larger than ``min_seed_area`` pixels) are the
seeds, one per cell; they grow over the map, highest probability first, through every pixel
above ``threshold``; where two growing cells meet, a line of background one pixel wide keeps
them apart, so a gap no longer merges them. Pixels at or below ``threshold`` stay background.

numpy and OpenCV only, so the runtime can use it.
"""

from __future__ import annotations

import cv2
import numpy as np

POSTPROCESS_MODES = ("none", "watershed")


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
                     min_seed_area: int = 30) -> np.ndarray:
    """Cell mask of a foreground probability map by seeded watershed (see the module docstring).

    Args:
        probability: HxW float probability of the foreground (cell interior), in [0, 1].
        threshold: pixels at or below it stay background.
        seed_threshold: seeds are the 4-connected regions above it.
        min_seed_area: seeds smaller than this many pixels are dropped (noise, not cells).

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
    count, seeds, stats, _ = cv2.connectedComponentsWithStats((probability > seed_threshold).astype(np.uint8),
                                                              connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_seed_area
    keep[0] = False
    relabel = np.zeros(count, np.int32)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    markers = relabel[seeds]
    background = probability <= threshold
    # One marker for all background, so the flood stops at it instead of crossing it.
    background_marker = int(keep.sum()) + 1
    markers[background] = background_marker
    # cv2.watershed floods the 8-bit image from low to high: low values are where cells are surest.
    # It marks the image's outermost pixels as boundary, so it runs on a copy one pixel larger all round.
    relief = np.clip((1.0 - probability) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    relief = cv2.copyMakeBorder(relief, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    flooded = cv2.copyMakeBorder(markers, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.watershed(cv2.merge((relief, relief, relief)), flooded)
    markers = flooded[1:-1, 1:-1]
    cells = (markers > 0) & (markers != background_marker)
    # The scorer's segments are 4-connected: wherever two cells still touch side by side, cut the contact.
    owner = np.where(cells, markers, 0)
    for axis in (0, 1):
        ahead = np.roll(owner, -1, axis)
        contact = (owner > 0) & (ahead > 0) & (ahead != owner)
        if axis == 0:
            contact[-1, :] = False
        else:
            contact[:, -1] = False
        cells &= ~contact
        owner = np.where(cells, owner, 0)
    return cells.astype(np.uint8)
