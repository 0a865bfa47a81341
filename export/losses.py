"""Segmentation losses chosen by name: (B)CE, pixel-weighted CE, soft Dice and their combinations.

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
=============  =====================================================  ==========
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

LOSS_NAMES = ("ce", "bce", "dice", "weighted-ce", "dice-ce", "size-ce")
WEIGHT_MAP_OF_LOSS = {"weighted-ce": "distance", "dice-ce": "distance", "size-ce": "size"}


def _valid(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    return torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index


def plain_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    binary: bool,
    ignore_index: int | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean (B)CE over the valid pixels; multi-class uses PyTorch's class-weighted mean.

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
    if binary:
        valid = _valid(target, ignore_index)
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], (target == 1).float(), reduction="none")
        return loss[valid].mean() if ignore_index is not None else loss.mean()
    ignore = -100 if ignore_index is None else ignore_index
    return F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore)


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
    if binary:
        probs = torch.sigmoid(logits[:, :1])
        onehot = (target == 1).unsqueeze(1).float()
    else:
        probs = torch.softmax(logits, dim=1)
        safe = torch.where(valid[:, 0] > 0, target, torch.zeros_like(target))
        onehot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).float()
    probs, onehot = probs * valid, onehot * valid
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * intersection + smooth) / (total + smooth).clamp(min=1e-12)).mean()


class SegmentationLoss(nn.Module):
    """A loss by name (module table) with its settings; call it as ``loss(logits, target, weights)``.

    Args:
        name: one of :data:`LOSS_NAMES`.
        binary: the model has one sigmoid channel.
        ignore_index: target id that never counts.
        class_weights: (K,) weights of the plain multi-class cross-entropy (``ce``).
        dice_weight: factor of the soft Dice term of ``dice-ce``.
        ce_weight: factor of the weighted cross-entropy term of ``dice-ce``.

    Raises:
        ValueError: on an unknown name or ``bce`` for a multi-class model.

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
    ) -> None:
        super().__init__()
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
        if name == "bce" and not binary:
            raise ValueError("--loss bce needs a binary model; use --loss ce for a multi-class one")
        self.name = name
        self.binary = binary
        self.ignore_index = ignore_index
        self.class_weights = class_weights
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight

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
        return weighted
