"""Saving and loading ``.pt`` checkpoints: weights plus the full model description."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from unetrt.model_info import ModelInfo

from .model import UNet

CHECKPOINT_FORMAT = "unetrt-checkpoint-1"


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
        ValueError: when it is not a unetrt checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read checkpoint {str(path)!r} as a PyTorch file: {first_line}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a unetrt checkpoint (no {CHECKPOINT_FORMAT!r} marker); train it with unet-train"
        )
    return data


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[UNet, ModelInfo]:
    """The U-Net (in eval mode) and its description from a checkpoint.

    Example:
        >>> net, info = load_model("best.pt")  # doctest: +SKIP
    """
    data = load_checkpoint(path, map_location)
    info = ModelInfo.from_dict(data["info"])
    model = build_model(info)
    model.load_state_dict(data["model"])
    return model.eval(), info
