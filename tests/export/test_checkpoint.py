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


def test_a_whole_pickled_module_is_named_as_one_not_as_a_damaged_archive(tmp_path: Path) -> None:
    # torch.save(model) is what many training scripts write; torch's refusal ran to many lines with terminal
    # escapes, and the line said the archive was damaged.
    torch.save(build_model(tiny_info()), tmp_path / "whole.pt")
    with pytest.raises(ValueError, match=r"pickled Python objects \(unetrt\.export\.model\.UNet\)") as caught:
        load_checkpoint(tmp_path / "whole.pt")
    message = str(caught.value)
    assert "damaged" not in message and "\n" not in message and "\x1b" not in message
    assert "save_checkpoint(path, model, info)" in message


def test_a_bare_state_dict_is_refused_naming_how_to_save_one(tmp_path: Path) -> None:
    torch.save(build_model(tiny_info()).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"marker: give the best\.pt or last\.pt .*save_checkpoint\("):
        load_checkpoint(tmp_path / "weights.pt")


def test_weights_of_another_architecture_name_the_first_mismatch(tmp_path: Path,
                                                               tiny_model_files: dict[str, Path]) -> None:
    # torch's first line is only "Error(s) in loading state_dict for UNet:"; the tensor that does not fit is next.
    data = torch.load(tiny_model_files["pt"], weights_only=True)
    data["info"]["class_names"], data["info"]["colors"] = ["a", "b"], [[0, 0, 0], [9, 9, 9]]  # the head has 3
    torch.save(data, tmp_path / "classes.pt")
    with pytest.raises(ValueError, match=r"\(size mismatch for head\.weight") as caught:
        load_model(tmp_path / "classes.pt")
    assert "\n" not in str(caught.value)


def test_a_description_that_builds_no_unet_names_the_file(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    # A depth edited without the dropout rates recorded per level: the line named neither the file nor the fix.
    data = torch.load(tiny_model_files["pt"], weights_only=True)
    data["info"]["depth"] = 2  # the tiny model records 3 dropout rates
    torch.save(data, tmp_path / "depth.pt")
    with pytest.raises(ValueError, match=r"depth\.pt' is not a valid unetrt checkpoint .*: its 'info' does not "
                                         r"describe a U-Net \(dropout needs one rate per level"):
        load_model(tmp_path / "depth.pt")
