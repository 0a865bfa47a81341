"""Flipping or rotating input frames, as jetson-inference's ``--input-flip`` does (a camera mounted upside down)."""

from __future__ import annotations

import cv2
import numpy as np

# The cv2.flip code or cv2.rotate code of each flip; None leaves the frame as it is.
FLIPS: dict[str, tuple[str, int] | None] = {
    "none": None,
    "horizontal": ("flip", 1),
    "vertical": ("flip", 0),
    "rotate-180": ("rotate", cv2.ROTATE_180),
    "clockwise": ("rotate", cv2.ROTATE_90_CLOCKWISE),
    "counterclockwise": ("rotate", cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def check_flip(flip: str) -> str:
    """Return ``flip`` if it names a flip.

    Raises:
        ValueError: naming the accepted values.

    Example:
        >>> check_flip("rotate-180")
        'rotate-180'
    """
    if flip not in FLIPS:
        raise ValueError(f"unknown input flip {flip!r}; use one of {', '.join(FLIPS)}")
    return flip


def flip_frame(frame: np.ndarray, flip: str) -> np.ndarray:
    """The frame mirrored (horizontal: left-right, vertical: top-bottom) or rotated as ``flip`` says.

    Raises:
        ValueError: on an unknown flip.

    Example:
        >>> flip_frame(np.array([[1, 2]], np.uint8), "horizontal").tolist()
        [[2, 1]]
    """
    operation = FLIPS[check_flip(flip)]
    if operation is None:
        return frame
    kind, code = operation
    return cv2.flip(frame, code) if kind == "flip" else cv2.rotate(frame, code)
