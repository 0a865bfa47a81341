"""The one small protocol every inference backend implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..model_info import ModelInfo


@runtime_checkable
class Backend(Protocol):
    """Runs the network on normalised batches; owns its resources until :meth:`close`.

    Attributes:
        name: short backend name ('onnxruntime', 'torch', 'tensorrt').
        device: where it runs, in words (e.g. 'cpu', 'cuda:0 (NVIDIA H100)').
        info: the model's description.
        max_input_hw: largest (height, width) the backend accepts, or None for no limit.
        max_batch: largest batch it accepts, or None for no limit.
    """

    name: str
    device: str
    info: ModelInfo
    max_input_hw: tuple[int, int] | None
    max_batch: int | None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x C x H x W float32 (normalised, legal H and W) -> N x K x h x w float32 logits."""
        ...

    def close(self) -> None:
        """Release sessions, contexts and device memory; idempotent."""
        ...


def check_batch(batch: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Validate a network batch and return it as contiguous float32.

    Raises:
        ValueError: on a wrong rank, channel count or dtype.
    """
    if not isinstance(batch, np.ndarray) or batch.ndim != 4:
        shape = getattr(batch, "shape", None)
        raise ValueError(f"batch must be a 4-D N x C x H x W numpy array, got shape {shape}")
    if batch.shape[1] != info.in_channels:
        raise ValueError(f"batch has {batch.shape[1]} channels; the model expects {info.in_channels}")
    if batch.dtype not in (np.float32, np.float16):
        raise ValueError(f"batch dtype must be float32, got {batch.dtype}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def invalid_model_file(path: str | Path, expected: str, problem: str) -> ValueError:
    """The one error every backend raises for a model file that exists but cannot be used.

    Library errors about a damaged file run to many lines and name neither the file nor
    what it should have been; this names both, and the problem in one line.

    Args:
        path: the model file.
        expected: what the file should be, e.g. 'ONNX model written by unet-export'.
        problem: what is wrong with it, e.g. 'the file is truncated or not ONNX'.

    Returns:
        The ValueError to raise (``raise invalid_model_file(...) from exc``).

    Example:
        >>> str(invalid_model_file("m.onnx", "ONNX model written by unet-export", "it is empty"))
        "model file 'm.onnx' is not a valid ONNX model written by unet-export: it is empty"
    """
    return ValueError(f"model file {str(path)!r} is not a valid {expected}: {' '.join(problem.split())}")
