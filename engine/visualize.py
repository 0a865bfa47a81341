"""Colouring class-id masks (with a :class:`unetrt.palette.Palette`'s table), blending them over frames, legends."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .preprocessing import frame_scale
from .values import is_real_number


def colorize_mask(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """HxW uint8 class ids -> HxWx3 colours through a 256x3 lookup table, in its order
    (:attr:`unetrt.palette.Palette.lut_bgr` or ``lut_rgb``).

    Raises:
        ValueError: when the mask is not a non-empty HxW uint8 array.

    Example:
        >>> colorize_mask(np.zeros((2, 2), np.uint8), np.full((256, 3), 7, np.uint8))[0, 0].tolist()
        [7, 7, 7]
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.ndim != 2 or mask.size == 0:
        described = (f"{mask.dtype} array of shape {mask.shape}" if isinstance(mask, np.ndarray)
                     else type(mask).__name__)
        raise ValueError(f"a mask is an HxW uint8 array of class ids (as segment() returns), got a {described}")
    # A lookup table is about 5x faster than fancy indexing on a 480x360 frame.
    return cv2.LUT(cv2.merge([mask, mask, mask]), palette.reshape(256, 1, 3))


def displayable(frame: np.ndarray) -> np.ndarray:
    """A checked frame (:func:`unetrt.preprocessing.check_frame`: gray or colour; uint8, uint16 full range or float
    in [0, 1]) as HxWx3 uint8 in the frame's colour order (BGR or RGB), to draw on or show.

    Example:
        >>> displayable(np.full((1, 2), 65535, np.uint16)).tolist()
        [[[255, 255, 255], [255, 255, 255]]]
    """
    if frame.dtype != np.uint8:
        # Rounded and saturated: full-range uint16 and [0, 1] floats land on 0..255.
        frame = cv2.convertScaleAbs(frame, alpha=255.0 * frame_scale(frame.dtype))
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame


def check_alpha(alpha: object) -> float:
    """The blend weight of a mask over its frame, a number in [0, 1].

    Raises:
        ValueError: on anything else.

    Example:
        >>> check_alpha(1)
        1.0
    """
    if not is_real_number(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight of the mask's colours), got {alpha!r}")
    return float(alpha)


def blend(frame: np.ndarray, colored: np.ndarray, alpha: float) -> np.ndarray:
    """Blend a colour mask over a checked frame (see :func:`displayable`): ``(1 - alpha) * frame + alpha * colored``
    as HxWx3 uint8, in the colour order the two share (BGR or RGB).

    Raises:
        ValueError: when alpha is not a number in [0, 1] or the sizes differ.
    """
    weight = check_alpha(alpha)
    if frame.shape[:2] != colored.shape[:2]:
        raise ValueError(
            f"frame is {frame.shape[1]}x{frame.shape[0]} but the mask is {colored.shape[1]}x{colored.shape[0]}"
        )
    return cv2.addWeighted(displayable(frame), 1.0 - weight, colored, weight, 0.0)


def draw_legend(image: np.ndarray, names: Sequence[str], colors_bgr: Sequence[Sequence[int]]) -> np.ndarray:
    """Draw a legend (a colour swatch and the name of each class) in the bottom-left corner, in place.

    Args:
        image: HxWx3 BGR uint8, drawn on.
        names: class names, top to bottom.
        colors_bgr: one BGR colour per name.

    Returns:
        ``image``.

    Raises:
        ValueError: when names and colours differ in number.

    Example:
        >>> draw_legend(np.zeros((120, 160, 3), np.uint8), ["road", "car"], [(128, 64, 128), (128, 0, 64)]).shape
        (120, 160, 3)
    """
    if len(names) != len(colors_bgr):
        raise ValueError(f"legend has {len(names)} names but {len(colors_bgr)} colours")
    if not names:
        return image
    # Text scaled to the image as the caption is, but small enough that 11 classes fit in 360 rows.
    scale = max(0.3, image.shape[0] / 1000)
    thickness = max(1, round(scale * 1.5))
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(name, font, scale, thickness)[0] for name in names]
    row = max(h for _, h in sizes) + max(3, round(6 * scale))
    swatch = row - max(2, round(3 * scale))
    pad = max(2, round(4 * scale))
    width = swatch + 3 * pad + max(w for w, _ in sizes)
    height = row * len(names) + pad
    top = max(0, image.shape[0] - height)
    panel = image[top:, :width]
    # A darkened panel keeps the names readable over any picture.
    panel[:] = (panel.astype(np.uint16) * 2 // 5).astype(np.uint8)
    for index, (name, color) in enumerate(zip(names, colors_bgr)):
        y = top + pad + index * row
        bgr = tuple(int(c) for c in color)
        cv2.rectangle(image, (pad, y), (pad + swatch, y + swatch), bgr, cv2.FILLED)
        cv2.rectangle(image, (pad, y), (pad + swatch, y + swatch), (255, 255, 255), 1)
        cv2.putText(image, name, (2 * pad + swatch, y + swatch - 1), font, scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
    return image
