"""Turning a frame and its coloured mask into the picture a stream writes, with live figures drawn on it."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..visualize import blend

VISUALIZE_MODES = ("overlay", "mask")


def parse_visualize(text: str | Sequence[str]) -> tuple[str, ...]:
    """``'overlay,mask'`` (or a sequence) -> the panels to draw, side by side, left to right.

    Raises:
        ValueError: on an unknown or missing mode.

    Example:
        >>> parse_visualize("overlay,mask")
        ('overlay', 'mask')
    """
    modes = tuple(m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip())
    if not modes:
        raise ValueError(f"visualize needs at least one of {', '.join(VISUALIZE_MODES)}, got {text!r}")
    for mode in modes:
        if mode not in VISUALIZE_MODES:
            raise ValueError(f"unknown visualize mode {mode!r}; use overlay, mask or overlay,mask")
    return modes


def compose(frame: np.ndarray, colored: np.ndarray, modes: Sequence[str], alpha: float) -> np.ndarray:
    """The panels named by ``modes`` side by side: 'overlay' blends the mask over the frame, 'mask' is the mask.

    Raises:
        ValueError: when alpha is outside [0, 1] or the sizes differ.

    Example:
        >>> compose(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), ("overlay", "mask"), 0.5).shape
        (2, 4, 3)
    """
    panels = [blend(frame, colored, alpha) if mode == "overlay" else colored for mode in modes]
    return panels[0] if len(panels) == 1 else np.hstack(panels)


def draw_caption(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner on a dark band, scaled to the image height (in place)."""
    scale = max(0.35, image.shape[0] / 720)
    thickness = max(1, round(scale * 1.5))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, round(4 * scale))
    cv2.rectangle(image, (0, 0), (width + 2 * pad, height + baseline + 2 * pad), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (pad, pad + height), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
    return image
