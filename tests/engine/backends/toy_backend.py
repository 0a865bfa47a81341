"""A toy backend: the one module a new backend is. test_registry.py registers it with one line.

It runs any unetrt ONNX model by answering class 1 everywhere, and implements the
:class:`unetrt.backends.Backend` protocol as every real backend does.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np

from unetrt.backends.base import check_batch, check_precision, network_output_shape
from unetrt.backends.registry import OpenRequest
from unetrt.model_file import read_model_file


class ToyBackend:
    """Logits that pick class 1 (a binary model: the foreground) at every pixel, at the network's output size."""

    name = "toy"
    max_input_hw: tuple[int, int] | None = None
    max_batch: int | None = None

    def __init__(self, path: Path, precision: str = "auto", threads: int | None = None) -> None:
        described = read_model_file(path)
        self.info, self.path, self.threads, self.device = described.info, Path(path), threads, "cpu"
        self.precision = check_precision(precision, described.precision, self.name, self.path)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, self.info)
        logits = np.zeros(network_output_shape(self.info, batch.shape), np.float32)
        logits[:, min(1, logits.shape[1] - 1)] = 1.0  # class 1; a binary model: foreground
        return logits

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> ToyBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_model(request: OpenRequest) -> ToyBackend:
    """The registry's opener."""
    if request.device not in ("auto", "cpu"):
        raise ValueError(f"backend 'toy' runs on the CPU; device must be 'auto' or 'cpu', got {request.device!r}")
    return ToyBackend(request.path, request.precision, **request.options)
