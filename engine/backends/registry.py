"""The backend registry: every backend is one module plus one :func:`register_backend` line.

A :class:`BackendSpec` says which model files a backend runs, which precisions it can be asked for, how it is
opened (a ``module:function`` imported on first use, so no backend's library is imported to list them), the one
line the commands' ``--backend`` help shows, and its rows in ``unet-bench``. :func:`unetrt.backends.open_backend`,
the commands' help texts and ``unetrt.benchmarks.variants`` read it; nothing else names the backends.

The built-in backends are registered at the end of this module. Adding one: write ``unetrt/backends/NAME.py`` with
a function ``open_model(request: OpenRequest) -> Backend`` and add one :func:`register_backend` line below (a
backend of a new file container also teaches :mod:`unetrt.model_file` to read its description).

Example:
    >>> [spec.name for spec in registered_backends()]
    ['onnxruntime', 'openvino', 'torch', 'tensorrt']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Backend


@dataclass(frozen=True)
class OpenRequest:
    """What :func:`unetrt.backends.open_backend` asks of a backend's opener.

    Attributes:
        path: the model file :func:`unetrt.backends.choose_model` chose.
        precision: the precision it chose (the file's own unless one of the backend's hints was asked).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        build: whether an engine may be built here (TensorRT from ONNX); other backends ignore it.
        working_size: (width, height) an engine built here is fixed at (None: the model's own).
        options: the backend's own keywords (e.g. ``threads``, ``lanes``, ``half``).
    """

    path: Path
    precision: str
    device: str
    build: bool = True
    working_size: tuple[int, int] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchRow:
    """One ``unet-bench`` row of a backend.

    Attributes:
        key: the name on the command line and in results (e.g. 'openvino-int8').
        label: the name in tables.
        precision: the precision asked ('auto': the file's own; 'int8' runs the QDQ model NAME.int8.onnx, on
            TensorRT NAME.int8.tensorrt.onnx).
        needs_cuda: skipped on a CPU device.
    """

    key: str
    label: str
    precision: str = "auto"
    needs_cuda: bool = False


@dataclass(frozen=True)
class BackendSpec:
    """How a backend is chosen, opened, described and benchmarked.

    Attributes:
        name: the ``--backend`` name.
        opener: ``'module:function'``; the function takes an :class:`OpenRequest` and returns an open backend.
        summary: what it is, in a few words, for the commands' help (e.g. 'OpenVINO, CPU').
        suffixes: model-file suffixes that pick it under backend 'auto'.
        also_runs: other suffixes it runs when asked by name.
        hint_precisions: precisions it can be asked to run a file at besides the file's own (an inference hint
            or a build precision).
        bench_rows: its rows in ``unet-bench``.
        options: the keyword options its opener takes (:attr:`OpenRequest.options`; an automatic choice passes
            each backend only its own); None: any, unchecked.
    """

    name: str
    opener: str
    summary: str
    suffixes: tuple[str, ...] = ()
    also_runs: tuple[str, ...] = ()
    hint_precisions: tuple[str, ...] = ()
    bench_rows: tuple[BenchRow, ...] = ()
    options: tuple[str, ...] | None = None

    def runs(self, suffix: str) -> bool:
        """Whether it runs a model file with this suffix."""
        return suffix in self.suffixes or suffix in self.also_runs

    def load_opener(self) -> Callable[[OpenRequest], Backend]:
        """The opener function (its module is imported here, on first use).

        Raises:
            ValueError: when ``opener`` does not name a function of an importable module.
        """
        module_name, _, function = self.opener.partition(":")
        opener = getattr(importlib.import_module(module_name), function, None)
        if not callable(opener):
            raise ValueError(f"backend {self.name!r}: opener {self.opener!r} is not a function")
        return opener


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    """Add a backend to the registry (the one line that makes a backend module known).

    Raises:
        ValueError: when the name is taken, is 'auto', or the opener is not ``module:function``.

    Example:
        >>> register_backend(BackendSpec("toy", "my_package.toy:open_model", "a toy", also_runs=(".onnx",)))
        ...     # doctest: +SKIP
    """
    if spec.name == "auto" or spec.name in _REGISTRY:
        raise ValueError(f"backend name {spec.name!r} is taken; choose another")
    if spec.opener.count(":") != 1:
        raise ValueError(f"backend {spec.name!r}: opener must be 'module:function', got {spec.opener!r}")
    _REGISTRY[spec.name] = spec
    return spec


def registered_backends() -> tuple[BackendSpec, ...]:
    """Every registered backend, in registration order."""
    return tuple(_REGISTRY.values())


def backend_names() -> tuple[str, ...]:
    """The registered backends' names, in registration order."""
    return tuple(_REGISTRY)


def backend_spec(name: str) -> BackendSpec:
    """The spec of a registered backend.

    Raises:
        ValueError: on an unknown name, listing the registered ones.
    """
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(_REGISTRY)}")
    return spec


def native_backend(suffix: str) -> BackendSpec | None:
    """The backend a model file with ``suffix`` picks under backend 'auto', or None."""
    return next((spec for spec in _REGISTRY.values() if suffix in spec.suffixes), None)


def backend_help() -> str:
    """The ``--backend`` help of every command: 'auto', then each registered backend and what it is."""
    listed = "; ".join(f"{spec.name} ({spec.summary})" for spec in _REGISTRY.values())
    return f"auto (from the model file and this machine) or one of: {listed}"


register_backend(BackendSpec(
    "onnxruntime", "unetrt.backends.onnxruntime:open_model", "ONNX Runtime: CPU, or its CUDA provider",
    suffixes=(".onnx",), options=("threads",),
    bench_rows=(BenchRow("onnxruntime", "ONNX Runtime FP32", "fp32"),
                BenchRow("onnxruntime-int8", "ONNX Runtime INT8", "int8"))))
register_backend(BackendSpec(
    "openvino", "unetrt.backends.openvino:open_model", "OpenVINO, CPU; .onnx or IR .xml",
    suffixes=(".xml",), also_runs=(".onnx",), hint_precisions=("fp32", "bf16"), options=("threads", "lanes"),
    bench_rows=(BenchRow("openvino-fp32", "OpenVINO FP32", "fp32"), BenchRow("openvino-bf16", "OpenVINO BF16", "bf16"),
                BenchRow("openvino-int8", "OpenVINO INT8", "int8"))))
register_backend(BackendSpec(
    "torch", "unetrt.backends.torch:open_model", "PyTorch, CPU or CUDA; .pt", suffixes=(".pt",),
    options=("threads", "half", "channels_last")))
register_backend(BackendSpec(
    "tensorrt", "unetrt.backends.tensorrt:open_model", "TensorRT, CUDA; .plan, or .onnx built on first use",
    suffixes=(".plan", ".engine"), also_runs=(".onnx",), hint_precisions=("fp32", "fp16", "int8"),
    options=("threads", "cuda_graph", "dla_core", "cache_dir", "progress"),
    bench_rows=(BenchRow("tensorrt", "TensorRT", "auto", needs_cuda=True),)))
