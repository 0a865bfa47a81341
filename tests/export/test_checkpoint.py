"""unetrt.export.checkpoint: what a .pt file must hold, and the model it gives back."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.conftest import tiny_info  # noqa: E402 - after the torch check
from unetrt.export.checkpoint import CHECKPOINT_FORMAT, build_model, load_checkpoint, load_model  # noqa: E402


def _dropout_rates(model: torch.nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]


def test_the_recorded_dropout_rates_are_the_ones_built() -> None:
    # unet-train --dropout 0,0,0 trains without dropout; a rebuilt model must not fall back to the blog's rates.
    assert _dropout_rates(build_model(tiny_info())) == []
    info = dataclasses.replace(tiny_info(), extra={"dropout": [0.1, 0.2, 0.3]})
    # encoder levels in order, then the decoder mirrored (the bottom level has no decoder block)
    assert _dropout_rates(build_model(info)) == [0.1, 0.2, 0.3, 0.2, 0.1]


def test_a_loaded_model_is_in_eval_mode(tiny_model_files: dict[str, Path]) -> None:
    # In training mode, dropout and batch-norm statistics would change every answer computed from the model.
    model, _ = load_model(tiny_model_files["pt"])
    assert not any(module.training for module in model.modules())


def test_a_pytorch_file_without_the_marker_is_refused(tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=f"without the '{CHECKPOINT_FORMAT}' marker"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_checkpoint_holding_other_objects_than_tensors_is_not_unpickled(tmp_path: Path) -> None:
    # Loading with weights_only=False would build any object the file names (and run its code); a stdlib class
    # stands for one here.
    torch.save({"format": CHECKPOINT_FORMAT, "note": Fraction(1, 3)}, tmp_path / "object.pt")
    with pytest.raises(ValueError, match="not a valid unetrt checkpoint"):
        load_checkpoint(tmp_path / "object.pt")
