"""What the runtime must know about a model, stored with every model file.

The same JSON document travels in the ``.pt`` checkpoint (key ``"info"``), in the
ONNX file's metadata props (key ``"unetrt"``) and next to a TensorRT plan
(``unet.plan.json``), so every backend preprocesses and decodes identically.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .geometry import PADDING_MODES

METADATA_KEY = "unetrt"
FORMAT_VERSION = 1
# Bounds on what a model file may claim, so that a damaged or hostile description is refused in one line
# before anything is sized from it. Depth 8 already pads every side to a multiple of 128; a deeper network
# would size its tiles in gigabytes (depth 16: 32768 x 32768).
MAX_DEPTH = 8
MAX_CLASSES = 256  # masks hold class ids as uint8
MAX_BASE = 1024
MAX_CHANNEL_VALUE = 255
# The largest working image: 8192 px a side and 32 M pixels (its float32 scores of 11 classes take 1.5 GB).
MAX_WORKING_SIDE = 8192
MAX_WORKING_PIXELS = 1 << 25
MAX_SHOWN = 60


def _shown(value: object) -> str:
    """``repr(value)``, cut short: an error line must stay one readable line whatever the file holds."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _integer(name: str, value: object, low: int, high: int) -> int:
    if not _is_integer(value) or not low <= int(value) <= high:  # type: ignore[call-overload]
        raise ValueError(f"model metadata {name} must be an integer from {low} to {high}, got {_shown(value)}")
    return int(value)  # type: ignore[call-overload]


def _sequence(name: str, value: object, length: int | None = None) -> tuple[Any, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError(f"model metadata {name} must be a list, got {_shown(value)}")
    if length is not None and len(value) != length:
        raise ValueError(f"model metadata {name} must have {length} entries, got {len(value)}: {_shown(value)}")
    return tuple(value)


def _finite(name: str, value: object) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(float(value)):
        raise ValueError(f"model metadata {name} must hold finite numbers, got {_shown(value)}")
    return float(value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"model metadata {name} must be a string, got {_shown(value)}")
    return value


def check_working_size(size: object) -> tuple[int, int]:
    """``size`` as a ``(width, height)`` working size.

    Raises:
        ValueError: unless it is two positive integers, each at most :data:`MAX_WORKING_SIDE`, together at
            most :data:`MAX_WORKING_PIXELS` pixels (refused before anything is allocated for it).

    Example:
        >>> check_working_size((256, 192))
        (256, 192)
    """
    if (not isinstance(size, tuple | list) or len(size) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) > 0 for v in size)):
        raise ValueError(f"working_size must be (width, height) with two positive integers, e.g. (256, 192), "
                         f"got {_shown(size)}")
    width, height = int(size[0]), int(size[1])
    if max(width, height) > MAX_WORKING_SIDE or width * height > MAX_WORKING_PIXELS:
        raise ValueError(f"working_size {width}x{height} is too large: at most {MAX_WORKING_SIDE} px a side and "
                         f"{MAX_WORKING_PIXELS // 1_000_000} M pixels; frames are resized to it before inference, "
                         "so use a smaller one (e.g. 1920x1080)")
    return width, height


def check_network_channels(info: ModelInfo, inputs: object, outputs: object, source: str) -> None:
    """Compare the channel counts a network file declares with its metadata.

    Args:
        info: the model's description.
        inputs: the network input's channel dimension (an int; anything else is a dynamic dimension, not checked).
        outputs: the network output's channel dimension, likewise.
        source: the model file, for the message.

    Raises:
        ValueError: in one line, when a static count differs from ``in_channels`` or the number of classes.

    Example:
        >>> check_network_channels(info, 3, 11, "camvid.onnx")  # doctest: +SKIP
    """
    for what, declared, expected in (("input", inputs, info.in_channels), ("output", outputs, info.num_classes)):
        if _is_integer(declared) and declared != expected:
            meaning = "in_channels" if what == "input" else "classes"
            raise ValueError(f"model {source!r} is inconsistent: its network {what} has {declared} channels but its "
                             f"metadata says {expected} ({meaning}); re-export it with unet-export, or correct the "
                             "description of a network made elsewhere (docs/models.md#a-network-from-elsewhere)")


def check_network_layout(info: ModelInfo, shape: Sequence[object], source: str) -> None:
    """Refuse a network input that is not N x C x H x W, the layout every backend feeds.

    Args:
        info: the model's description.
        shape: the network input's dimensions (ints; anything else is a dynamic dimension).
        source: the model file, for the message.

    Raises:
        ValueError: in one line, for an input of another rank or one that takes its channels last (N x H x W x C,
            TensorFlow's layout), which would otherwise fail at the first frame with the runtime's own report.

    Example:
        >>> check_network_layout(info, ["n", 3, "h", "w"], "camvid.onnx")  # doctest: +SKIP
    """
    if len(shape) != 4:
        raise ValueError(f"model {source!r} takes a {len(shape)}-D input; unetrt feeds its network N x C x H x W "
                         "batches: export the network with one 4-D input")
    channels, last = shape[1], shape[3]
    if _is_integer(last) and last == info.in_channels and channels != info.in_channels:
        raise ValueError(f"model {source!r} takes its channels last (N x H x W x C, input {list(shape)}); unetrt "
                         "feeds N x C x H x W: export the network with channels first (e.g. drop its input "
                         "transpose, or convert it with tf2onnx --inputs-as-nchw)")


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
        # Checked and normalised here (types too), so that a model file's JSON and a Python caller meet the
        # same rules; frozen, hence object.__setattr__.
        names = _sequence("class_names", self.class_names)
        if not 1 <= len(names) <= MAX_CLASSES:
            raise ValueError(f"model metadata class_names must name 1 to {MAX_CLASSES} classes, got {len(names)}")
        for name in names:
            _text("class_names", name)
        colors = _sequence("colors", self.colors)
        if len(colors) != len(names):
            raise ValueError(
                f"colors has {len(colors)} entries but class_names has {len(names)}; "
                "give one RGB colour per class"
            )
        colors = tuple(tuple(_integer("colors", c, 0, MAX_CHANNEL_VALUE) for c in _sequence("colors", rgb, 3))
                       for rgb in colors)
        if not _is_integer(self.in_channels) or self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {_shown(self.in_channels)}")
        mean = tuple(_finite("mean", v) for v in _sequence("mean", self.mean))
        std = tuple(_finite("std", v) for v in _sequence("std", self.std))
        if len(mean) != self.in_channels or len(std) != self.in_channels:
            raise ValueError(
                f"mean and std need {self.in_channels} values (one per input channel), "
                f"got mean={_shown(self.mean)} std={_shown(self.std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {std}")
        if not isinstance(self.padding, str) or self.padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {_shown(self.padding)}")
        _integer("depth", self.depth, 1, MAX_DEPTH)
        _integer("base", self.base, 1, MAX_BASE)
        _text("activation", self.activation)
        _text("name", self.name)
        working = None if self.working_size is None else check_working_size(self.working_size)
        if self.ignore_index is not None:
            _integer("ignore_index", self.ignore_index, 0, MAX_CLASSES - 1)
        if not isinstance(self.extra, dict):
            raise ValueError(f"model metadata extra must be an object, got {_shown(self.extra)}")
        for name, value in (("class_names", names), ("colors", colors), ("mean", mean), ("std", std),
                            ("working_size", working)):
            object.__setattr__(self, name, value)

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
        if not _is_integer(version) or version < 1:
            raise ValueError(f"model metadata format_version must be a positive integer, got {_shown(version)}; "
                             "re-export the model with unet-export")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"model metadata format {version} is newer than this unetrt understands ({FORMAT_VERSION}); "
                "upgrade unetrt"
            )
        known = {f.name for f in fields(cls)}
        missing = {"class_names", "colors"} - data.keys()
        if missing:
            raise ValueError(f"model metadata lacks {sorted(missing)}; re-export the model with unet-export")
        # Lists become tuples here; __post_init__ checks every value's type and range.
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in known and k != "extra"}
        if isinstance(kwargs["colors"], tuple):
            kwargs["colors"] = tuple(tuple(rgb) if isinstance(rgb, list) else rgb for rgb in kwargs["colors"])
        derived = {"format_version", "num_classes", "size_multiple"}
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError(f"model metadata extra must be an object, got {_shown(extra)}")
        extra = {**extra, **{k: v for k, v in data.items() if k not in known and k not in derived}}
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
