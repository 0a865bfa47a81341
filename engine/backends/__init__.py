"""Inference backends and the choice of model file, backend and precision.

A path's suffix picks the backend: ``.plan`` TensorRT, ``.onnx`` ONNX Runtime (or
OpenVINO when asked), ``.xml`` OpenVINO, ``.pt`` PyTorch. A bundled model name on a
CPU picks the fastest installed engine and precision that keeps the model's
accuracy (``CPU_PREFERENCE``, measured by ``unet-bench``); ``precision`` and
``backend`` choose another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ..bundled import bundled_model_names, bundled_model_path, bundled_precision_path
from .base import Backend, DeviceBackend, check_batch

BACKENDS = ("onnxruntime", "openvino", "torch", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
SUFFIX_BACKEND = {".onnx": "onnxruntime", ".pt": "torch", ".plan": "tensorrt", ".engine": "tensorrt",
                  ".xml": "openvino"}
# Backends that can run each suffix besides its own.
ALSO_RUNS = {".onnx": ("openvino",)}
# Fastest first on a CPU, from one interleaved unet-bench run on 2 AVX-512 VNNI cores
# (benchmarks/results/bench_*_cpu_camvid_int8*.md); every entry keeps the bundled models'
# accuracy (INT8 within 1 mIoU point / 0.005 pixel error of FP32, engine/models/NAME.json).
CPU_PREFERENCE = (("openvino", "int8"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("onnxruntime", "fp32"))
# BF16 is an inference-precision hint of OpenVINO on the FP32 file, not a file of its own.
HINT_PRECISIONS = {"openvino": ("fp32", "bf16")}

__all__ = ["BACKENDS", "PRECISIONS", "Backend", "DeviceBackend", "ModelChoice", "check_batch", "choose_model",
           "open_backend", "resolve_model"]


class ModelChoice(NamedTuple):
    """What runs: the model file, the backend and the precision ('auto': the file's own)."""

    path: Path
    backend: str
    precision: str


def _wants_gpu(device: str) -> bool:
    if device == "cuda":
        return True
    if device != "auto":
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _choose_file(path: Path, backend: str, precision: str) -> ModelChoice:
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    native = SUFFIX_BACKEND[path.suffix]
    runs_on = (native, *ALSO_RUNS.get(path.suffix, ()))
    chosen = native if backend == "auto" else backend
    if chosen not in runs_on:
        raise ValueError(f"backend {backend!r} cannot run {path.name}: a {path.suffix} file runs on "
                         f"{' or '.join(repr(b) for b in runs_on)}")
    if precision != "auto" and precision not in HINT_PRECISIONS.get(chosen, ()):
        raise ValueError(f"precision {precision!r} picks among a bundled model's files; {path.name} runs at the "
                         "precision it was exported with: pass precision 'auto', or the file of that precision")
    return ModelChoice(path, chosen, precision)


def _candidates(backend: str, precision: str, gpu: bool) -> list[tuple[str, str]]:
    if precision == "auto":
        if gpu:
            return [(backend if backend != "auto" else "onnxruntime", "fp32")]
        preference = [c for c in CPU_PREFERENCE if backend in ("auto", c[0])]
        return preference or [(backend, "fp32")]
    if backend != "auto":
        return [(backend, precision)]
    if precision == "bf16":
        return [("openvino", "bf16")]
    return [("onnxruntime", precision)] if gpu else [("openvino", precision), ("onnxruntime", precision)]


def choose_model(model: str | Path, backend: str = "auto", precision: str = "auto",
                 device: str = "auto") -> ModelChoice:
    """Map a path or bundled name, a backend and a precision request to the file, backend and precision that run.

    A bundled name with backend and precision 'auto' takes, on a CPU, the first of
    ``CPU_PREFERENCE`` that is installed and shipped (OpenVINO INT8, then ONNX Runtime
    INT8, ...); with a GPU, the FP32 model on ONNX Runtime.

    Args:
        model: a .plan, .onnx, .xml or .pt path, or a bundled model name.
        backend: 'auto', 'onnxruntime', 'openvino', 'torch' or 'tensorrt'.
        precision: 'auto', 'fp32', 'fp16', 'int8' (bundled files), or 'bf16' (OpenVINO's hint on the FP32 file).
        device: 'auto', 'cpu' or 'cuda'.

    Returns:
        The choice; its precision is 'auto' for a path given without one.

    Raises:
        ValueError: on an unknown backend or precision, a file the backend cannot run, an unknown bundled
            name, or a precision the bundled model does not ship.
        FileNotFoundError: when a path does not exist.

    Example:
        >>> choose_model("camvid", "onnxruntime", "fp32").path.name
        'camvid.onnx'
    """
    from .openvino import openvino_available

    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    path = Path(model)
    if path.suffix in SUFFIX_BACKEND:
        return _choose_file(path, backend, precision)
    if path.suffix or len(path.parts) > 1:
        raise ValueError(f"cannot tell the backend of {str(model)!r}: use a .plan, .onnx, .xml or .pt file or a "
                         "bundled model name")
    name = str(model)
    if name not in bundled_model_names():
        bundled_model_path(name)  # raises, listing the bundled names
    if backend == "tensorrt":
        raise ValueError(
            f"bundled model {name!r} has no TensorRT engine (engines are built per GPU); "
            f"build one with: unet-build $(python -c 'import unetrt.bundled as b; "
            f"print(b.bundled_model_path(\"{name}\"))') -o {name}.plan"
        )
    if backend == "torch":
        if precision not in ("auto", "fp32"):
            raise ValueError(f"the bundled {name}.pt runs in fp32 on torch; pass precision 'auto' or 'fp32', or "
                             "another backend for the other precisions")
        return ModelChoice(bundled_model_path(name, ".pt"), "torch", "fp32")
    if precision == "bf16" and backend not in ("auto", "openvino"):
        raise ValueError("precision 'bf16' is OpenVINO's inference-precision hint; use backend 'openvino'")
    candidates = _candidates(backend, precision, _wants_gpu(device))
    for chosen, wanted in candidates:
        # An uninstalled OpenVINO is passed over when something else can serve; alone (bf16), opening it
        # says how to install it.
        if backend == "auto" and chosen == "openvino" and len(candidates) > 1 and not openvino_available():
            continue
        file = bundled_precision_path(name, "fp32" if wanted == "bf16" else wanted)
        if file is not None:
            return ModelChoice(file, chosen, wanted)
    raise ValueError(f"bundled model {name!r} ships no {precision} file for backend {backend!r}; "
                     "bundled precisions are those of tools/state_bundled_model.py (fp32, fp16, int8)")


def resolve_model(model: str | Path, backend: str = "auto", precision: str = "auto",
                  device: str = "auto") -> tuple[Path, str]:
    """The (file, backend name) :func:`choose_model` picks.

    Raises:
        ValueError, FileNotFoundError: as :func:`choose_model`.

    Example:
        >>> resolve_model("camvid", "onnxruntime", "fp32")[1]
        'onnxruntime'
    """
    choice = choose_model(model, backend, precision, device)
    return choice.path, choice.backend


def open_backend(model: str | Path, backend: str = "auto", device: str = "auto", precision: str = "auto",
                 **options: Any) -> Backend:
    """Open the backend that runs ``model``.

    Args:
        model: a .plan, .onnx, .xml or .pt path, or a bundled model name.
        backend: 'auto', 'onnxruntime', 'openvino', 'torch' or 'tensorrt' (see :func:`choose_model`).
        device: 'auto', 'cpu' or 'cuda'.
        precision: 'auto', 'fp32', 'fp16', 'bf16' or 'int8' (see :func:`choose_model`).
        **options: passed to the backend (e.g. ``threads``).

    Returns:
        An open backend; close it, or use it as a context manager.

    Raises:
        ValueError: when the model or backend request cannot be served.
        FileNotFoundError: when the model file does not exist.
        ImportError: when the backend's library is not installed (the message says how to install it).

    Example:
        >>> with open_backend("camvid", precision="int8") as net:  # doctest: +SKIP
        ...     logits = net.infer(batch)
    """
    path, chosen, chosen_precision = choose_model(model, backend, precision, device)
    if chosen == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device, **options)
    if chosen == "openvino":
        from .openvino import OpenVinoBackend

        hint = "bf16" if chosen_precision == "bf16" else "fp32"
        return OpenVinoBackend(path, device=device, precision=hint, **options)
    if chosen == "torch":
        from .torch import TorchBackend

        return TorchBackend(path, device=device, **options)
    from .tensorrt import TensorRTBackend

    return TensorRTBackend(path, device=device, **options)
