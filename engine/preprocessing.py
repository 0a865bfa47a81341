"""Camera frames as the network path takes them: which frames are accepted, and their channel order.

Accepted frames (the same rules for :class:`unetrt.Segmenter` and :class:`unetrt.stream.Stream`):

* layout: H x W gray, H x W x 1 gray, H x W x 3 BGR, or H x W x 4 BGRA (the alpha channel is ignored);
* dtype: ``uint8`` (0..255), ``uint16`` (the full range 0..65535, as 16-bit cameras and EM stacks store it),
  or ``float32``/``float64`` holding values in [0, 1].

Pixel values are scaled to [0, 1] by :func:`frame_scale` before the model's mean and std apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FRAME_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))
_SCALE = {np.dtype(np.uint8): 1.0 / 255.0, np.dtype(np.uint16): 1.0 / 65535.0}


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """HxWxC (or HxW) uint8 in channel order of ``mean`` -> CxHxW float32 ``(x / 255 - mean) / std``.

    Used by training's data loader; inference normalises inside the native extract kernel.

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


def _dtype_advice(dtype: np.dtype) -> str:
    if dtype == np.float16:
        return "convert with frame.astype(np.float32) (values in [0, 1])"
    if dtype == np.bool_:
        return "convert with frame.astype(np.uint8) * 255"
    if dtype.kind in "iu":
        return ("scale it to [0, 1] as float32 with the sensor's range, e.g. "
                "((frame - lo) / (hi - lo)).astype(np.float32); never astype(np.uint8), which wraps the values")
    return "pass uint8, uint16 or float32 in [0, 1]"


def check_frame(frame: object) -> np.ndarray:
    """Validate a camera frame and return it as H x W gray or H x W x 3 BGR (a view; BGRA loses alpha).

    Args:
        frame: H x W, H x W x 1, H x W x 3 (BGR) or H x W x 4 (BGRA) numpy array of dtype uint8, uint16
            (full range) or float32/float64 in [0, 1].

    Returns:
        The frame without a singleton or alpha channel (no pixel is copied).

    Raises:
        ValueError: naming what was given and what is expected (and how to convert it).

    Example:
        >>> check_frame(np.zeros((2, 3, 4), np.uint16)).shape
        (2, 3, 3)
    """
    if frame is None:
        # The usual cause: OpenCV reports a failed read by returning None, not by raising.
        raise ValueError("frame is None, not an image: cv2.imread returns None when it cannot read a file (a wrong "
                         "path, or not an image) and VideoCapture.read() returns (False, None) when a video ends or "
                         "a camera fails; check for None before segmenting")
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array (an OpenCV image), got {type(frame).__name__}")
    if frame.dtype not in FRAME_DTYPES:
        raise ValueError(f"frame dtype {frame.dtype} is not supported (uint8, uint16 full range, or float32/float64 "
                         f"in [0, 1]); {_dtype_advice(frame.dtype)}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[..., 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        raise ValueError(f"frame must be HxWx3 BGR, HxWx4 BGRA or HxW gray, got shape {frame.shape}")
    if frame.size == 0:
        raise ValueError(f"frame is empty (shape {frame.shape})")
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[..., :3]
    if frame.dtype.kind == "f":
        low, high = float(frame.min()), float(frame.max())
        # NaN fails both comparisons and is refused too.
        if not (low >= 0.0 and high <= 1.0):
            raise ValueError(f"float frames must hold values in [0, 1], got min {low:g} and max {high:g}; "
                             "divide 8-bit values by 255 and 16-bit values by 65535, or pass them as uint8/uint16")
    return frame


def frame_scale(dtype: np.dtype) -> float:
    """The factor that brings a checked frame's values to [0, 1]: 1/255 (uint8), 1/65535 (uint16), 1 (float).

    Example:
        >>> frame_scale(np.dtype(np.uint16)) * 65535
        1.0
    """
    return _SCALE.get(np.dtype(dtype), 1.0)


def frame_to_model_channels(frame: np.ndarray, in_channels: int) -> np.ndarray:
    """BGR or gray frame -> BGR (3-channel models) or gray (1-channel models); other frames pass unchanged.

    The BGR -> RGB swap itself is fused into the extract kernel.

    Example:
        >>> frame_to_model_channels(np.zeros((2, 2), np.uint8), 3).shape
        (2, 2, 3)
    """
    if in_channels == 3 and frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if in_channels == 1 and frame.ndim == 3:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2GRAY)
    return frame
