"""Camera frames as the network path takes them: which frames are accepted, and their channel order.

Accepted frames (the same rules for :class:`unetrt.Segmenter` and :class:`unetrt.stream.Stream`):

* layout: H x W gray, H x W x 1 gray, H x W x 3 colour, or H x W x 4 colour with alpha (ignored);
* colour order: BGR (BGRA), OpenCV's, unless the segmenter was opened with ``color_order='rgb'`` (RGB, RGBA:
  PIL, imageio, torchvision, ROS ``rgb8``, jetson_utils.cudaToNumpy); the extract kernel's channel mapping reads
  either, so neither costs a conversion;
* dtype: ``uint8`` (0..255), ``uint16`` (the full range 0..65535, as 16-bit cameras and EM stacks store it),
  or ``float32``/``float64`` holding values in [0, 1].

Pixel values are scaled to [0, 1] by :func:`frame_scale` before the model's mean and std apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

COLOR_ORDERS = ("bgr", "rgb")
FRAME_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))
# The native resize and finish kernels take sides up to 2^23 px (cpp_ext/tiling.h, kMaxResizeSide: every output
# coordinate is then exact in float); a frame is refused before the network runs rather than after.
MAX_FRAME_SIDE = 1 << 23
_SCALE = {np.dtype(np.uint8): 1.0 / 255.0, np.dtype(np.uint16): 1.0 / 65535.0}


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """HxWxC (or HxW) uint8 in channel order of ``mean`` -> CxHxW float32 ``(x / 255 - mean) / std``.

    Used by training's data loader; inference normalises inside the native extract kernel.

    Args:
        image: HxW (or HxWx1) gray or HxWxC uint8, as an 8-bit image file reads.
        mean: one finite value per channel of ``image`` (one for a gray image), on the [0, 1] scale.
        std: one finite value > 0 per channel, likewise.

    Returns:
        CxHxW float32 (C = 1 for a gray image).

    Raises:
        ValueError: when the image is no HxW or HxWxC uint8 array, or mean and std do not hold one finite number
            per channel, or a std is not above 0.

    Example:
        >>> normalize(np.full((2, 2), 255, np.uint8), (0.5,), (0.5,))[0, 0, 0]
        np.float32(1.0)
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] < 1):
        raise ValueError(f"normalize takes an HxW or HxWxC uint8 image, got "
                         f"{getattr(image, 'shape', type(image).__name__)}")
    if image.dtype != np.uint8:
        # The scale is 1/255: 16-bit or float values would leave the [0, 1] range the mean and std are for.
        raise ValueError(f"normalize takes uint8 images (0..255), got dtype {image.dtype}; read the image as 8-bit "
                         "(cv2.imread's default) or convert it to uint8 first")
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    for name, values in (("mean", mean), ("std", std)):
        # One value for several channels would silently normalise them all alike.
        if (isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray))
                or len(values) != channels
                or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                           and np.isfinite(v) for v in values)):
            raise ValueError(f"{name} must hold {channels} finite number(s), one per channel of the "
                             f"{channels}-channel image, got {values!r}")
    if any(value <= 0 for value in std):
        raise ValueError(f"std must be above 0 for every channel, got {std!r}")
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


def check_color_order(color_order: object) -> str:
    """The channel order of colour frames: 'bgr' (BGR, BGRA: OpenCV's) or 'rgb' (RGB, RGBA).

    Raises:
        ValueError: on anything else, naming the orders and the value given.

    Example:
        >>> check_color_order("rgb")
        'rgb'
    """
    if not (isinstance(color_order, str) and color_order in COLOR_ORDERS):
        raise ValueError(f"color_order must be one of {', '.join(repr(o) for o in COLOR_ORDERS)}, the channel order "
                         "of the frames you pass ('bgr': OpenCV; 'rgb': PIL, imageio, ROS rgb8, "
                         f"jetson_utils.cudaToNumpy), got {color_order!r}")
    return color_order


def check_frame(frame: object) -> np.ndarray:
    """Validate a camera frame and return it as H x W gray or H x W x 3 colour (a view; BGRA or RGBA loses alpha).

    Args:
        frame: H x W, H x W x 1, H x W x 3 (BGR or RGB) or H x W x 4 (BGRA or RGBA) numpy array of dtype uint8,
            uint16 (full range) or float32/float64 in [0, 1].

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
        if hasattr(frame, "__cuda_array_interface__"):
            # The GPU path uploads host frames itself (page-locked staging, one copy); a device array is no frame.
            raise ValueError(f"frame is a {type(frame).__name__} in GPU memory; frames are numpy arrays in host memory "
                             "(the GPU path uploads them itself): copy it to the host first, e.g. "
                             "tensor.cpu().numpy() or cupy.asnumpy(array)")
        raise ValueError(f"frame must be a numpy array (an OpenCV image), got {type(frame).__name__}")
    if not frame.dtype.isnative and frame.dtype.newbyteorder("=") in FRAME_DTYPES:
        raise ValueError(f"frame dtype {frame.dtype.str} has the other byte order than this machine's; convert with "
                         "frame.astype(frame.dtype.newbyteorder('='))")
    if frame.dtype not in FRAME_DTYPES:
        raise ValueError(f"frame dtype {frame.dtype} is not supported (uint8, uint16 full range, or float32/float64 "
                         f"in [0, 1]); {_dtype_advice(frame.dtype)}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[..., 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        # A torch tensor's layout (CxHxW) is refused like any other; the transpose that fixes it is worth a word.
        channels_first = frame.ndim == 3 and frame.shape[0] in (1, 3, 4)
        hint = (", channels first (CxHxW, as torch keeps images): pass frame.transpose(1, 2, 0)" if channels_first
                else "")
        raise ValueError(f"frame must be HxWx3 BGR, HxWx4 BGRA or HxW gray, got shape {frame.shape}{hint}")
    if frame.size == 0:
        raise ValueError(f"frame is empty (shape {frame.shape})")
    if max(frame.shape[:2]) > MAX_FRAME_SIDE:
        raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]} px; sides up to {MAX_FRAME_SIDE} px are "
                         "supported: resize or crop it")
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[..., :3]
    if frame.dtype.kind == "f":
        low, high = float(frame.min()), float(frame.max())
        # NaN fails both comparisons and is refused too.
        if not (low >= 0.0 and high <= 1.0):
            raise ValueError(f"float frames must hold values in [0, 1], got min {low:g} and max {high:g}"
                             f"{_nonfinite_advice(frame, low, high)}")
    return frame


def _nonfinite_advice(frame: np.ndarray, low: float, high: float) -> str:
    """The end of a refused float frame's error: how many pixels are NaN or infinite and what to do, or the scaling
    advice. The pixels are counted only here, on the way to the error (min and max already find them, a NaN making
    both NaN), so a good frame pays nothing for it."""
    if math.isfinite(low) and math.isfinite(high):
        return "; divide 8-bit values by 255 and 16-bit values by 65535, or pass them as uint8/uint16"
    bad = ~np.isfinite(frame)
    pixels = int(np.count_nonzero(bad.any(axis=2) if frame.ndim == 3 else bad))
    return (f": {pixels} of {frame.shape[0] * frame.shape[1]} pixels are NaN or infinite; fix the source or "
            "replace them, e.g. np.nan_to_num(frame, nan=0.0, posinf=1.0, neginf=0.0)")


def frame_scale(dtype: np.dtype) -> float:
    """The factor that brings a checked frame's values to [0, 1]: 1/255 (uint8), 1/65535 (uint16), 1 (float).

    Example:
        >>> frame_scale(np.dtype(np.uint16)) * 65535
        1.0
    """
    return _SCALE.get(np.dtype(dtype), 1.0)

