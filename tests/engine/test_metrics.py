"""Segmentation metrics on small cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unetrt.metrics import ConfusionMatrix, confusion_matrix, dice, pixel_error, rand_error


def test_confusion_matrix_counts_rows_target_cols_pred() -> None:
    target = np.array([[0, 0, 1], [2, 2, 1]])
    pred = np.array([[0, 1, 1], [2, 0, 1]])
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    matrix = confusion_matrix(pred, target, 3)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, expected)


def test_confusion_matrix_skips_ignore_and_out_of_range_targets() -> None:
    target = np.array([0, 1, 11, 255, 1])
    pred = np.array([0, 0, 1, 1, 1])
    np.testing.assert_array_equal(confusion_matrix(pred, target, 2, ignore_index=11), [[1, 0], [1, 1]])


def test_confusion_matrix_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
    with pytest.raises(ValueError, match="predicted class ids"):
        confusion_matrix(np.array([5]), np.array([0]), 2)


def test_accumulated_iou_accuracy_and_absent_class() -> None:
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(np.array([0, 0, 1]), np.array([0, 1, 1]))
    cm.update(np.array([1, 0]), np.array([1, 255]))
    # class 0: tp 1, fp 1, fn 0 -> 1/2; class 1: tp 2, fn 1 -> 2/3; class 2 absent -> NaN
    iou = cm.iou()
    assert iou[0] == pytest.approx(0.5)
    assert iou[1] == pytest.approx(2 / 3)
    assert math.isnan(iou[2])
    assert cm.mean_iou() == pytest.approx((0.5 + 2 / 3) / 2)
    assert cm.pixel_accuracy() == pytest.approx(3 / 4)


def test_dice_and_pixel_error() -> None:
    pred = np.array([[1, 1, 0, 0]])
    target = np.array([[1, 0, 1, 0]])
    assert dice(pred, target) == pytest.approx(0.5)
    assert pixel_error(pred, target) == pytest.approx(0.5)
    assert dice(np.zeros(4), np.zeros(4)) == 1.0
    assert pixel_error(np.full(4, 255), np.ones(4)) == 0.0


def test_rand_error_perfect_is_zero_and_ignores_membrane_pixels() -> None:
    target = np.array([[1, 1, 0, 0, 1, 1], [1, 1, 0, 0, 1, 1]])
    assert rand_error(target, target) == 0.0
    # a thinner predicted membrane errs only on pixels that are membrane in the truth: not scored
    pred = target.copy()
    pred[:, 2] = 1
    assert pixel_error(pred, target) > 0
    assert rand_error(pred, target) == 0.0


def test_rand_error_merge_by_hand() -> None:
    target = np.array([[1, 1, 0, 1, 1]])
    pred = np.ones_like(target)
    # n_ij = (2, 2): sum 8; s = (4): 16; t = (2, 2): 8 -> split 0.5, merge 1, F = 2/3
    assert rand_error(pred, target) == pytest.approx(1 / 3)


def test_rand_error_split_by_hand() -> None:
    target = np.ones((1, 5), dtype=np.uint8)
    pred = np.array([[1, 1, 0, 1, 1]])
    # scored pixels 5: n_ij = (2, 2) + one background singleton: sum 9; s: 4 + 4 + 1 = 9; t = 25
    v_split, v_merge = 1.0, 9 / 25
    assert rand_error(pred, target) == pytest.approx(1 - 2 * v_split * v_merge / (v_split + v_merge))


def test_rand_error_uses_four_connectivity() -> None:
    # two cells touching only diagonally are two segments, so predicting them as such is perfect
    target = np.array([[1, 0], [0, 1]])
    assert rand_error(target, target) == 0.0
    assert rand_error(np.zeros((2, 2)), target) == pytest.approx(0.0)  # only singletons: one per true cell
    assert rand_error(np.ones((2, 2)), target) == pytest.approx(1 / 3)


def test_rand_error_without_foreground_and_bad_shape() -> None:
    assert rand_error(np.ones((3, 3)), np.zeros((3, 3))) == 0.0
    with pytest.raises(ValueError, match="2-D"):
        rand_error(np.ones(3), np.ones(3))
