"""``Palette``: the class names and display colours a mask is drawn with (the one owner of them in unetrt).

:class:`unetrt.Segmenter` takes its palette from the model (:meth:`Palette.of`) unless given one, and colours
masks, the stream's overlay and legend with it; ``unet-weights`` draws its label panels with one made from the
data set's class table. Masks are looked up in a 256-entry table: ids of a class get its colour, every other id
(a binary model's background, a data set's ignored label) the ignore colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .model_info import ModelInfo

MAX_CLASSES = 256  # a mask is uint8


def _check_info(info: object) -> None:
    if not isinstance(info, ModelInfo):
        raise ValueError(f"info must be a unetrt.model_info.ModelInfo (e.g. a Segmenter's .info), got {info!r}")


def _rgb(value: Any, what: str) -> tuple[int, int, int]:
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3
            or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255
                       for c in value)):
        raise ValueError(f"{what} must be an (r, g, b) triple of ints from 0 to 255, got {value!r}")
    return int(value[0]), int(value[1]), int(value[2])


@dataclass(frozen=True)
class Palette:
    """Class names, one RGB colour per class, and the colour of ids that name no class.

    Args:
        names: class names in id order (a binary model: its one foreground class).
        colors: one (r, g, b) colour per name.
        binary: the mask holds 0 (background) and 1 (the one class), as a binary model's does.
        ignore_color: (r, g, b) of every id that is no class (a binary model's background, an ignored label).

    Raises:
        ValueError: when the colours do not match the names in number (the message shows both), a colour is no
            (r, g, b) triple of 0..255, a binary palette has more than one class, or there are more than 256.

    Example:
        >>> palette = Palette(("road", "car"), ((128, 64, 128), (64, 0, 128)))
        >>> palette.lut_bgr[1].tolist(), palette.lut_bgr[2].tolist()
        ([128, 0, 64], [0, 0, 0])
        >>> dataclasses.replace(palette, colors=((255, 0, 0), (0, 0, 255)))  # doctest: +SKIP
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    binary: bool = False
    ignore_color: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if isinstance(self.names, (str, bytes)) or not isinstance(self.names, Sequence) \
                or not all(isinstance(n, str) for n in self.names):
            raise ValueError(f"palette names must be a sequence of class names, got {self.names!r}")
        if isinstance(self.colors, (str, bytes)) or not isinstance(self.colors, Sequence):
            raise ValueError(f"palette colors must be a sequence of (r, g, b) colours, got {self.colors!r}")
        if len(self.colors) != len(self.names):
            raise ValueError(f"palette has {len(self.colors)} colours {tuple(self.colors)!r} for "
                             f"{len(self.names)} classes {tuple(self.names)!r}; give one (r, g, b) per class")
        if not self.names or len(self.names) > MAX_CLASSES - (1 if self.binary else 0):
            raise ValueError(f"a palette needs 1 to {MAX_CLASSES} classes, got {len(self.names)}")
        if self.binary and len(self.names) != 1:
            raise ValueError(f"a binary palette has one class (the foreground), got {tuple(self.names)!r}")
        colors = tuple(_rgb(c, f"colour {i} ({self.names[i]!r})") for i, c in enumerate(self.colors))
        # Frozen: normalise the fields once, here, so that equal palettes compare equal.
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "colors", colors)
        object.__setattr__(self, "ignore_color", _rgb(self.ignore_color, "ignore_color"))

    @classmethod
    def of(cls, info: ModelInfo) -> Palette:
        """The palette a model describes: its class names and colours, ignored ids black.

        Raises:
            ValueError: when ``info`` is no :class:`~unetrt.model_info.ModelInfo`.

        Example:
            >>> Palette.of(info).names  # doctest: +SKIP
            ('sky', 'building', ...)
        """
        _check_info(info)
        return cls(info.class_names, info.colors, binary=info.binary)

    @property
    def ids(self) -> tuple[int, ...]:
        """The mask id of each class: 0..K-1, or (1,) for a binary palette."""
        return (1,) if self.binary else tuple(range(len(self.names)))

    @cached_property
    def lut_rgb(self) -> np.ndarray:
        """A 256 x 3 uint8 RGB lookup table: ``lut_rgb[mask]`` is the coloured mask (read-only)."""
        table = np.empty((MAX_CLASSES, 3), np.uint8)
        table[:] = self.ignore_color
        table[list(self.ids)] = self.colors
        table.flags.writeable = False
        return table

    @cached_property
    def lut_bgr(self) -> np.ndarray:
        """:attr:`lut_rgb` in OpenCV's BGR order (read-only)."""
        table = np.ascontiguousarray(self.lut_rgb[:, ::-1])
        table.flags.writeable = False
        return table

    def legend(self, hidden: Sequence[str] = ()) -> tuple[list[str], list[tuple[int, int, int]]]:
        """Class names and their BGR colours, top to bottom, as :func:`unetrt.visualize.draw_legend` takes them.

        Args:
            hidden: names left out (classes a picture does not draw, see :meth:`ids_of`).

        Example:
            >>> Palette(("cell",), ((255, 0, 0),), binary=True).legend()
            (['cell'], [(0, 0, 255)])
        """
        shown = [(name, (b, g, r)) for name, (r, g, b) in zip(self.names, self.colors) if name not in hidden]
        return [name for name, _ in shown], [color for _, color in shown]

    def ids_of(self, names: Sequence[str]) -> tuple[int, ...]:
        """The mask ids of classes given by name (e.g. the classes a picture leaves undrawn).

        Raises:
            ValueError: on a name that is no class of this palette (the message lists the classes), or ``names``
                that is a single string or no collection of names.

        Example:
            >>> Palette(("sky", "road"), ((0, 0, 255), (128, 64, 128))).ids_of(["road"])
            (1,)
        """
        if isinstance(names, (str, bytes)):
            # Iterating a string would look up each of its characters as a class.
            raise ValueError(f"ids_of takes a list of class names, such as [{names!r}], got the single string "
                             f"{names!r}")
        try:
            names = tuple(names)  # a generator would be spent by the first pass
        except TypeError:
            raise ValueError(f"ids_of takes a list of class names, such as ['{self.names[0]}'], "
                             f"got {names!r}") from None
        unknown = [name for name in names if name not in self.names]
        if unknown:
            raise ValueError(f"no class named {', '.join(map(repr, unknown))}; the classes are "
                             f"{', '.join(self.names)}")
        return tuple(self.ids[self.names.index(name)] for name in names)

    def check_fits(self, info: ModelInfo) -> Palette:
        """This palette, checked against a model's classes.

        Raises:
            ValueError: when ``info`` is no :class:`~unetrt.model_info.ModelInfo`, or the palette has another number
                of classes, or is binary where the model is not (or the other way round); the message shows the
                palette and the model's classes.
        """
        _check_info(info)
        if len(self.names) != info.num_classes:
            raise ValueError(f"palette {self.names!r} with colours {self.colors!r} has {len(self.names)} classes; "
                             f"the model has {info.num_classes}: {info.class_names!r}; give one colour per class")
        if self.binary != info.binary:
            mine, model = ("binary", "is not") if self.binary else ("not binary", "is")
            raise ValueError(f"palette {self.names!r} with colours {self.colors!r} is {mine} and the model "
                             f"{model}; pass binary={info.binary}")
        return self
