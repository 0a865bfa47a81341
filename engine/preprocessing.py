"""Turning camera frames into network input and padding them to legal sizes."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .geometry import PaddedShape, plan_padding
from .model_info import ModelInfo


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """HxWxC (or HxW) uint8 in channel order of ``mean`` -> CxHxW float32 ``(x / 255 - mean) / std``.

    Example:
        >>> normalize(np.full((2, 2), 255, np.uint8), (0.5,), (0.5,))[0, 0, 0]
        np.float32(1.0)
    """
    if image.ndim == 2:
        image = image[..., None]
    scale = np.asarray([1.0 / (255.0 * s) for s in std], dtype=np.float32)
    offset = np.asarray([m / s for m, s in zip(mean, std)], dtype=np.float32)
    out = image.astype(np.float32) * scale - offset
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def check_frame(frame: object) -> np.ndarray:
    """Validate an OpenCV frame: HxWx3 BGR uint8 or HxW (or HxWx1) gray uint8.

    Raises:
        ValueError: naming what was given and what is expected.
    """
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array (an OpenCV image), got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame dtype must be uint8, got {frame.dtype}; convert with frame.astype(np.uint8)")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[..., 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        raise ValueError(
            f"frame must be HxWx3 BGR or HxW gray, got shape {frame.shape}"
        )
    if frame.size == 0 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame is empty (shape {frame.shape})")
    if frame.ndim == 3 and frame.shape[2] == 4:
        raise ValueError(
            f"frame has 4 channels (BGRA, shape {frame.shape}); drop alpha with cv2.cvtColor(f, cv2.COLOR_BGRA2BGR)"
        )
    return frame


def frame_to_model_channels(frame: np.ndarray, in_channels: int) -> np.ndarray:
    """BGR or gray frame -> RGB (3-channel models) or gray (1-channel models)."""
    if in_channels == 3:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB if frame.ndim == 2 else cv2.COLOR_BGR2RGB)
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def mirror_pad(chw: np.ndarray, rows: PaddedShape, cols: PaddedShape) -> np.ndarray:
    """Mirror-pad a CxHxW array without repeating the edge pixel (the paper's extrapolation).

    Works when the padding is wider than the image: the reflection bounces back
    and forth, as numpy's 'reflect' mode does.
    """
    for axis, pad in ((1, rows), (2, cols)):
        if pad.before or pad.after:
            widths = [(0, 0)] * 3
            widths[axis] = (pad.before, pad.after)
            # A one-pixel side has nothing to reflect: numpy's 'reflect' repeats it, which is what we want.
            chw = np.pad(chw, widths, mode="reflect")
    return chw


def prepare_input(frame: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, PaddedShape, PaddedShape]:
    """One frame (already at working size) -> 1xCxHxW float32 network input and its padding.

    Returns:
        The batch of one, and the row and column padding to undo on the output.
    """
    image = frame_to_model_channels(frame, info.in_channels)
    chw = normalize(image, info.mean, info.std)
    rows = plan_padding(chw.shape[1], info.padding, info.depth)
    cols = plan_padding(chw.shape[2], info.padding, info.depth)
    return mirror_pad(chw, rows, cols)[None], rows, cols
