"""unetrt.export.prior: the class weights divided out of the logits by a shift of the head's biases."""

from __future__ import annotations

import dataclasses
import math

import pytest

torch = pytest.importorskip("torch")

from unetrt.export.checkpoint import build_model  # noqa: E402 - after the torch check
from unetrt.export.prior import class_weights_of, correct_class_prior, undo_class_prior  # noqa: E402
from unetrt.model_info import ModelInfo  # noqa: E402

WEIGHTS = [1.0, 4.0, 0.25]


def _model(weights: list[float] | None = WEIGHTS, classes: int = 3) -> tuple[torch.nn.Module, ModelInfo]:
    names = tuple(f"c{i}" for i in range(classes))
    extra = {"dropout": [0.0, 0.0, 0.0]} | ({} if weights is None else {"class_weights": weights})
    info = ModelInfo(class_names=names, colors=((0, 0, 0),) * classes, base=4, depth=3, activation="relu",
                     extra=extra)
    torch.manual_seed(0)
    return build_model(info).eval(), info


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0])
def test_the_logits_lose_tau_times_the_log_of_each_class_weight(tau: float) -> None:
    model, info = _model()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        corrected, corrected_info = correct_class_prior(model, info, tau)
        after = corrected(x)
    shift = torch.tensor([tau * math.log(w) for w in WEIGHTS]).view(1, 3, 1, 1)
    torch.testing.assert_close(after, before - shift, atol=1e-5, rtol=0)
    assert corrected_info.extra["prior_correction"]["tau"] == tau
    assert corrected_info.extra["class_weights"] == WEIGHTS


def test_tau_one_turns_a_weighted_posterior_back_into_the_plain_one() -> None:
    # Logits log(w_c p_c) (what weighted cross-entropy's optimum is) come back as log p_c up to a constant.
    model, info = _model()
    plain = torch.tensor([0.7, 0.1, 0.2])
    weighted_logits = torch.log(torch.tensor(WEIGHTS) * plain)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(weighted_logits)
        corrected, _ = correct_class_prior(model, info, 1.0)
        probabilities = torch.softmax(corrected(torch.zeros(1, 3, 16, 16))[0, :, 0, 0], 0)
    torch.testing.assert_close(probabilities, plain, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("weights", "classes", "tau", "message"), [
    (WEIGHTS, 3, 1.5, "tau must be between 0"),
    (None, 3, 0.5, "records no class weights"),
    ([1.0, 0.0, 2.0], 3, 0.5, "each must be positive and finite"),
    ([1.0, math.inf, 2.0], 3, 0.5, "each must be positive and finite"),
    ([2.0], 3, 0.5, "records no class weights"),
    (None, 1, 0.5, "is binary"),
])
def test_what_cannot_be_corrected_is_refused_with_the_value(weights: list[float] | None, classes: int, tau: float,
                                                            message: str) -> None:
    model, info = _model(weights, classes)
    with pytest.raises(ValueError, match=message):
        correct_class_prior(model, info, tau)


def test_a_corrected_model_is_not_corrected_twice() -> None:
    model, info = correct_class_prior(*_model(), 0.5)
    with pytest.raises(ValueError, match="was corrected before"):
        correct_class_prior(model, info, 0.5)
    assert class_weights_of(info) == WEIGHTS


def test_undo_gives_back_the_head_as_trained_and_drops_the_record() -> None:
    model, info = _model()
    trained = model.head.bias.detach().clone()
    corrected, corrected_info = correct_class_prior(model, info, 0.75)
    assert not torch.equal(corrected.head.bias, trained)
    back, back_info = undo_class_prior(corrected, corrected_info)
    torch.testing.assert_close(back.head.bias.detach(), trained, atol=1e-6, rtol=0)
    assert "prior_correction" not in back_info.extra and back_info.extra["class_weights"] == WEIGHTS
    # what was undone can be corrected again, by another tau
    correct_class_prior(back, back_info, 0.25)


@pytest.mark.parametrize(("record", "message"), [
    (None, "records no prior correction"),
    ({"tau": 0.5, "bias_shift": [0.1, 0.2]}, "records no prior correction with one bias shift per class"),
])
def test_undo_refuses_a_model_without_a_fitting_record(record: dict[str, object] | None, message: str) -> None:
    model, info = _model()
    if record is not None:
        info = dataclasses.replace(info, extra={**info.extra, "prior_correction": record})
    with pytest.raises(ValueError, match=message):
        undo_class_prior(model, info)
