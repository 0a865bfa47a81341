"""Undo part of the class balancing a network learned: a shift of its head's biases by the class weights.

Trained with class-weighted cross-entropy (``unet-train --class-weights median-freq``), a network's softmax
estimates the weighted posterior q(c|x), proportional to w_c p(c|x): a rare class with weight 5 is predicted
wherever it is a fifth as likely as the rest. Subtracting ``tau * log w_c`` from the logits divides the weights
back out: tau = 1 gives the unweighted posterior (best pixel accuracy), tau = 0 leaves the network as trained.
Mean IoU rewards something in between (a rare class must be found, but not painted over its neighbours), so
tau is one number chosen on selection data (``tools/select_prior_correction.py``).

The shift is folded into the 1x1 head's biases, so every file exported from the corrected checkpoint, on every
backend and precision, gives the corrected answers, at no cost per frame. The checkpoint records the shift, so
:func:`undo_class_prior` gives back the weights as trained (``unet-train --init`` of a bundled model starts there).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from unetrt.model_info import ModelInfo

from .model import UNet


def class_weights_of(info: ModelInfo) -> list[float]:
    """The class weights a multi-class model was trained with (``info.extra['class_weights']``).

    Raises:
        ValueError: for a binary model, or one trained without class weights (nothing to undo).

    Example:
        >>> class_weights_of(info)  # doctest: +SKIP
        [0.31, 0.22, 4.95, ...]
    """
    if info.binary:
        raise ValueError(f"model {info.name!r} is binary: its one logit has no class weights to divide out")
    weights = info.extra.get("class_weights")
    if not isinstance(weights, Sequence) or len(weights) != info.num_classes:
        raise ValueError(f"model {info.name!r} records no class weights (trained with --class-weights none?): "
                         "there is no class balancing to undo")
    values = [float(w) for w in weights]
    if not all(math.isfinite(w) and w > 0 for w in values):
        # A class absent from the training labels gets weight 0 (median_frequency_weights): its log is -inf.
        raise ValueError(f"model {info.name!r} has class weights {values}: each must be positive and finite to be "
                         "divided out")
    return values


def correct_class_prior(model: UNet, info: ModelInfo, tau: float) -> tuple[UNet, ModelInfo]:
    """The model with ``tau * log(class weight)`` subtracted from each class's head bias.

    Args:
        model: a trained multi-class U-Net (changed in place and returned).
        info: its ModelInfo; the returned one records ``extra['prior_correction']``.
        tau: 0 (as trained) to 1 (the class weights divided out entirely).

    Returns:
        (model, info) with the corrected head.

    Raises:
        ValueError: for tau outside [0, 1], a model corrected before, or one without class weights
            (:func:`class_weights_of`).

    Example:
        >>> model, info = correct_class_prior(*load_model("runs/camvid/best.pt"), 0.5)  # doctest: +SKIP
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be between 0 (as trained) and 1 (weights divided out), got {tau}")
    if "prior_correction" in info.extra:
        raise ValueError(f"model {info.name!r} was corrected before ({info.extra['prior_correction']}); "
                         "correct the checkpoint it came from instead")
    shift = [tau * math.log(w) for w in class_weights_of(info)]
    _subtract_from_head_bias(model, info, shift)
    extra = {**info.extra, "prior_correction": {"tau": tau, "bias_shift": [-s for s in shift]}}
    return model, dataclasses.replace(info, extra=extra)


def undo_class_prior(model: UNet, info: ModelInfo) -> tuple[UNet, ModelInfo]:
    """The model as trained: the bias shift a prior correction recorded (``info.extra['prior_correction']``) taken
    back out of the head.

    Args:
        model: a model corrected by :func:`correct_class_prior` (changed in place and returned).
        info: its ModelInfo; the returned one no longer records a correction.

    Returns:
        (model, info) with the head as trained.

    Raises:
        ValueError: for a model without a recorded correction, or a record that does not fit its head.

    Example:
        >>> model, info = undo_class_prior(*load_model("engine/models/camvid.pt"))  # doctest: +SKIP
    """
    record = info.extra.get("prior_correction")
    shift = record.get("bias_shift") if isinstance(record, dict) else None
    if not isinstance(shift, Sequence) or len(shift) != info.num_classes:
        raise ValueError(f"model {info.name!r} records no prior correction with one bias shift per class "
                         f"(got {record!r}): there is nothing to undo")
    _subtract_from_head_bias(model, info, [float(v) for v in shift])
    extra = {key: value for key, value in info.extra.items() if key != "prior_correction"}
    return model, dataclasses.replace(info, extra=extra)


def _subtract_from_head_bias(model: UNet, info: ModelInfo, values: Sequence[float]) -> None:
    bias = model.head.bias
    if bias is None:
        raise ValueError(f"model {info.name!r} has a head without biases: there is nowhere to fold the correction")
    with torch.no_grad():
        bias.sub_(torch.tensor(values, device=bias.device, dtype=bias.dtype))
