"""Segmentation losses chosen by name: (B)CE, pixel-weighted CE, soft Dice, Lovász-softmax, clDice, combinations.

Binary models have one logit channel (sigmoid, binary cross-entropy); multi-class
models have K (softmax, cross-entropy). Target pixels equal to the ignore index
never contribute. Weighted losses take a per-pixel weight map (see
:mod:`unetrt.export.weights`): the U-Net paper's border weights for
``weighted-ce`` and ``dice-ce``, object-size weights for ``size-ce``.

=============  =====================================================  ==========
name           loss                                                   weight map
=============  =====================================================  ==========
``ce``         cross-entropy (class weights optional); BCE if binary  none
``bce``        binary cross-entropy (binary models only)              none
``dice``       soft Dice                                              none
``weighted-ce``  sum_x w(x) CE(x) / #valid pixels                     distance
``dice-ce``    dice_weight * soft Dice + ce_weight * weighted CE       distance
``size-ce``    weighted CE with size weights                          size
``lovasz-ce``  lovasz_weight * Lovász-softmax + ce_weight * weighted  distance
               CE (per-class IoU surrogate: rare classes weigh as
               much as common ones)
``cldice-ce``  dice_weight * soft Dice + cldice_weight * clDice of    distance
               the thin class + ce_weight * weighted CE (keeps thin
               structures such as membranes connected)
=============  =====================================================  ==========
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .train_options import LOSS_NAMES

WEIGHT_MAP_OF_LOSS = {"weighted-ce": "distance", "dice-ce": "distance", "size-ce": "size", "lovasz-ce": "distance",
                      "cldice-ce": "distance"}


def _valid(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    return torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index


def plain_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    binary: bool,
    ignore_index: int | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean (B)CE over the valid pixels; multi-class uses PyTorch's class-weighted mean. 0 when no pixel is scored.

    Args:
        logits: (N, 1, H, W) binary or (N, K, H, W) logits.
        target: (N, H, W) int64 class ids (binary: 0/1).
        binary: one sigmoid channel rather than a softmax over K.
        ignore_index: target id that does not count.
        class_weights: (K,) weights of a multi-class cross-entropy.

    Example:
        >>> plain_cross_entropy(torch.zeros(1, 1, 1, 2), torch.tensor([[[0, 1]]]), True).item()  # ln 2
        0.6931471824645996
    """
    valid = _valid(target, ignore_index)
    if binary:
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], (target == 1).float(), reduction="none")
        return loss[valid].sum() / valid.sum().clamp(min=1)
    ignore = -100 if ignore_index is None else ignore_index
    total = F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore, reduction="sum")
    # PyTorch's mean divides by the scored pixels' summed class weights; with none (a wholly void crop or frame)
    # that is 0 / 0 = NaN, where every other loss says 0.
    if class_weights is None:
        scored = valid.sum().to(total.dtype)
    else:
        scored = class_weights.to(total.dtype)[torch.where(valid, target, torch.zeros_like(target))][valid].sum()
    return total / torch.where(scored > 0, scored, torch.ones_like(scored))


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    pixel_weights: torch.Tensor,
    binary: bool,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """``sum_x w(x) CE(x) / #valid pixels`` (the U-Net paper's energy, eq. 1, as a mean).

    Args:
        logits: (N, 1 or K, H, W).
        target: (N, H, W) class ids.
        pixel_weights: (N, H, W) float weights (class balance included).
        binary: sigmoid/BCE rather than softmax/CE.
        ignore_index: target id that does not count.

    Example:
        >>> weighted_cross_entropy(torch.zeros(1, 1, 1, 2), torch.tensor([[[0, 1]]]),
        ...                        torch.tensor([[[1.0, 3.0]]]), True).item()  # (1 + 3) ln 2 / 2
        1.3862943649291992
    """
    if pixel_weights.shape != target.shape:
        raise ValueError(f"weight map shape {tuple(pixel_weights.shape)} differs from target {tuple(target.shape)}")
    valid = _valid(target, ignore_index)
    if binary:
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], (target == 1).float(), reduction="none")
    else:
        safe = torch.where(valid, target, torch.zeros_like(target))
        per_pixel = F.cross_entropy(logits, safe, reduction="none")
    weighted = (per_pixel * pixel_weights)[valid]
    return weighted.sum() / valid.sum().clamp(min=1)


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, binary: bool, ignore_index: int | None = None, smooth: float = 1.0
) -> torch.Tensor:
    """``1 - mean_c (2 sum p t + s) / (sum p + sum t + s)`` over the batch; binary scores the foreground only.

    Args:
        logits: (N, 1 or K, H, W).
        target: (N, H, W) class ids.
        binary: sigmoid foreground probability rather than softmax over K classes.
        ignore_index: pixels with this target are left out.
        smooth: additive smoothing ``s`` (a class absent from both scores 1).

    Example:
        >>> logits = torch.tensor([[[[0.0, 0.0]]]])  # p = 0.5, 0.5
        >>> round(soft_dice_loss(logits, torch.tensor([[[0, 1]]]), True, smooth=0.0).item(), 4)  # 1 - 1/2
        0.5
    """
    valid = _valid(target, ignore_index).unsqueeze(1).float()
    dims = (0, 2, 3)
    if binary:
        probs = torch.sigmoid(logits[:, :1]) * valid
        onehot = (target == 1).unsqueeze(1).float() * valid
        intersection = (probs * onehot).sum(dims)
        target_total = onehot.sum(dims)
    else:
        # Per class, the target's pixels are counted and its probabilities there summed by class id, rather than
        # through a one-hot (N, K, H, W) copy of the target: the same sums in a K-th of the memory traffic.
        classes = logits.shape[1]
        probs = torch.softmax(logits, dim=1) * valid
        inside = valid[:, 0] > 0
        ids = target[inside]
        at_target = probs.gather(1, torch.where(inside, target, torch.zeros_like(target)).unsqueeze(1))[:, 0]
        intersection = torch.zeros(classes, dtype=probs.dtype, device=probs.device).index_add(
            0, ids, at_target[inside])
        target_total = torch.bincount(ids, minlength=classes)[:classes].to(probs.dtype)
    total = probs.sum(dims) + target_total
    return 1.0 - ((2.0 * intersection + smooth) / (total + smooth).clamp(min=1e-12)).mean()


def _class_probabilities(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    """(N, K, H, W) class probabilities; a binary model's one logit becomes the two classes (0, 1)."""
    if binary:
        foreground = torch.sigmoid(logits[:, :1])
        return torch.cat([1.0 - foreground, foreground], dim=1)
    return torch.softmax(logits, dim=1)


def _lovasz_jaccard_gradient(sorted_truth: torch.Tensor) -> torch.Tensor:
    """The Lovász extension's weights, per row: the Jaccard loss each pixel adds in order of decreasing error."""
    positives = sorted_truth.sum(dim=1, keepdim=True)
    intersection = positives - sorted_truth.cumsum(dim=1)
    union = positives + (1.0 - sorted_truth).cumsum(dim=1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def lovasz_softmax_loss(
    logits: torch.Tensor, target: torch.Tensor, binary: bool, ignore_index: int | None = None
) -> torch.Tensor:
    """Lovász-softmax (Berman et al. 2018): the convex surrogate of ``1 - IoU``, averaged over the classes present.

    Each class present in the batch's valid pixels contributes the Lovász extension of its
    Jaccard loss evaluated at the per-pixel errors ``|[target = c] - p_c|``; on one-hot
    probabilities that is exactly ``1 - IoU_c``. Every class present weighs the same however
    few its pixels, so thin, rare classes (poles, signs) pull as hard as the road.

    Args:
        logits: (N, 1 or K, H, W).
        target: (N, H, W) class ids.
        binary: one sigmoid channel (classes 0 and 1) rather than a softmax over K.
        ignore_index: pixels with this target are left out.

    Returns:
        A scalar; 0 (still attached to ``logits``) when no pixel is valid.

    Example:
        >>> logits = torch.tensor([[[[9.0, -9.0], [9.0, 9.0]]]])  # foreground, background; foreground twice
        >>> target = torch.tensor([[[1, 0], [1, 0]]])
        >>> round(lovasz_softmax_loss(logits, target, True).item(), 2)  # classes' IoU 2/3 and 1/2
        0.42
    """
    probs = _class_probabilities(logits, binary)
    scores = probs.transpose(0, 1).reshape(probs.shape[1], -1)
    labels = target.reshape(-1)
    valid = _valid(labels, ignore_index)
    scores, labels = scores[:, valid], labels[valid]
    present = torch.unique(labels)
    if present.numel() == 0:
        return probs.sum() * 0.0
    # One row per class present, sorted in one call: a sort per class took half again as long.
    truth = (labels.unsqueeze(0) == present.unsqueeze(1)).to(scores.dtype)
    sorted_errors, order = torch.sort((truth - scores[present]).abs(), dim=1, descending=True)
    gradient = _lovasz_jaccard_gradient(torch.gather(truth, 1, order))
    return (sorted_errors * gradient).sum(dim=1).mean()


def _soft_erode(image: torch.Tensor) -> torch.Tensor:
    # The minimum over a plus-shaped neighbourhood, as clDice's soft skeleton defines it.
    vertical = -F.max_pool2d(-image, (3, 1), stride=1, padding=(1, 0))
    horizontal = -F.max_pool2d(-image, (1, 3), stride=1, padding=(0, 1))
    return torch.minimum(vertical, horizontal)


def _soft_open(image: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(_soft_erode(image), 3, stride=1, padding=1)


def soft_skeleton(image: torch.Tensor, iterations: int) -> torch.Tensor:
    """clDice's differentiable skeleton of (N, 1, H, W) values in [0, 1] (Shit et al. 2021, Algorithm 1).

    Args:
        image: (N, 1, H, W) probabilities or a binary mask as floats.
        iterations: erosions; at least half the thickest structure's width in pixels.

    Returns:
        (N, 1, H, W), zero outside ``image`` and one on the centre line of a binary stripe.

    Example:
        >>> bar = torch.zeros(1, 1, 5, 7)
        >>> bar[0, 0, 1:4, :] = 1.0  # three pixels thick
        >>> soft_skeleton(bar, 2)[0, 0, :, 3].tolist()
        [0.0, 0.0, 1.0, 0.0, 0.0]
    """
    skeleton = F.relu(image - _soft_open(image))
    for _ in range(iterations):
        image = _soft_erode(image)
        delta = F.relu(image - _soft_open(image))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def _check_thin_class(thin_class: int, classes: int) -> None:
    if not 0 <= thin_class < classes:
        raise ValueError(f"--thin-class {thin_class} is not one of the model's classes 0-{classes - 1}")


def cldice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    binary: bool,
    thin_class: int,
    ignore_index: int | None = None,
    iterations: int = 5,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft clDice (Shit et al. 2021) of one class: ``1 - F1`` of skeleton precision and sensitivity.

    Topology precision is the share of the predicted skeleton inside the true class; topology
    sensitivity the share of the true skeleton inside the prediction. Structures count by their
    length, not their area: a gap across a one-pixel membrane costs as much as one across a
    five-pixel membrane, where pixel losses charge it a fifth. Gaps in thin membranes merge
    cells, which is what the Rand error punishes.

    Args:
        logits: (N, 1 or K, H, W).
        target: (N, H, W) class ids.
        binary: one sigmoid channel (classes 0 and 1) rather than a softmax over K.
        thin_class: the class of thin structures (ISBI: 0, the membranes).
        ignore_index: pixels with this target are left out.
        iterations: soft erosions of the skeleton (:func:`soft_skeleton`).
        smooth: additive smoothing of both ratios.

    Raises:
        ValueError: when ``thin_class`` is not one of the model's classes.

    Example:
        >>> target = torch.ones(1, 5, 7, dtype=torch.long)
        >>> target[0, 1:4, :] = 0  # a membrane three pixels thick
        >>> perfect = torch.where(target == 0, -20.0, 20.0).float().unsqueeze(1)
        >>> round(cldice_loss(perfect, target, True, thin_class=0, iterations=2).item(), 4)
        0.0
    """
    _check_thin_class(thin_class, 2 if binary else logits.shape[1])
    valid = _valid(target, ignore_index).unsqueeze(1).to(logits.dtype)
    predicted = _class_probabilities(logits, binary)[:, thin_class:thin_class + 1] * valid
    truth = (target == thin_class).unsqueeze(1).to(logits.dtype) * valid
    predicted_skeleton = soft_skeleton(predicted, iterations)
    true_skeleton = soft_skeleton(truth, iterations)
    precision = ((predicted_skeleton * truth).sum() + smooth) / (predicted_skeleton.sum() + smooth)
    sensitivity = ((true_skeleton * predicted).sum() + smooth) / (true_skeleton.sum() + smooth)
    return 1.0 - 2.0 * precision * sensitivity / (precision + sensitivity)


class SegmentationLoss(nn.Module):
    """A loss by name (module table) with its settings; call it as ``loss(logits, target, weights)``.

    Args:
        name: one of :data:`LOSS_NAMES`.
        binary: the model has one sigmoid channel.
        ignore_index: target id that never counts.
        class_weights: (K,) weights of the plain multi-class cross-entropy (``ce``).
        dice_weight: factor of the soft Dice term of ``dice-ce`` and ``cldice-ce``.
        ce_weight: factor of the weighted cross-entropy term of the combinations.
        lovasz_weight: factor of the Lovász-softmax term of ``lovasz-ce``.
        cldice_weight: factor of the clDice term of ``cldice-ce``.
        thin_class: ``cldice-ce``: the class whose thin structures must stay connected.
        cldice_iterations: ``cldice-ce``: soft erosions of the skeleton.

    Raises:
        ValueError: on an unknown name, ``bce`` for a multi-class model, a thin class the
            model does not have, or fewer than one skeleton iteration.

    Example:
        >>> loss = SegmentationLoss("dice-ce", binary=True, dice_weight=0.5)
        >>> loss.weight_map
        'distance'
    """

    def __init__(
        self,
        name: str,
        binary: bool,
        ignore_index: int | None = None,
        class_weights: torch.Tensor | None = None,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        lovasz_weight: float = 1.0,
        cldice_weight: float = 1.0,
        thin_class: int = 0,
        cldice_iterations: int = 5,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
        if name == "bce" and not binary:
            raise ValueError("--loss bce needs a binary model; use --loss ce for a multi-class one")
        if name == "cldice-ce":
            _check_thin_class(thin_class, 2 if binary else num_classes)
            if cldice_iterations < 1:
                raise ValueError(f"--cldice-iterations {cldice_iterations} must be at least 1")
        self.name = name
        self.binary = binary
        self.ignore_index = ignore_index
        self.class_weights = class_weights
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.lovasz_weight = lovasz_weight
        self.cldice_weight = cldice_weight
        self.thin_class = thin_class
        self.cldice_iterations = cldice_iterations

    @property
    def weight_map(self) -> str | None:
        """The kind of per-pixel weight map this loss needs (``distance``, ``size``) or None."""
        return WEIGHT_MAP_OF_LOSS.get(self.name)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of a batch; ``weights`` (N, H, W) is required when :attr:`weight_map` is set."""
        if self.weight_map is not None and weights is None:
            raise ValueError(f"loss {self.name!r} needs {self.weight_map} weight maps with every batch")
        if self.name in ("ce", "bce"):
            weight = None if self.class_weights is None else self.class_weights.to(logits.device)
            return plain_cross_entropy(logits, target, self.binary, self.ignore_index, weight)
        if self.name == "dice":
            return soft_dice_loss(logits, target, self.binary, self.ignore_index)
        assert weights is not None
        weighted = weighted_cross_entropy(logits, target, weights, self.binary, self.ignore_index)
        if self.name == "dice-ce":
            dice = soft_dice_loss(logits, target, self.binary, self.ignore_index)
            return self.dice_weight * dice + self.ce_weight * weighted
        if self.name == "lovasz-ce":
            lovasz = lovasz_softmax_loss(logits, target, self.binary, self.ignore_index)
            return self.lovasz_weight * lovasz + self.ce_weight * weighted
        if self.name == "cldice-ce":
            dice = soft_dice_loss(logits, target, self.binary, self.ignore_index)
            topology = cldice_loss(logits, target, self.binary, self.thin_class, self.ignore_index,
                                   self.cldice_iterations)
            return self.dice_weight * dice + self.cldice_weight * topology + self.ce_weight * weighted
        return weighted
