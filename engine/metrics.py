"""Segmentation quality figures: confusion matrix, IoU, pixel accuracy, Dice, pixel and Rand error.

numpy and OpenCV only (the runtime never imports torch or scipy). Predictions and
targets are integer label maps of the same shape; the binary figures take 0/1
masks (any non-zero value counts as foreground).
"""

from __future__ import annotations

import cv2
import numpy as np


def _check_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    return pred, target


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
        ValueError: on a shape mismatch, ``num_classes < 1`` or predicted ids out of range.

    Example:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
        array([[1, 1],
               [0, 1]])
    """
    pred, target = _check_pair(pred, target)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
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
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add the pixels of one prediction/target pair."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def iou(self) -> np.ndarray:
        """Intersection over union per class; NaN for a class absent from both prediction and target."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

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
        ValueError: when the masks are not 2-D or differ in shape.

    Example:
        >>> target = np.array([[1, 1, 0, 1, 1]])
        >>> round(rand_error(np.array([[1, 1, 1, 1, 1]]), target), 4)  # both cells merged
        0.3333
    """
    pred, target = _check_pair(pred, target)
    if pred.ndim != 2:
        raise ValueError(f"rand_error needs 2-D masks, got shape {pred.shape}")
    true_seg = _components(target != 0)
    pred_seg = _components(pred != 0)
    scored = true_seg > 0
    if not scored.any():
        return 0.0
    t_ids = true_seg[scored].astype(np.int64)
    p_ids = pred_seg[scored].astype(np.int64)
    in_pred = p_ids > 0
    singletons = int((~in_pred).sum())
    pairs = t_ids[in_pred] * (int(p_ids.max()) + 1) + p_ids[in_pred]
    _, n_ij = np.unique(pairs, return_counts=True)
    _, s_j = np.unique(p_ids[in_pred], return_counts=True)
    _, t_i = np.unique(t_ids, return_counts=True)
    sum_ij = float(np.sum(n_ij.astype(np.float64) ** 2)) + singletons
    v_split = sum_ij / (float(np.sum(s_j.astype(np.float64) ** 2)) + singletons)
    v_merge = sum_ij / float(np.sum(t_i.astype(np.float64) ** 2))
    return 1.0 - 2.0 * v_split * v_merge / (v_split + v_merge)
