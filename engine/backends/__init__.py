"""Inference backends, chosen by the model file's suffix: .plan TensorRT, .onnx ONNX Runtime, .pt PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bundled import bundled_model_path
from .base import Backend, DeviceBackend, check_batch

BACKENDS = ("onnxruntime", "torch", "tensorrt")
SUFFIX_BACKEND = {".onnx": "onnxruntime", ".pt": "torch", ".plan": "tensorrt", ".engine": "tensorrt"}

__all__ = ["BACKENDS", "Backend", "DeviceBackend", "check_batch", "open_backend", "resolve_model"]


def resolve_model(model: str | Path, backend: str = "auto") -> tuple[Path, str]:
    """Map a path or bundled name and a backend request to (file, backend name).

    A path's suffix picks the backend. A bundled name picks the file its backend
    needs: ``.pt`` for 'torch', ``.onnx`` otherwise.

    Raises:
        ValueError: on an unknown backend, a suffix that does not fit it, or an unknown bundled name.
        FileNotFoundError: when a path does not exist.

    Example:
        >>> resolve_model("camvid")[1]
        'onnxruntime'
    """
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    path = Path(model)
    if path.suffix in SUFFIX_BACKEND:
        if not path.is_file():
            raise FileNotFoundError(f"model file {str(path)!r} does not exist")
        chosen = SUFFIX_BACKEND[path.suffix]
        if backend not in ("auto", chosen):
            raise ValueError(
                f"backend {backend!r} cannot run {path.name}: a {path.suffix} file runs on {chosen!r}"
            )
        return path, chosen
    if path.suffix or len(path.parts) > 1:
        raise ValueError(
            f"cannot tell the backend of {str(model)!r}: use a .plan, .onnx or .pt file or a bundled model name"
        )
    if backend == "tensorrt":
        raise ValueError(
            f"bundled model {str(model)!r} has no TensorRT engine (engines are built per GPU); "
            f"build one with: unet-build $(python -c 'import unetrt.bundled as b; "
            f"print(b.bundled_model_path(\"{model}\"))') -o {model}.plan"
        )
    chosen = "torch" if backend == "torch" else "onnxruntime"
    return bundled_model_path(str(model), ".pt" if chosen == "torch" else ".onnx"), chosen


def open_backend(model: str | Path, backend: str = "auto", device: str = "auto", **options: Any) -> Backend:
    """Open the backend that runs ``model``.

    Args:
        model: a .plan, .onnx or .pt path, or a bundled model name.
        backend: 'auto' (from the suffix), 'onnxruntime', 'torch' or 'tensorrt'.
        device: 'auto', 'cpu' or 'cuda'.
        **options: passed to the backend (e.g. ``threads``).

    Returns:
        An open backend; close it, or use it as a context manager.

    Raises:
        ValueError: when the model or backend request cannot be served.
        FileNotFoundError: when the model file does not exist.
        ImportError: when the backend's library is not installed.

    Example:
        >>> with open_backend("camvid") as net:  # doctest: +SKIP
        ...     logits = net.infer(batch)
    """
    path, chosen = resolve_model(model, backend)
    if chosen == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device, **options)
    if chosen == "torch":
        from .torch import TorchBackend

        return TorchBackend(path, device=device, **options)
    from .tensorrt import TensorRTBackend

    return TensorRTBackend(path, device=device, **options)
