"""Segmentation metrics on small cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unetrt.metrics import ConfusionMatrix, IsbiChallengeScorer, confusion_matrix, dice, pixel_error, rand_error


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
    # Id K itself: counted, it would land in the next row's column 0 (target 0 * 2 + 2 is cell (1, 0)).
    with pytest.raises(ValueError, match=r"predicted class ids must lie in \[0, 2\), got 2\.\.2"):
        confusion_matrix(np.array([2]), np.array([0]), 2)


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


def test_precision_and_recall_by_hand_with_a_class_never_predicted() -> None:
    cm = ConfusionMatrix(3)
    # class 0: 3 pixels, 2 found; class 1: 1 pixel, found, and 2 others painted as it; class 2: never predicted
    cm.update(np.array([0, 0, 1, 1, 1, 0]), np.array([0, 0, 0, 1, 2, 2]))
    np.testing.assert_allclose(cm.precision()[:2], [2 / 3, 1 / 3])
    np.testing.assert_allclose(cm.recall(), [2 / 3, 1.0, 0.0])
    assert math.isnan(cm.precision()[2])


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


def test_challenge_scorer_two_cells_by_hand() -> None:
    from unetrt.metrics import IsbiChallengeScorer

    # Two 2-pixel cells; the membrane pixel has probability 0.35, so thresholds 0.0-0.3 merge the
    # cells and 0.4-0.7 separate them; above 0.8 the right cell's 0.8 pixel turns background.
    target = np.array([[1, 1, 0, 1, 1]])
    probability = np.array([[0.9, 0.9, 0.35, 0.8, 0.9]])
    scorer = IsbiChallengeScorer()
    scorer.update(probability, target)
    scores = scorer.scores()
    assert (scores.pixel_error, scores.pixel_threshold) == (0.0, 0.4)
    assert (scores.rand_error, scores.rand_threshold) == (0.0, 0.4)

    merged = IsbiChallengeScorer(thresholds=[0.3])
    merged.update(probability, target)
    # Pixels: TP 4, one false positive -> F = 8/9. Rand: TP pairs 1 + 1 = 2, predicted-same pairs
    # C(4, 2) = 6 (the membrane pixel is not scored), true-same pairs 2 -> P 1/3, R 1, F 1/2.
    assert merged.scores().pixel_error == pytest.approx(1 - 8 / 9)
    assert merged.scores().rand_error == pytest.approx(0.5)


def test_challenge_scorer_pools_counts_over_slices() -> None:
    from unetrt.metrics import IsbiChallengeScorer

    target = np.array([[1, 1, 0, 1, 1]])
    scorer = IsbiChallengeScorer(thresholds=[0.5])
    scorer.update(np.array([[0.9, 0.9, 0.9, 0.9, 0.9]]), target)  # merged: 2 of 6 pairs right
    scorer.update(np.array([[0.9, 0.9, 0.1, 0.9, 0.9]]), target)  # perfect: 2 of 2
    # Pooled: TP 4, predicted-same 8, true-same 4 -> P 1/2, R 1, F 2/3 (a per-slice mean would give 3/4).
    assert scorer.scores().rand_error == pytest.approx(1 / 3)
    # Pooled pixels: TP 8, one error -> F = 16/17.
    assert scorer.scores().pixel_error == pytest.approx(1 - 16 / 17)


def test_challenge_scorer_split_and_background_pixels() -> None:
    from unetrt.metrics import IsbiChallengeScorer

    # One 4-pixel cell predicted as two 2-pixel pieces (a false membrane between them).
    scorer = IsbiChallengeScorer(thresholds=[0.5])
    scorer.update(np.array([[0.9, 0.9, 0.1, 0.9, 0.9]]), np.array([[1, 1, 1, 1, 1]]))
    # Scored 5 pixels, true-same pairs C(5, 2) = 10; predicted segments of 2 and 2 -> 2 pairs, all right;
    # the background pixel is in no predicted segment. P 1, R 2/10 -> F = 1/3.
    assert scorer.scores().rand_error == pytest.approx(2 / 3)


def test_challenge_scorer_rejects_bad_input() -> None:
    from unetrt.metrics import IsbiChallengeScorer

    with pytest.raises(ValueError, match="ascending"):
        IsbiChallengeScorer(thresholds=[0.5, 0.2])
    with pytest.raises(ValueError, match="ascending"):
        IsbiChallengeScorer(thresholds=[1.5])
    with pytest.raises(ValueError, match="call update"):
        IsbiChallengeScorer().scores()
    with pytest.raises(ValueError, match="2-D"):
        IsbiChallengeScorer().update(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))



def test_per_threshold_errors_are_what_scores_takes_the_best_of_and_what_one_threshold_gives() -> None:
    rng = np.random.default_rng(3)
    slices = []
    for _ in range(2):
        truth = np.full((32, 32), 1, np.uint8)
        truth[::8, :] = truth[:, ::8] = 0
        slices.append((np.clip(truth * 0.7 + rng.normal(0.15, 0.2, truth.shape), 0, 1), truth))
    scorer = IsbiChallengeScorer()
    for probability, truth in slices:
        scorer.update(probability, truth)
    rows, scores = scorer.per_threshold(), scorer.scores()
    assert [row["threshold"] for row in rows] == list(scorer.thresholds)
    best_pixel = min(rows, key=lambda row: (row["pixel_error"], row["threshold"]))
    best_rand = min(rows, key=lambda row: (row["rand_error"], row["threshold"]))
    assert (best_pixel["pixel_error"], best_pixel["threshold"]) == (scores.pixel_error, scores.pixel_threshold)
    assert (best_rand["rand_error"], best_rand["threshold"]) == (scores.rand_error, scores.rand_threshold)
    single = IsbiChallengeScorer(thresholds=(0.3,))
    for probability, truth in slices:
        single.update(probability, truth)
    assert single.per_threshold() == [row for row in rows if row["threshold"] == 0.3]


@pytest.mark.parametrize(("pred", "target", "message"), [
    (np.array([[0.9, 1.9]]), np.array([[1, 2]]),
     "predicted class ids must be an integer .*got dtype float64; take the argmax"),
    (np.array([[np.nan, 1.0]]), np.array([[1, 1]]), "predicted class ids must be an integer .*got dtype float64"),
    (np.array([[0, 1]]), np.array([[1.0, 2.0]]), "target class ids must be an integer .*got dtype float64; read label"),
])
def test_confusion_matrix_refuses_ids_that_are_no_integers(pred: np.ndarray, target: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        confusion_matrix(pred, target, 3)


@pytest.mark.parametrize("num_classes", [2.5, "2", True, 0])
def test_num_classes_must_be_an_int_of_at_least_1(num_classes: object) -> None:
    with pytest.raises(ValueError, match="num_classes must be an int of at least 1, got"):
        confusion_matrix(np.array([0, 1]), np.array([0, 1]), num_classes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes must be an int of at least 1, got"):
        ConfusionMatrix(num_classes)  # type: ignore[arg-type]


def test_bool_masks_and_numpy_class_counts_are_accepted() -> None:
    matrix = confusion_matrix(np.array([True, False]), np.array([1, 1], np.uint8), np.int64(2))  # type: ignore[arg-type]
    np.testing.assert_array_equal(matrix, [[0, 0], [1, 1]])
    assert ConfusionMatrix(np.int64(2)).num_classes == 2  # type: ignore[arg-type]


def test_rand_error_and_the_challenge_refuse_empty_masks_as_pixel_error_does() -> None:
    empty = np.zeros((0, 3))
    with pytest.raises(ValueError, match="pixel error of empty masks is undefined"):
        pixel_error(empty, empty)
    with pytest.raises(ValueError, match="Rand error of empty masks is undefined"):
        rand_error(empty, empty)
    with pytest.raises(ValueError, match=r"the challenge scores non-empty 2-D slices, got shape \(0, 3\)"):
        IsbiChallengeScorer().update(empty, empty)


@pytest.mark.parametrize("thresholds", [[math.nan], [0.1, math.nan], None, ["a"], [0.5, 0.5], [0.6, 0.4], [-0.1],
                                        [1.1]])
def test_challenge_thresholds_must_be_numbers_in_the_unit_range(thresholds: object) -> None:
    with pytest.raises(ValueError, match=r"thresholds must be ascending values in \[0, 1\], got"):
        IsbiChallengeScorer(thresholds=thresholds)  # type: ignore[arg-type]


def test_confusion_matrix_skips_an_ignore_index_inside_the_class_range() -> None:
    # Own data may mark unlabelled pixels 0 with classes 0..1: the ignored pixels must not count as class 0.
    pred, target = np.array([1, 0, 1]), np.array([0, 0, 1])
    np.testing.assert_array_equal(confusion_matrix(pred, target, 2, ignore_index=0), [[0, 0], [0, 1]])


def test_a_target_id_equal_to_num_classes_is_skipped_without_an_ignore_index() -> None:
    # CamVid's void is 11 with 11 classes: the first id past the table is unlabelled, not an error.
    np.testing.assert_array_equal(confusion_matrix(np.array([0, 1]), np.array([2, 1]), 2), [[0, 0], [0, 1]])


def test_any_non_zero_value_is_foreground_in_the_binary_figures() -> None:
    assert pixel_error(np.array([[-1, 0]]), np.array([[1, 0]])) == 0.0
    assert dice(np.array([-1, 0]), np.array([1, 0])) == 1.0


def test_the_challenge_sweeps_the_thresholds_0_to_1_in_tenths_by_default() -> None:
    expected = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert IsbiChallengeScorer().thresholds == expected
    scorer = IsbiChallengeScorer()
    scorer.update(np.array([[0.9, 0.2]]), np.array([[1, 0]]))
    assert [row["threshold"] for row in scorer.per_threshold()] == list(expected)


def test_a_challenge_pixel_exactly_at_the_threshold_is_background() -> None:
    # Foreground is probability > t: at t = 0.5 the 0.5 pixel is background, as in the truth, so nothing is wrong;
    # counted as foreground it would be a false positive: TP 1, FP 1 -> F 2/3.
    scorer = IsbiChallengeScorer(thresholds=(0.5,))
    scorer.update(np.array([[0.5, 0.9]]), np.array([[0, 1]]))
    assert scorer.scores().pixel_error == 0.0
