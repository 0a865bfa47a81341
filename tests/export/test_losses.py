"""Every loss: its value on a hand-computed case, and that training on a tiny fixed problem lowers it."""

from __future__ import annotations

import math

import pytest
import torch

from unetrt.export.losses import (
    LOSS_NAMES,
    SegmentationLoss,
    cldice_loss,
    lovasz_softmax_loss,
    plain_cross_entropy,
    soft_dice_loss,
    soft_skeleton,
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


def test_soft_dice_multiclass_equals_the_one_hot_sums_with_their_gradient() -> None:
    # The one-hot formulation written out independently: the sums by class id must give its value and gradient,
    # with an ignored id and a class that no target pixel holds.
    torch.manual_seed(3)
    logits = torch.randn(2, 4, 6, 7, requires_grad=True)
    target = torch.randint(0, 3, (2, 6, 7))  # class 3 absent
    target[0, :2] = 9
    valid = (target != 9).unsqueeze(1).float()
    probs = torch.softmax(logits, 1) * valid
    onehot = torch.stack([(target == c).float() for c in range(4)], 1) * valid
    dims = (0, 2, 3)
    expected = 1 - ((2 * (probs * onehot).sum(dims) + 1) / (probs.sum(dims) + onehot.sum(dims) + 1)).mean()
    (expected_grad,) = torch.autograd.grad(expected, logits)
    got = soft_dice_loss(logits, target, binary=False, ignore_index=9)
    (got_grad,) = torch.autograd.grad(got, logits)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-7)


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


def _one_hot_logits(labels: torch.Tensor, classes: int) -> torch.Tensor:
    # Logits whose softmax is one-hot to float32 precision.
    return torch.nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float() * 200.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_softmax_of_hard_predictions_is_one_minus_iou_over_the_classes_present(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 4, (2, 9, 7), generator=generator)  # class 4 never in the target
    predicted = torch.randint(0, 5, (2, 9, 7), generator=generator)
    target[0, :3, :3] = 9  # ignored
    valid = target != 9
    expected = []
    for cls in range(4):
        truth, guess = (target == cls) & valid, (predicted == cls) & valid
        expected.append(1.0 - (truth & guess).sum().item() / (truth | guess).sum().item())
    got = lovasz_softmax_loss(_one_hot_logits(predicted, 5), target, binary=False, ignore_index=9)
    assert got.item() == pytest.approx(sum(expected) / len(expected), abs=1e-6)


def test_lovasz_softmax_of_a_binary_model_scores_both_classes() -> None:
    target = torch.tensor([[[1, 1, 0, 0, 0, 1]]])
    logits = torch.tensor([[[[30.0, -30.0, -30.0, 30.0, -30.0, 30.0]]]])  # predicted 1 0 0 1 0 1
    foreground_iou, background_iou = 2 / 4, 2 / 4
    expected = ((1 - foreground_iou) + (1 - background_iou)) / 2
    assert lovasz_softmax_loss(logits, target, binary=True).item() == pytest.approx(expected, abs=1e-6)


def test_lovasz_softmax_with_no_valid_pixel_is_zero_and_keeps_a_gradient() -> None:
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = lovasz_softmax_loss(logits, torch.full((1, 2, 2), 9), binary=False, ignore_index=9)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_lovasz_softmax_weighs_a_rare_class_as_much_as_a_common_one() -> None:
    # One pole pixel in a road: missing it costs half the loss, where cross-entropy barely notices.
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, 5, 5] = 1
    missed = _one_hot_logits(torch.zeros(1, 10, 10, dtype=torch.long), 2)
    assert lovasz_softmax_loss(missed, target, binary=False).item() == pytest.approx((1 - 99 / 100 + 1) / 2, abs=1e-6)


def test_soft_skeleton_of_a_stripe_is_its_centre_line_and_stays_inside() -> None:
    stripe = torch.zeros(1, 1, 12, 20)
    stripe[0, 0, 3:8, 2:18] = 1.0  # five rows thick
    skeleton = soft_skeleton(stripe, iterations=3)
    assert torch.all(skeleton[stripe == 0] == 0)
    assert torch.all(skeleton[0, 0, 5, 4:16] == 1.0)  # the centre row, away from the ends
    assert torch.all(skeleton[0, 0, [3, 4, 6, 7], 4:16] == 0.0)


def _membrane_target() -> torch.Tensor:
    target = torch.ones(1, 16, 16, dtype=torch.long)
    target[0, 7:10, :] = 0  # a horizontal membrane three pixels thick between two cells
    return target


def test_cldice_is_zero_for_a_perfect_membrane() -> None:
    target = _membrane_target()
    perfect = torch.where(target == 0, -30.0, 30.0).float().unsqueeze(1)
    assert cldice_loss(perfect, target, True, thin_class=0, iterations=2).item() == pytest.approx(0.0, abs=1e-6)


def test_cldice_charges_a_gap_in_a_thin_membrane_as_much_as_in_a_thick_one() -> None:
    target = torch.ones(1, 24, 32, dtype=torch.long)
    target[0, 5, :] = 0  # one pixel thick
    target[0, 14:19, :] = 0  # five pixels thick
    perfect = torch.where(target == 0, -30.0, 30.0).float().unsqueeze(1)
    thin_gap, thick_gap = perfect.clone(), perfect.clone()
    thin_gap[0, 0, 5, 16] = 30.0
    thick_gap[0, 0, 14:19, 16] = 30.0
    topology = [cldice_loss(gapped, target, True, thin_class=0, iterations=3).item()
                for gapped in (thin_gap, thick_gap)]
    pixels = [(soft_dice_loss(gapped, target, True) - soft_dice_loss(perfect, target, True)).item()
              for gapped in (thin_gap, thick_gap)]
    assert topology[0] > 0.005 and topology[0] == pytest.approx(topology[1], rel=1e-3)
    assert pixels[1] > 4 * pixels[0]


def test_cldice_of_a_multi_class_model_reads_the_thin_class_channel() -> None:
    target = _membrane_target() + 1  # classes 1 (membrane) and 2 (cell) of three
    logits = _one_hot_logits(target, 3)
    assert cldice_loss(logits, target, False, thin_class=1, iterations=2).item() == pytest.approx(0.0, abs=1e-6)
    wrong_class = cldice_loss(logits, target, False, thin_class=0, iterations=2).item()
    assert wrong_class == pytest.approx(0.0, abs=1e-6)  # class 0 absent from both: smoothing scores it perfect
    shifted = _one_hot_logits(torch.roll(target, 4, dims=1), 3)
    assert cldice_loss(shifted, target, False, thin_class=1, iterations=2).item() > 0.5


def test_combined_losses_are_their_weighted_terms() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 1, 16, 16)
    target = _membrane_target().repeat(2, 1, 1)
    weights = 1 + torch.rand(2, 16, 16)
    weighted = weighted_cross_entropy(logits, target, weights, True)
    lovasz = SegmentationLoss("lovasz-ce", binary=True, lovasz_weight=0.7, ce_weight=1.5)(logits, target, weights)
    expected_lovasz = 0.7 * lovasz_softmax_loss(logits, target, True).item() + 1.5 * weighted.item()
    assert lovasz.item() == pytest.approx(expected_lovasz, rel=1e-6)
    cldice = SegmentationLoss("cldice-ce", binary=True, dice_weight=0.5, cldice_weight=2.0, ce_weight=1.0,
                              cldice_iterations=3)(logits, target, weights)
    expected = (0.5 * soft_dice_loss(logits, target, True) + 2.0 * cldice_loss(logits, target, True, 0, iterations=3)
                + weighted)
    assert cldice.item() == pytest.approx(expected.item(), rel=1e-6)


def test_cldice_settings_the_model_cannot_have_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="--thin-class 2 is not one of the model's classes 0-1"):
        SegmentationLoss("cldice-ce", binary=True, thin_class=2)
    with pytest.raises(ValueError, match="--thin-class -1 is not one of the model's classes 0-10"):
        SegmentationLoss("cldice-ce", binary=False, thin_class=-1, num_classes=11)
    with pytest.raises(ValueError, match="--cldice-iterations 0 must be at least 1"):
        SegmentationLoss("cldice-ce", binary=True, cldice_iterations=0)
    with pytest.raises(ValueError, match="--thin-class 3 is not one of the model's classes 0-2"):
        cldice_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), False, thin_class=3)


def test_binary_soft_dice_leaves_ignored_pixels_out() -> None:
    # p = 1/2 on three pixels, targets 1, 0 and ignored: intersection 1/2, sum p = 1 (the ignored 1/2 left out),
    # sum t = 1, so with s = 0: 1 - (2 * 0.5) / (1 + 1) = 0.5.
    logits = torch.zeros(1, 1, 1, 3)
    target = torch.tensor([[[1, 0, 7]]])
    assert soft_dice_loss(logits, target, True, ignore_index=7, smooth=0.0).item() == pytest.approx(0.5, abs=1e-6)


def test_cldice_leaves_ignored_pixels_out_of_the_predicted_skeleton() -> None:
    # A perfect membrane, and rows 0-2 ignored where the model predicts membrane: nothing valid is wrong, so 0.
    target = _membrane_target()
    logits = torch.where(target == 0, -30.0, 30.0).float().unsqueeze(1)
    target[0, :3, :] = 9
    logits[0, 0, :3, :] = -30.0
    assert cldice_loss(logits, target, True, thin_class=0, ignore_index=9, iterations=2).item() == pytest.approx(
        0.0, abs=1e-6)


@pytest.mark.parametrize(("binary", "class_weights"), [(True, None), (False, None), (False, (0.0, 1.0, 2.0))])
def test_a_batch_with_no_scored_pixel_costs_zero_in_cross_entropy_as_in_every_other_loss(
        binary: bool, class_weights: tuple[float, ...] | None) -> None:
    # A crop or a frame wholly void (or, with median-frequency weights, only of a class the training set lacks,
    # weight 0) has nothing to score, and the other losses say 0 for it. PyTorch's mean is 0 / 0 = NaN there: a
    # NaN validation loss never counts as an improvement, so best.pt was never written while the run exited 0.
    logits = torch.randn(1, 1 if binary else 3, 2, 2, requires_grad=True)
    target = torch.tensor([[[7, 7], [7, 7]]]) if class_weights is None else torch.tensor([[[0, 7], [0, 0]]])
    weights = None if class_weights is None else torch.tensor(class_weights)
    loss = plain_cross_entropy(logits, target, binary, ignore_index=7, class_weights=weights)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)
