"""What the runtime must know about a model, stored with every model file.

The same JSON document travels in the ``.pt`` checkpoint (key ``"info"``), in the
ONNX file's metadata props (key ``"unetrt"``) and next to a TensorRT plan
(``unet.plan.json``), so every backend preprocesses and decodes identically.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .geometry import PADDING_MODES

METADATA_KEY = "unetrt"
FORMAT_VERSION = 1


def check_working_size(size: object) -> tuple[int, int]:
    """``size`` as a ``(width, height)`` working size.

    Raises:
        ValueError: unless it is two positive integers.

    Example:
        >>> check_working_size((256, 192))
        (256, 192)
    """
    if (not isinstance(size, tuple | list) or len(size) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) > 0 for v in size)):
        raise ValueError(f"working_size must be (width, height) with two positive integers, e.g. (256, 192), "
                         f"got {size!r}")
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class ModelInfo:
    """Description of a trained U-Net: classes, input normalisation and geometry.

    Attributes:
        class_names: one name per output class; a binary model has one name.
        colors: RGB display colour per class (binary: the foreground colour).
        in_channels: 3 for colour models, 1 for grayscale.
        mean: per-channel mean subtracted after scaling to [0, 1], in RGB order.
        std: per-channel standard deviation, in RGB order.
        padding: 'same' or 'valid' convolutions.
        depth: number of resolution levels.
        base: channels of the first level.
        activation: 'elu' or 'relu'.
        working_size: optional ``(width, height)`` frames are resized to before inference.
        ignore_index: label id excluded from loss and metrics, or None.
        name: short model name.

    Example:
        >>> info = ModelInfo(class_names=("membrane",), colors=((255, 0, 0),), in_channels=1,
        ...                  mean=(0.5,), std=(0.25,))
        >>> ModelInfo.from_json(info.to_json()) == info
        True
    """

    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    in_channels: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    padding: str = "same"
    depth: int = 5
    base: int = 64
    activation: str = "elu"
    working_size: tuple[int, int] | None = None
    ignore_index: int | None = None
    name: str = "unet"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError("class_names must name at least one class")
        if len(self.colors) != len(self.class_names):
            raise ValueError(
                f"colors has {len(self.colors)} entries but class_names has {len(self.class_names)}; "
                "give one RGB colour per class"
            )
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"mean and std need {self.in_channels} values (one per input channel), "
                f"got mean={self.mean} std={self.std}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        if self.padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {self.padding!r}")
        if self.working_size is not None:
            check_working_size(self.working_size)

    @property
    def num_classes(self) -> int:
        """Number of output channels of the network (1 for a binary model)."""
        return len(self.class_names)

    @property
    def binary(self) -> bool:
        """True for a one-channel sigmoid model, False for a softmax model."""
        return self.num_classes == 1

    @property
    def size_multiple(self) -> int:
        """Every 'same'-mode input side must be a multiple of this."""
        return 2 ** (self.depth - 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary, with the format version."""
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
        data["num_classes"] = self.num_classes
        data["size_multiple"] = self.size_multiple
        return data

    def to_json(self) -> str:
        """The JSON document stored with model files."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        """Rebuild from :meth:`to_dict` output; unknown keys are kept in ``extra``.

        Raises:
            ValueError: when required keys are missing or the format is newer than this runtime.
        """
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"model metadata format {version} is newer than this unetrt understands ({FORMAT_VERSION}); "
                "upgrade unetrt"
            )
        known = {f.name for f in fields(cls)}
        missing = {"class_names", "colors"} - data.keys()
        if missing:
            raise ValueError(f"model metadata lacks {sorted(missing)}; re-export the model with unet-export")
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known and k != "extra"}
        kwargs["class_names"] = tuple(kwargs["class_names"])
        kwargs["colors"] = tuple(tuple(int(c) for c in rgb) for rgb in kwargs["colors"])
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(float(v) for v in kwargs[key])
        if kwargs.get("working_size") is not None:
            kwargs["working_size"] = tuple(int(v) for v in kwargs["working_size"])
        derived = {"format_version", "num_classes", "size_multiple"}
        extra = dict(data.get("extra", {}))
        extra.update({k: v for k, v in data.items() if k not in known and k not in derived})
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        """Parse the JSON document stored with model files.

        Raises:
            ValueError: when the text is not valid model metadata.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model metadata is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("model metadata must be a JSON object")
        return cls.from_dict(data)
