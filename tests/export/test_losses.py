"""Every loss: its value on a hand-computed case, and that training on a tiny fixed problem lowers it."""

from __future__ import annotations

import math

import pytest
import torch

from unetrt.export.losses import (
    LOSS_NAMES,
    SegmentationLoss,
    plain_cross_entropy,
    soft_dice_loss,
    weighted_cross_entropy,
)

LN2 = math.log(2)


def test_bce_value_by_hand_and_ignore_index() -> None:
    logits = torch.tensor([[[[0.0, math.log(3.0), 0.0]]]])  # p = 1/2, 3/4, 1/2
    target = torch.tensor([[[0, 1, 7]]])
    expected = (LN2 + -math.log(0.75)) / 2
    assert plain_cross_entropy(logits, target, True, ignore_index=7).item() == pytest.approx(expected, rel=1e-6)
    assert SegmentationLoss("bce", binary=True, ignore_index=7)(logits, target).item() == pytest.approx(expected)


def test_ce_value_by_hand_with_class_weights_and_ignore() -> None:
    logits = torch.zeros(1, 3, 1, 3)  # uniform: every pixel costs ln 3
    logits[0, 0, 0, 0] = math.log(2.0)  # pixel 0: p(class 0) = 2/4
    target = torch.tensor([[[0, 2, 5]]])
    weights = torch.tensor([1.0, 1.0, 3.0])
    # PyTorch's weighted mean: (1 * ln 2 + 3 * ln 3) / (1 + 3); pixel 2 ignored
    expected = (LN2 + 3 * math.log(3)) / 4
    loss = SegmentationLoss("ce", binary=False, ignore_index=5, class_weights=weights)
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_value_by_hand() -> None:
    logits = torch.zeros(1, 2, 1, 3)
    target = torch.tensor([[[0, 1, 9]]])
    pixel_weights = torch.tensor([[[2.0, 5.0, 100.0]]])
    # mean over the two valid pixels of w * ln 2
    expected = (2 + 5) * LN2 / 2
    got = weighted_cross_entropy(logits, target, pixel_weights, binary=False, ignore_index=9)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    size_loss = SegmentationLoss("size-ce", binary=False, ignore_index=9)
    assert size_loss(logits, target, pixel_weights).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_value_by_hand_multiclass() -> None:
    logits = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])  # p(class 0) = 3/4, 1/2
    target = torch.tensor([[[0, 1]]])
    # class 0: p = (.75, .5), t = (1, 0): 2 * .75 / (1.25 + 1); class 1: p = (.25, .5), t = (0, 1): 2 * .5 / (.75 + 1)
    expected = 1 - (1.5 / 2.25 + 1.0 / 1.75) / 2
    assert soft_dice_loss(logits, target, binary=False, smooth=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_dice_ce_is_the_linear_combination() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 4, 4))
    weights = torch.rand(2, 4, 4) * 5
    combined = SegmentationLoss("dice-ce", binary=True, dice_weight=0.3, ce_weight=2.0)(logits, target, weights)
    expected = 0.3 * soft_dice_loss(logits, target, True) + 2.0 * weighted_cross_entropy(logits, target, weights, True)
    assert combined.item() == pytest.approx(expected.item(), rel=1e-6)


def test_map_losses_need_weights_and_bad_names_raise() -> None:
    with pytest.raises(ValueError, match="needs distance weight maps"):
        SegmentationLoss("weighted-ce", binary=True)(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown loss"):
        SegmentationLoss("focal", binary=True)
    with pytest.raises(ValueError, match="binary model"):
        SegmentationLoss("bce", binary=False)
    with pytest.raises(ValueError, match="weight map shape"):
        target = torch.zeros(1, 2, 2, dtype=torch.long)
        weighted_cross_entropy(torch.zeros(1, 1, 2, 2), target, torch.ones(1, 3, 3), True)


CASES = [(name, binary) for name in LOSS_NAMES for binary in (True, False) if (name, binary) != ("bce", False)]


@pytest.mark.parametrize(("name", "binary"), CASES)
def test_every_loss_decreases_on_a_tiny_fixed_problem(name: str, binary: bool) -> None:
    torch.manual_seed(0)
    classes = 1 if binary else 3
    image = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2 if binary else 3, (2, 8, 8))
    target[:, 0, 0] = 9  # an ignored pixel in every sample
    weights = 1 + torch.rand(2, 8, 8) * 4
    model = torch.nn.Conv2d(2, classes, 3, padding=1)
    loss_fn = SegmentationLoss(name, binary, ignore_index=9)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    values = []
    for _ in range(30):
        loss = loss_fn(model(image), target, weights if loss_fn.weight_map else None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.9 * values[0]
