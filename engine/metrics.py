"""Segmentation quality figures: confusion matrix, IoU, pixel accuracy, Dice, pixel and Rand error.

numpy and OpenCV only (the runtime never imports torch or scipy). Predictions and
targets are integer label maps of the same shape; the binary figures take 0/1
masks (any non-zero value counts as foreground).

Two readings of the ISBI 2012 figures live here. ``pixel_error`` and ``rand_error``
score one binary mask (the model's own 0.5 threshold). ``IsbiChallengeScorer``
follows the challenge's evaluation (the one the U-Net paper's 0.0611 and 0.0382
come from): the probability map is thresholded at 0.0, 0.1, ..., 1.0, counts are
pooled over the stack, and each error is 1 minus the best F-score over thresholds.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np


def _check_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    return pred, target


def _check_num_classes(num_classes: object) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be an int of at least 1, got {num_classes!r}")


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """Pixel counts per (target class, predicted class).

    Target pixels equal to ``ignore_index``, negative or ``>= num_classes`` are skipped
    (they are unlabelled); predicted ids outside ``[0, num_classes)`` are an error.

    Args:
        pred: predicted class ids, any shape.
        target: true class ids, same shape.
        num_classes: K.
        ignore_index: target id that is not scored, or None.

    Returns:
        K x K int64 matrix, rows = target class, columns = predicted class.

    Raises:
        ValueError: on a shape mismatch, ids that are no integers (or bools), ``num_classes`` that is no int
            of at least 1, or predicted ids out of range.

    Example:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
        array([[1, 1],
               [0, 1]])
    """
    pred, target = _check_pair(pred, target)
    _check_num_classes(num_classes)
    for name, ids, advice in (("predicted", pred, "take the argmax (or threshold) of the scores first"),
                              ("target", target, "read label maps as integers, e.g. uint8")):
        # Casting would truncate 0.9 to class 0 and NaN to a huge negative id: class ids are integers.
        if ids.dtype.kind not in "biu":
            raise ValueError(f"{name} class ids must be an integer (or bool) array, got dtype {ids.dtype}; {advice}")
    pred = pred.astype(np.int64, copy=False).ravel()
    target = target.astype(np.int64, copy=False).ravel()
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid &= target != ignore_index
    pred, target = pred[valid], target[valid]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(
            f"predicted class ids must lie in [0, {num_classes}), got {int(pred.min())}..{int(pred.max())}"
        )
    counts = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


class ConfusionMatrix:
    """Accumulates a confusion matrix over many images and derives IoU and accuracy from it.

    Args:
        num_classes: K.
        ignore_index: target id that is not scored, or None.

    Example:
        >>> cm = ConfusionMatrix(2)
        >>> cm.update(np.array([[0, 1]]), np.array([[0, 1]]))
        >>> cm.mean_iou()
        1.0
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        _check_num_classes(num_classes)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add the pixels of one prediction/target pair."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def iou(self) -> np.ndarray:
        """Intersection over union per class; NaN for a class absent from both prediction and target."""
        tp = np.diag(self.matrix)
        return self._share_of(self.matrix.sum(0) + self.matrix.sum(1) - tp)

    def precision(self) -> np.ndarray:
        """Per class, the share of the pixels predicted as it that are it; NaN for a class never predicted."""
        return self._share_of(self.matrix.sum(0))

    def recall(self) -> np.ndarray:
        """Per class, the share of its pixels predicted as it; NaN for a class absent from the targets."""
        return self._share_of(self.matrix.sum(1))

    def _share_of(self, totals: np.ndarray) -> np.ndarray:
        """Each class's correctly predicted pixels over ``totals``; NaN where the total is 0."""
        tp = np.diag(self.matrix).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(totals > 0, tp / np.maximum(totals, 1), np.nan)

    def mean_iou(self) -> float:
        """Mean IoU over the classes that occur (NaN when nothing was counted)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Fraction of scored pixels predicted right (NaN when nothing was counted)."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient 2|P∩T| / (|P| + |T|) of two binary masks; 1.0 when both are empty.

    Example:
        >>> dice(np.array([1, 1, 0]), np.array([1, 0, 0]))
        0.6666666666666666
    """
    pred, target = _check_pair(pred, target)
    p, t = pred != 0, target != 0
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


def pixel_error(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of pixels whose binary value differs (ISBI 2012 pixel error).

    Example:
        >>> pixel_error(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
        0.25
    """
    pred, target = _check_pair(pred, target)
    if pred.size == 0:
        raise ValueError("pixel error of empty masks is undefined")
    return float(np.mean((pred != 0) != (target != 0)))


def _components(mask: np.ndarray) -> np.ndarray:
    """4-connected components of a 2-D foreground mask (0 = background, 1.. = segments)."""
    # 4-connectivity: diagonal gaps in a one-pixel membrane do not merge two cells.
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    return labels


def _segment_overlaps(t_ids: np.ndarray, p_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts n_ij of every (true, predicted) segment pair and s_j of every predicted segment.

    Pixels with predicted id 0 (background) belong to no predicted segment and are left out.
    """
    in_pred = p_ids > 0
    if not in_pred.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    pairs = t_ids[in_pred] * (int(p_ids.max()) + 1) + p_ids[in_pred]
    return np.unique(pairs, return_counts=True)[1], np.unique(p_ids[in_pred], return_counts=True)[1]


def rand_error(pred: np.ndarray, target: np.ndarray) -> float:
    """ISBI 2012 foreground-restricted Rand error, 1 - F of Rand split and merge scores.

    Segments are the 4-connected components of the foreground (1 = cell interior) of
    each 2-D mask. Only pixels where the ground truth is foreground are scored (the
    membrane is excluded). A scored pixel the prediction calls background is its own
    one-pixel segment (it separates nothing, so it counts as a split). With n_ij the
    pixels in true segment i and predicted segment j, t_i = sum_j n_ij, s_j = sum_i n_ij:

        V_split = sum n_ij^2 / sum s_j^2,  V_merge = sum n_ij^2 / sum t_i^2,
        F = 2 V_split V_merge / (V_split + V_merge),  error = 1 - F.

    Args:
        pred: 2-D predicted binary mask.
        target: 2-D true binary mask, same shape.

    Returns:
        A value in [0, 1); 0 when the ground truth has no foreground.

    Raises:
        ValueError: when the masks are not 2-D, are empty or differ in shape.

    Example:
        >>> target = np.array([[1, 1, 0, 1, 1]])
        >>> round(rand_error(np.array([[1, 1, 1, 1, 1]]), target), 4)  # both cells merged
        0.3333
    """
    pred, target = _check_pair(pred, target)
    if pred.ndim != 2:
        raise ValueError(f"rand_error needs 2-D masks, got shape {pred.shape}")
    if pred.size == 0:
        raise ValueError("Rand error of empty masks is undefined")
    true_seg = _components(target != 0)
    pred_seg = _components(pred != 0)
    scored = true_seg > 0
    if not scored.any():
        return 0.0
    t_ids = true_seg[scored].astype(np.int64)
    p_ids = pred_seg[scored].astype(np.int64)
    singletons = int(np.count_nonzero(p_ids == 0))
    n_ij, s_j = _segment_overlaps(t_ids, p_ids)
    _, t_i = np.unique(t_ids, return_counts=True)
    sum_ij = float(np.sum(n_ij.astype(np.float64) ** 2)) + singletons
    v_split = sum_ij / (float(np.sum(s_j.astype(np.float64) ** 2)) + singletons)
    v_merge = sum_ij / float(np.sum(t_i.astype(np.float64) ** 2))
    return 1.0 - 2.0 * v_split * v_merge / (v_split + v_merge)


# The ISBI 2012 evaluation script binarises proposals at 0.0, 0.1, ..., 1.0.
CHALLENGE_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class IsbiChallengeScores:
    """ISBI 2012 challenge figures: 1 - best F-score over thresholds, and the threshold that gave it.

    Attributes:
        pixel_error: 1 - max F-score of foreground (cell interior) pixel classification.
        pixel_threshold: the threshold of that best pixel F-score.
        rand_error: 1 - max F-score of the foreground-restricted Rand index.
        rand_threshold: the threshold of that best Rand F-score.
    """

    pixel_error: float
    pixel_threshold: float
    rand_error: float
    rand_threshold: float


def _pairs(counts: np.ndarray) -> float:
    """Number of unordered pixel pairs inside groups of these sizes."""
    counts = counts.astype(np.float64)
    return float(np.sum(counts * (counts - 1.0) / 2.0))


class IsbiChallengeScorer:
    """Pools the ISBI 2012 challenge's pixel and Rand counts over slices, for every threshold.

    At threshold t a pixel is predicted foreground where probability > t. Pixel
    F-score: F = 2 TP / (2 TP + FP + FN) over foreground pixels. Rand F-score over
    pixel pairs, restricted to pixels that are foreground in the ground truth (4-connected
    components are the segments; a pixel predicted background is in no predicted
    segment): with n_ij the pixels in true segment i and predicted segment j,
    t_i and s_j their row and column sums (s_j over predicted segments only),

        TP = sum C(n_ij, 2),  precision = TP / sum C(s_j, 2),  recall = TP / sum C(t_i, 2),
        F = 2 precision recall / (precision + recall).

    The counts of all slices are added before F is taken, and the lowest threshold
    with the best F wins, as in the challenge's Fiji script.

    Args:
        thresholds: binarisation thresholds in [0, 1], ascending.
        binarize: how a map becomes a mask at a threshold (default ``probability > threshold``); a
            post-processing step such as :func:`unetrt.postprocess.seeded_watershed` is scored this way.

    Raises:
        ValueError: when the thresholds are empty, unsorted, NaN or outside [0, 1].

    Example:
        >>> scorer = IsbiChallengeScorer()
        >>> scorer.update(np.array([[0.9, 0.9, 0.3, 0.8, 0.9]]), np.array([[1, 1, 0, 1, 1]]))
        >>> scorer.scores().rand_error, scorer.scores().rand_threshold
        (0.0, 0.3)
    """

    def __init__(self, thresholds: Sequence[float] = CHALLENGE_THRESHOLDS,
                 binarize: Callable[[np.ndarray, float], np.ndarray] | None = None) -> None:
        try:
            values = np.asarray(thresholds, dtype=np.float64)
        except (TypeError, ValueError):  # strings, ragged lists
            values = np.empty(0)
        # NaN fails every comparison, so it would pass the order and range checks.
        if (values.ndim != 1 or values.size == 0 or not np.isfinite(values).all() or np.any(np.diff(values) <= 0)
                or values[0] < 0 or values[-1] > 1):
            raise ValueError(f"thresholds must be ascending values in [0, 1], got {thresholds!r}")
        self.thresholds = tuple(float(t) for t in values)
        self.binarize = binarize
        # Per threshold: pixel TP, FP + FN; Rand pair TP, predicted-same pairs, true-same pairs.
        self._pixel = np.zeros((values.size, 2), dtype=np.float64)
        self._rand = np.zeros((values.size, 3), dtype=np.float64)
        self.slices = 0

    def update(self, probability: np.ndarray, target: np.ndarray) -> None:
        """Add one slice: its foreground probability map and its true binary mask (non-zero = foreground).

        Raises:
            ValueError: when the arrays are not non-empty 2-D of the same shape.
        """
        probability, target = _check_pair(probability, target)
        if probability.ndim != 2 or probability.size == 0:
            raise ValueError(f"the challenge scores non-empty 2-D slices, got shape {probability.shape}")
        truth = target != 0
        true_seg = _components(truth)
        scored = true_seg > 0
        t_ids = true_seg[scored].astype(np.int64)
        true_pairs = _pairs(np.unique(t_ids, return_counts=True)[1])
        for row, threshold in enumerate(self.thresholds):
            pred = probability > threshold if self.binarize is None else self.binarize(probability, threshold) != 0
            tp = float(np.count_nonzero(pred & truth))
            self._pixel[row] += (tp, float(np.count_nonzero(pred != truth)))
            n_ij, s_j = _segment_overlaps(t_ids, _components(pred)[scored].astype(np.int64))
            self._rand[row] += (_pairs(n_ij), _pairs(s_j), true_pairs)
        self.slices += 1

    def _f_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel and Rand F-score per threshold, pooled over the slices."""
        if self.slices == 0:
            raise ValueError("no slices were scored: call update() first")
        tp, wrong = self._pixel[:, 0], self._pixel[:, 1]
        pixel_f = np.divide(2 * tp, 2 * tp + wrong, out=np.zeros_like(tp), where=(2 * tp + wrong) > 0)
        both, predicted, true = self._rand.T
        precision = np.divide(both, predicted, out=np.zeros_like(both), where=predicted > 0)
        recall = np.divide(both, true, out=np.zeros_like(both), where=true > 0)
        total = precision + recall
        rand_f = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
        return pixel_f, rand_f

    def scores(self) -> IsbiChallengeScores:
        """The pooled challenge figures.

        Raises:
            ValueError: when no slice was added.
        """
        pixel_f, rand_f = self._f_scores()
        best_pixel, best_rand = int(np.argmax(pixel_f)), int(np.argmax(rand_f))
        return IsbiChallengeScores(
            pixel_error=float(1.0 - pixel_f[best_pixel]), pixel_threshold=self.thresholds[best_pixel],
            rand_error=float(1.0 - rand_f[best_rand]), rand_threshold=self.thresholds[best_rand],
        )

    def per_threshold(self) -> list[dict[str, float]]:
        """Pixel and Rand error at every threshold (those :meth:`scores` takes the best of): the figures of the
        one mask each threshold gives.

        Raises:
            ValueError: when no slice was added.

        Example:
            >>> scorer = IsbiChallengeScorer(thresholds=(0.5, 0.85))
            >>> scorer.update(np.array([[0.9, 0.9, 0.3, 0.8, 0.9]]), np.array([[1, 1, 0, 1, 1]]))
            >>> [round(row["pixel_error"], 3) for row in scorer.per_threshold()]
            [0.0, 0.143]
        """
        pixel_f, rand_f = self._f_scores()
        return [{"threshold": t, "pixel_error": float(1.0 - p), "rand_error": float(1.0 - r)}
                for t, p, r in zip(self.thresholds, pixel_f, rand_f, strict=True)]
