"""Per-pixel loss weight maps: the U-Net paper's border weights and object-size weights.

Objects are the 4-connected components of the foreground (binary masks: cells
separated by membranes, as in ISBI 2012) or of each class (multi-class label
maps); pixels equal to the ignore index belong to no object and weigh 0.

Distance (border) weights, Ronneberger et al. 2015, eq. 2::

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

``w_c`` balances the class frequencies (``w_c = N / (K * n_c)`` for class c with
``n_c`` of the ``N`` scored pixels and ``K`` the classes present, so a balanced image
has weight 1 everywhere);
``d1`` and ``d2`` are the distances to the nearest and the second-nearest object
(0 inside an object for its own object). In a binary mask the border term is added
on background pixels only - the narrow gaps between touching cells, as in the
paper's figure 3d; in a multi-class map every pixel belongs to an object, so the
term lights up both sides of every boundary between two objects.

Size weights: a pixel of an object of area ``A`` weighs
``clip((ref_fraction * H * W / A) ** power, 1, max_weight)``, so objects smaller
than ``ref_fraction`` of the image weigh more; binary background weighs 1.

The distance term is below ``tolerance`` once ``d1 + d2 > reach`` with
``reach = sigma * sqrt(2 ln(w0 / tolerance))``, so each object's distance field
is computed only in its bounding box grown by ``reach`` (OpenCV's exact
Euclidean distance transform) - a 512x512 ISBI slice takes tens of milliseconds.
:func:`precompute_weight_maps` caches a data set's maps on disk.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

WEIGHT_KINDS = ("distance", "size")


def label_objects(mask: np.ndarray, binary: bool, ignore_index: int | None = None) -> np.ndarray:
    """Objects of a label map as int32 ids (0 = no object).

    Args:
        mask: HxW 0/1 mask (binary) or class ids.
        binary: objects are the components of the foreground; otherwise of every class.
        ignore_index: class id that forms no object (multi-class only).

    Returns:
        HxW int32 object ids 1..n.

    Example:
        >>> label_objects(np.array([[1, 0, 1]]), binary=True).tolist()
        [[1, 0, 2]]
    """
    mask = _check_mask(mask)
    if binary:
        _, objects = cv2.connectedComponents((mask != 0).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        return objects
    objects = np.zeros(mask.shape, dtype=np.int32)
    offset = 0
    for value in np.unique(mask):
        if ignore_index is not None and value == ignore_index:
            continue
        count, parts = cv2.connectedComponents((mask == value).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        inside = parts > 0
        objects[inside] = parts[inside] + offset
        offset += count - 1
    return objects


def class_balance_map(
    mask: np.ndarray, num_classes: int, ignore_index: int | None = None, class_weights: np.ndarray | None = None
) -> np.ndarray:
    """``w_c(x)``: the weight of each pixel's class; 0 on ignored or out-of-range pixels.

    Args:
        mask: HxW class ids (binary: 0/1 with ``num_classes=2``).
        num_classes: K.
        ignore_index: class id not scored.
        class_weights: fixed weights per class (e.g. from a whole data set); by default
            ``N / (K_present * n_c)`` from this mask alone (K_present = classes present).

    Returns:
        HxW float32.

    Example:
        >>> [round(float(v), 3) for v in class_balance_map(np.array([[0, 1, 1, 1]]), 2)[0]]
        [2.0, 0.667, 0.667, 0.667]
    """
    mask = _check_mask(mask).astype(np.int64)
    valid = (mask >= 0) & (mask < num_classes)
    if ignore_index is not None:
        valid &= mask != ignore_index
    if class_weights is None:
        counts = np.bincount(mask[valid], minlength=num_classes).astype(np.float64)
        present = counts > 0
        table: NDArray[np.float64] = np.zeros(num_classes)
        table[present] = counts.sum() / (present.sum() * counts[present])
    else:
        table = np.asarray(class_weights, dtype=np.float64)
        if table.shape != (num_classes,):
            raise ValueError(f"class_weights needs {num_classes} values, got shape {table.shape}")
    weights = np.zeros(mask.shape, dtype=np.float32)
    weights[valid] = table[mask[valid]]
    return weights


def nearest_object_distances(objects: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``d1``, ``d2`` of every pixel to its nearest and second-nearest object.

    Each object's exact Euclidean distance field is computed in its bounding box
    grown by ``reach``; beyond that the distance is reported as ``inf``.

    Args:
        objects: HxW int32 object ids (0 = none), as from :func:`label_objects`.
        reach: distances above this need not be exact.

    Returns:
        (d1, d2), HxW float32 each; 0 inside an object for that object.

    Example:
        >>> d1, d2 = nearest_object_distances(np.array([[1, 0, 0, 2]], dtype=np.int32), 10)
        >>> d1.tolist(), d2.tolist()
        ([[0.0, 1.0, 1.0, 0.0]], [[3.0, 2.0, 2.0, 3.0]])
    """
    height, width = objects.shape
    d1 = np.full(objects.shape, np.inf, dtype=np.float32)
    d2 = np.full(objects.shape, np.inf, dtype=np.float32)
    margin = math.ceil(reach)
    for index, box in enumerate(_object_boxes(objects), start=1):
        if box is None:
            continue
        rows, cols = box
        top, bottom = max(rows.start - margin, 0), min(rows.stop + margin, height)
        left, right = max(cols.start - margin, 0), min(cols.stop + margin, width)
        crop = objects[top:bottom, left:right]
        # distanceTransform measures to the nearest zero pixel: make the object the zeros.
        distance = cv2.distanceTransform((crop != index).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        near, second = d1[top:bottom, left:right], d2[top:bottom, left:right]
        np.minimum(second, np.maximum(near, distance), out=second)
        np.minimum(near, distance, out=near)
    return d1, d2


def _object_boxes(objects: np.ndarray) -> list[tuple[slice, slice] | None]:
    """Bounding box (rows, cols) of every object id 1..max (None for an unused id)."""
    count = int(objects.max()) if objects.size else 0
    boxes: list[tuple[slice, slice] | None] = [None] * count
    ys, xs = np.nonzero(objects)
    if ys.size == 0:
        return boxes
    ids = objects[ys, xs] - 1
    y_min, y_max = np.full(count, objects.shape[0]), np.full(count, -1)
    x_min, x_max = np.full(count, objects.shape[1]), np.full(count, -1)
    np.minimum.at(y_min, ids, ys)
    np.maximum.at(y_max, ids, ys)
    np.minimum.at(x_min, ids, xs)
    np.maximum.at(x_max, ids, xs)
    for i in np.flatnonzero(y_max >= 0):
        boxes[i] = (slice(int(y_min[i]), int(y_max[i]) + 1), slice(int(x_min[i]), int(x_max[i]) + 1))
    return boxes


def distance_weight_map(
    mask: np.ndarray,
    binary: bool,
    num_classes: int = 2,
    w0: float = 10.0,
    sigma: float = 5.0,
    ignore_index: int | None = None,
    class_weights: np.ndarray | None = None,
    tolerance: float = 1e-3,
) -> np.ndarray:
    """The U-Net paper's weight map ``w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2))`` (module docstring).

    Args:
        mask: HxW 0/1 mask (binary) or class ids.
        binary: binary foreground/background mask; the border term goes on background pixels.
        num_classes: K for the class balance (binary: 2).
        w0: border weight; 0 leaves the class balance ``w_c`` alone (no border term).
        sigma: border width in pixels.
        ignore_index: class id that weighs 0 and forms no object.
        class_weights: fixed per-class ``w_c`` values (default: balanced from this mask).
        tolerance: border terms below this are left out (sets the search reach).

    Returns:
        HxW float32, 0 on ignored pixels.

    Raises:
        ValueError: on a non-2-D mask, a negative ``w0`` or a non-positive ``sigma``/``tolerance``.

    Example:
        >>> mask = np.array([[1, 1, 0, 1, 1]])
        >>> w = distance_weight_map(mask, binary=True)
        >>> round(float(w[0, 2]), 3)  # the gap: w_c 2.5 plus 10 exp(-4/50)
        11.731
    """
    if sigma <= 0 or w0 < 0 or tolerance <= 0:
        raise ValueError(f"sigma and tolerance must be positive and w0 at least 0, got {sigma}, {tolerance}, {w0}")
    mask = _check_mask(mask)
    labels = _binary_labels(mask, ignore_index) if binary else mask
    weights = class_balance_map(labels, 2 if binary else num_classes, None if binary else ignore_index, class_weights)
    if w0 == 0:
        return weights
    objects = label_objects(labels == 1 if binary else labels, binary, ignore_index)
    reach = sigma * math.sqrt(2.0 * math.log(max(w0 / tolerance, 1.0 + 1e-9)))
    d1, d2 = nearest_object_distances(objects, reach)
    total = d1 + d2
    border = np.zeros(mask.shape, dtype=np.float32)
    near = np.isfinite(total)
    border[near] = w0 * np.exp(-(total[near] ** 2) / (2.0 * sigma**2))
    if binary:
        border[objects > 0] = 0.0
    border[weights == 0] = 0.0
    return weights + border


def size_weight_map(
    mask: np.ndarray,
    binary: bool,
    ignore_index: int | None = None,
    ref_fraction: float = 0.01,
    power: float = 0.5,
    max_weight: float = 10.0,
) -> np.ndarray:
    """Object-size weights: ``clip((ref_fraction * H * W / area) ** power, 1, max_weight)``.

    Args:
        mask: HxW 0/1 mask (binary) or class ids.
        binary: objects are foreground components; background weighs 1.
        ignore_index: class id that weighs 0.
        ref_fraction: objects smaller than this fraction of the image weigh more than 1.
        power: how fast the weight grows as objects shrink.
        max_weight: cap for the tiniest objects.

    Returns:
        HxW float32.

    Example:
        >>> mask = np.zeros((10, 10), np.uint8); mask[0, 0] = 1; mask[5:, 5:] = 1
        >>> w = size_weight_map(mask, binary=True, ref_fraction=0.25, power=1.0)
        >>> float(w[0, 0]), float(w[9, 9]), float(w[0, 9])  # area 1, area 25, background
        (10.0, 1.0, 1.0)
    """
    if not 0 < ref_fraction <= 1 or power <= 0 or max_weight < 1:
        raise ValueError(
            f"need 0 < ref_fraction <= 1, power > 0 and max_weight >= 1, got {ref_fraction}, {power}, {max_weight}"
        )
    mask = _check_mask(mask)
    objects = label_objects(_binary_labels(mask, ignore_index) == 1 if binary else mask, binary, ignore_index)
    areas = np.bincount(objects.ravel()).astype(np.float64)
    areas[0] = np.inf
    table = np.clip((ref_fraction * mask.size / areas) ** power, 1.0, max_weight)
    weights = table[objects].astype(np.float32)
    weights[objects == 0] = 1.0
    if ignore_index is not None:
        weights[mask == ignore_index] = 0.0
    return weights


def weight_map(mask: np.ndarray, kind: str, binary: bool, num_classes: int = 2,
               ignore_index: int | None = None, **options: Any) -> np.ndarray:
    """Either map by name: ``"distance"`` (:func:`distance_weight_map`) or ``"size"`` (:func:`size_weight_map`).

    Raises:
        ValueError: on an unknown kind.

    Example:
        >>> weight_map(np.ones((4, 4), np.uint8), "size", binary=True).shape
        (4, 4)
    """
    if kind == "distance":
        return distance_weight_map(mask, binary, num_classes, ignore_index=ignore_index, **options)
    if kind == "size":
        return size_weight_map(mask, binary, ignore_index, **options)
    raise ValueError(f"unknown weight map kind {kind!r}; choose one of {', '.join(WEIGHT_KINDS)}")


def precompute_weight_maps(
    masks: Sequence[np.ndarray],
    kind: str,
    binary: bool,
    num_classes: int = 2,
    ignore_index: int | None = None,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> list[np.ndarray]:
    """Weight maps of a whole data set, read from / written to a cache file when ``cache_dir`` is given.

    The cache file name hashes the masks and every setting, so a changed data set or
    option never reuses stale maps. Maps are stored as float32, exactly as computed: a run
    that reads them (a ``--resume``) trains on the weights its first leg trained on.

    Returns:
        One HxW float32 map per mask.

    Example:
        >>> maps = precompute_weight_maps([np.ones((8, 8), np.uint8)], "distance", binary=True)
        >>> maps[0].dtype
        dtype('float32')
    """
    if kind not in WEIGHT_KINDS:
        raise ValueError(f"unknown weight map kind {kind!r}; choose one of {', '.join(WEIGHT_KINDS)}")
    cache_file = None
    if cache_dir is not None:
        # "float32": caches of the float16 format before it hash to other names and are never read back.
        settings = (kind, binary, num_classes, ignore_index, sorted(options.items()), "float32")
        digest = hashlib.sha1(repr(settings).encode())
        for mask in masks:
            digest.update(repr(mask.shape).encode())
            digest.update(np.ascontiguousarray(mask).tobytes())
        cache_file = Path(cache_dir) / f"weights_{kind}_{digest.hexdigest()[:16]}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as stored:
                return [stored[f"m{i}"].astype(np.float32) for i in range(len(masks))]
    maps = [
        weight_map(mask, kind, binary, num_classes, ignore_index, **options)
        for mask in tqdm(masks, desc=f"{kind} weight maps", unit="map", leave=False, disable=None)
    ]
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.stem + ".tmp.npz")
        arrays: dict[str, Any] = {f"m{i}": m.astype(np.float32) for i, m in enumerate(maps)}
        np.savez(tmp, **arrays)
        tmp.replace(cache_file)
    return maps


def _binary_labels(mask: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """A binary mask as 0 (background), 1 (foreground) and 2 (ignored: no class, so it weighs 0 and is no cell)."""
    labels = (mask != 0).astype(np.uint8)
    if ignore_index is not None:
        labels[mask == ignore_index] = 2
    return labels


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a label map must be 2-D (HxW), got shape {mask.shape}")
    return mask
