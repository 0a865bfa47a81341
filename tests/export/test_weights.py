"""Weight maps: hand-computed border weights, brute-force distances, size weights, caching."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from unetrt.export import weights as weights_module
from unetrt.export.weights import (
    class_balance_map,
    distance_weight_map,
    label_objects,
    nearest_object_distances,
    precompute_weight_maps,
    size_weight_map,
)


def test_border_weight_in_gap_between_two_cells_by_hand() -> None:
    mask = np.ones((6, 9), dtype=np.uint8)
    mask[:, 4] = 0  # one-pixel membrane between a 4-wide and a 4-wide cell
    w = distance_weight_map(mask, binary=True, w0=10, sigma=5)
    # 6 membrane pixels of 54: w_c(membrane) = 54 / (2 * 6) = 4.5, w_c(cell) = 54 / (2 * 48) = 0.5625
    assert w[3, 4] == pytest.approx(4.5 + 10 * math.exp(-(1 + 1) ** 2 / 50), rel=1e-5)
    assert w[3, 0] == pytest.approx(0.5625)  # inside a cell: no border term
    assert np.all(w[:, 4] > w[:, 3])


def test_wide_gap_weighs_less_than_narrow_gap() -> None:
    mask = np.ones((8, 20), dtype=np.uint8)
    mask[:, 4] = 0
    mask[:, 10:16] = 0  # six-pixel gap
    w = distance_weight_map(mask, binary=True, class_weights=np.ones(2))
    assert w[4, 4] > w[4, 12] > 1.0


def test_distances_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    mask = (ndimage.gaussian_filter(rng.random((40, 50)), 2) > 0.5).astype(np.uint8)
    objects = label_objects(mask, binary=True)
    assert objects.max() >= 3
    d1, d2 = nearest_object_distances(objects, reach=100)
    fields = np.stack([ndimage.distance_transform_edt(objects != k) for k in range(1, objects.max() + 1)])
    fields.sort(axis=0)
    np.testing.assert_allclose(d1, fields[0], atol=1e-3)
    np.testing.assert_allclose(d2, fields[1], atol=1e-3)


def test_class_balance_map_and_ignore() -> None:
    mask = np.array([[0, 0, 0, 1, 255]])
    w = class_balance_map(mask, 2, ignore_index=255)
    np.testing.assert_allclose(w, [[4 / 6, 4 / 6, 4 / 6, 2.0, 0.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="class_weights"):
        class_balance_map(mask, 2, class_weights=np.ones(3))


def test_multiclass_border_on_both_sides_and_ignored_pixels_weigh_zero() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:, 5:] = 1
    mask[0, 0] = 9
    w = distance_weight_map(mask, binary=False, num_classes=2, ignore_index=9, class_weights=np.ones(2))
    assert w[0, 0] == 0.0
    # pixels touching the boundary: d1 = 0, d2 = 1
    assert w[5, 4] == pytest.approx(1 + 10 * math.exp(-1 / 50), rel=1e-5)
    assert w[5, 5] == pytest.approx(w[5, 4])
    assert w[5, 0] < w[5, 3] < w[5, 4]


def test_w0_zero_leaves_the_class_balance_alone() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:, 5:] = 1
    mask[0, 0] = 9
    balance = np.array([0.5, 3.0])
    w = distance_weight_map(mask, binary=False, num_classes=2, ignore_index=9, class_weights=balance, w0=0.0)
    np.testing.assert_array_equal(w, class_balance_map(mask, 2, 9, balance))
    assert w[5, 4] == 0.5 and w[5, 5] == 3.0 and w[0, 0] == 0.0


def test_size_weights_small_objects_heavier_background_fixed() -> None:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[0:2, 0:2] = 1  # area 4
    mask[10:20, 10:20] = 1  # area 100
    w = size_weight_map(mask, binary=True, ref_fraction=0.1, power=0.5, max_weight=10)
    assert w[0, 0] == pytest.approx(math.sqrt(40 / 4))
    assert w[15, 15] == 1.0  # area 100 > 40: clipped at 1
    assert w[5, 5] == 1.0  # background
    multi = size_weight_map(np.array([[0, 0, 1, 7]]), binary=False, ignore_index=7, ref_fraction=1.0, power=1.0)
    np.testing.assert_allclose(multi, [[2.0, 2.0, 4.0, 0.0]])


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="2-D"):
        distance_weight_map(np.ones(5), binary=True)
    with pytest.raises(ValueError, match="sigma"):
        distance_weight_map(np.ones((3, 3)), binary=True, sigma=0)
    with pytest.raises(ValueError, match="w0 at least 0"):
        distance_weight_map(np.ones((3, 3)), binary=True, w0=-1.0)
    with pytest.raises(ValueError, match="unknown weight map kind"):
        precompute_weight_maps([np.ones((3, 3))], "nope", binary=True)


def test_precompute_caches_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    masks = [np.eye(12, dtype=np.uint8), 1 - np.eye(12, dtype=np.uint8)]
    first = precompute_weight_maps(masks, "distance", binary=True, cache_dir=tmp_path, sigma=3.0)
    assert len(list(tmp_path.glob("weights_distance_*.npz"))) == 1

    def fail(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(weights_module, "weight_map", fail)
    second = precompute_weight_maps(masks, "distance", binary=True, cache_dir=tmp_path, sigma=3.0)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-2)
    with pytest.raises(AssertionError, match="cache"):  # another setting is another cache entry
        precompute_weight_maps(masks, "distance", binary=True, cache_dir=tmp_path, sigma=4.0)


def test_isbi_slice_membranes_between_cells_are_heavy(shared_data: Path) -> None:
    from unetrt.datasets import read_label

    mask = read_label(shared_data / "isbi2012-em" / "labels" / "00.png", binary=True)
    w = distance_weight_map(mask, binary=True)
    membrane, cell = w[mask == 0], w[mask == 1]
    assert membrane.mean() > 3 * cell.mean()
    assert cell.max() == pytest.approx(cell.min())  # one class weight inside cells


def test_border_term_scales_with_w0() -> None:
    # The one-pixel gap of a 1x5 mask: d1 = d2 = 1, w_c(gap) = 5 / (2 * 1) = 2.5, border w0 exp(-4 / 50).
    mask = np.array([[1, 1, 0, 1, 1]])
    for w0 in (3.0, 25.0):
        w = distance_weight_map(mask, binary=True, w0=w0, sigma=5)
        assert w[0, 2] == pytest.approx(2.5 + w0 * math.exp(-4 / 50), rel=1e-5)


def test_class_balance_counts_only_the_classes_present_and_not_the_ignored_one() -> None:
    # Classes 0 and 2 of three, two pixels each: N / (K_present * n_c) = 4 / (2 * 2) = 1 everywhere.
    np.testing.assert_allclose(class_balance_map(np.array([[0, 0, 2, 2]]), 3), [[1.0, 1.0, 1.0, 1.0]], rtol=1e-6)
    # A one-class binary mask weighs 1, not 1/2.
    np.testing.assert_allclose(class_balance_map(np.ones((2, 2), np.int64), 2), np.ones((2, 2)), rtol=1e-6)
    # An ignore index inside the class range: 4 scored pixels (three 0, one 1): 4/6 and 2; the ignored one 0.
    w = class_balance_map(np.array([[0, 0, 0, 1, 2]]), 3, ignore_index=2)
    np.testing.assert_allclose(w, [[4 / 6, 4 / 6, 4 / 6, 2.0, 0.0]], rtol=1e-6)


def test_border_term_reaches_the_far_object_up_to_the_tolerance() -> None:
    # Cells at columns 0 and 18. Column 1 has d1 = 1, d2 = 17: the term 10 exp(-18^2 / 50) = 0.0153 is above the
    # tolerance 1e-3 (reach = 5 sqrt(2 ln 1e4) = 21.5), so it must be there although column 1 lies 17 pixels from
    # the second cell's box.
    mask = np.zeros((1, 30), dtype=np.uint8)
    mask[0, [0, 18]] = 1
    w = distance_weight_map(mask, binary=True, class_weights=np.ones(2))
    expected = 1 + 10 * math.exp(-(18**2) / 50)
    assert w[0, 1] == pytest.approx(expected, rel=1e-5)
    assert w[0, 9] == pytest.approx(expected, rel=1e-5)  # d1 = d2 = 9: the same sum


def test_cells_touching_only_at_a_corner_are_two_objects() -> None:
    # 4-connectivity: diagonal neighbours are separate cells (a one-pixel membrane crossing between them).
    np.testing.assert_array_equal(label_objects(np.array([[1, 0], [0, 1]]), binary=True), [[1, 0], [0, 2]])


@pytest.mark.parametrize("w0", [10.0, 1e5])
def test_maps_read_back_from_the_cache_are_the_maps_computed(tmp_path: Path, w0: float) -> None:
    # unet-train's first leg computes the maps and writes the cache; a --resume of it reads them back. Rounded to
    # float16 on the way, the resumed run trained on other weights than the uninterrupted one (and a border weight
    # past 65504 came back inf).
    masks = [np.eye(12, dtype=np.uint8), 1 - np.eye(12, dtype=np.uint8)]
    first = precompute_weight_maps(masks, "distance", binary=True, cache_dir=tmp_path, w0=w0)
    second = precompute_weight_maps(masks, "distance", binary=True, cache_dir=tmp_path, w0=w0)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(b, a)


def test_a_binary_mask_leaves_its_ignored_pixels_out_as_the_losses_do() -> None:
    # The losses take an ignore id for binary models too; the maps counted ignored pixels as cell: they shifted the
    # class balance and formed a second cell that put a border term on the membrane. By hand, 3 scored pixels
    # (2 cell, 1 membrane): w_c = 3 / (2 * 2) = 0.75 and 3 / (2 * 1) = 1.5; one cell, so no border term.
    mask = np.array([[1, 1, 0, 255]])
    w = distance_weight_map(mask, binary=True, ignore_index=255)
    np.testing.assert_allclose(w, [[0.75, 0.75, 1.5, 0.0]], rtol=1e-6)
    # size weights: the cell of area 1 among 4 pixels weighs (1.0 * 4 / 1) ** 1 = 4, membrane 1, ignored 0
    sizes = size_weight_map(np.array([[1, 0, 255, 255]]), binary=True, ignore_index=255, ref_fraction=1.0, power=1.0)
    np.testing.assert_allclose(sizes, [[4.0, 1.0, 0.0, 0.0]])
