"""Saving and loading ``.pt`` checkpoints: weights plus the full model description."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from unetrt.backends.base import invalid_model_file
from unetrt.model_file import checkpoint_description
from unetrt.model_info import ModelInfo
from unetrt.paths import check_file

from .model import UNet

CHECKPOINT_FORMAT = "unetrt-checkpoint-1"
CHECKPOINT_EXPECTED = "unetrt checkpoint (a .pt file written by unet-train)"
# torch.save writes a zip archive; files from torch < 1.6 are a bare pickle (protocol 2 opens with 0x80).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
# The fix for a .pt of another program: a unetrt checkpoint holds the weights and the model's description.
_SAVE_YOURS = ("give the best.pt or last.pt that unet-train wrote, or save a unetrt U-Net's weights with "
               "unetrt.export.checkpoint.save_checkpoint(path, model, info)")
# The start of what torch.load warns on a TorchScript archive before refusing it (weights_only=True).
TORCHSCRIPT_WARNING = r"'torch\.load' received a zip file that looks like a TorchScript archive"


def build_model(info: ModelInfo) -> UNet:
    """A fresh U-Net with the architecture ``info`` describes.

    Example:
        >>> info = ModelInfo(class_names=("fg",), colors=((255, 0, 0),), base=8)
        >>> build_model(info).head.out_channels
        1
    """
    dropout = info.extra.get("dropout")
    kwargs: dict[str, Any] = {} if dropout is None else {"dropout": tuple(dropout)}
    return UNet(
        info.in_channels,
        info.num_classes,
        base=info.base,
        depth=info.depth,
        activation=info.activation,
        padding=info.padding,
        batch_norm=bool(info.extra.get("batch_norm", False)),
        **kwargs,
    )


def save_checkpoint(path: str | Path, model: torch.nn.Module, info: ModelInfo, **state: Any) -> None:
    """Write weights, model description and any training state (optimizer, epoch, ...).

    The file is written to a temporary name and renamed, so an interrupted save
    never leaves a truncated checkpoint behind.
    """
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "info": info.to_dict(), "model": model.state_dict(), **state}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is not a unetrt checkpoint (named in one line: not a PyTorch file, damaged, a
            TorchScript archive, or a PyTorch file of another program).
    """
    path = Path(path)
    check_file(path, "checkpoint")
    with path.open("rb") as stream:
        head = stream.read(len(_ZIP_MAGIC))
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        # torch's own error for a file of another kind is a bare "pop from empty list" or a pickle message.
        seen = "it is empty" if not head else f"it starts with {head!r}"
        raise invalid_model_file(path, CHECKPOINT_EXPECTED,
                                 f"a checkpoint is a zip archive written by torch.save, but {seen}")
    try:
        with warnings.catch_warnings():
            # Printed before the one-line error below: a TorchScript file (torch.jit.save) is refused either way.
            warnings.filterwarnings("ignore", message=TORCHSCRIPT_WARNING, category=UserWarning)
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt files
        if "TorchScript" in str(exc):
            # torch's own advice here, weights_only=False, would run the file's code and still give no checkpoint.
            raise invalid_model_file(path, CHECKPOINT_EXPECTED, "it is a TorchScript archive (torch.jit.save); give "
                                     "the best.pt or last.pt that unet-train wrote") from exc
        if "Weights only load failed" in str(exc):
            # torch's report runs to many lines, with terminal escapes, and advises weights_only=False.
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            raise invalid_model_file(path, CHECKPOINT_EXPECTED, "it holds pickled Python objects"
                                     f"{f' ({found.group(1)})' if found else ''}, as a whole model saved with "
                                     "torch.save(model) does, which unetrt does not unpickle (that runs the file's "
                                     f"code): {_SAVE_YOURS}") from exc
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise invalid_model_file(path, CHECKPOINT_EXPECTED,
                                 f"the archive is damaged or truncated (torch: {first_line})") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise invalid_model_file(path, CHECKPOINT_EXPECTED,
                                 f"it is a PyTorch file without the {CHECKPOINT_FORMAT!r} marker: {_SAVE_YOURS}")
    return data


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[UNet, ModelInfo]:
    """The U-Net (in eval mode) and its description from a checkpoint.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is not a unetrt checkpoint or its weights do not fit its architecture.

    Example:
        >>> net, info = load_model("best.pt")  # doctest: +SKIP
    """
    data = load_checkpoint(path, map_location)
    info = checkpoint_description(data)
    try:
        model = build_model(info)
    except ValueError as exc:  # e.g. a depth changed without its recorded dropout rates
        raise invalid_model_file(path, CHECKPOINT_EXPECTED, f"its 'info' does not describe a U-Net ({exc}); give "
                                 "the checkpoint its own description (base, depth, classes)") from exc
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:  # torch's report lists every mismatched tensor, one per line
        # The first line is only "Error(s) in loading state_dict for UNet:"; the next names the first mismatch.
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__
        first = first if len(first) <= 160 else first[:157] + "..."
        raise invalid_model_file(path, CHECKPOINT_EXPECTED,
                                 f"its weights do not fit the architecture its 'info' describes ({first}); give "
                                 "the checkpoint its own description (base, depth, classes)") from exc
    return model.eval(), info

