"""The console scripts: each imports its command module only when run, so a missing or incompatible
OpenCV (or another absent dependency) is reported as one line with exit code 2 instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from .cli import USAGE_ERROR, fill_closed_standard_streams
from .opencv import OpenCVImportError, import_cv2


def _launch(module: str) -> int:
    fill_closed_standard_streams()  # before the import, which writes NumPy's warnings to sys.stderr
    try:
        import_cv2()
        main: Callable[[], int] = importlib.import_module(module).main
    except OpenCVImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return main()


def unet_stream() -> int:
    """``unet-stream``: see :mod:`unetrt.stream.cli`."""
    return _launch("unetrt.stream.cli")


def unet_eval() -> int:
    """``unet-eval``: see :mod:`unetrt.evaluate`."""
    return _launch("unetrt.evaluate")


def unet_bench() -> int:
    """``unet-bench``: see :mod:`unetrt.benchmarks.bench`."""
    return _launch("unetrt.benchmarks.bench")


def unet_train() -> int:
    """``unet-train``: see :mod:`unetrt.export.train`."""
    return _launch("unetrt.export.train")


def unet_export() -> int:
    """``unet-export``: see :mod:`unetrt.export.onnx_export`."""
    return _launch("unetrt.export.onnx_export")


def unet_build() -> int:
    """``unet-build``: see :mod:`unetrt.export.tensorrt`."""
    return _launch("unetrt.export.tensorrt")


def unet_weights() -> int:
    """``unet-weights``: see :mod:`unetrt.export.weights_figure`."""
    return _launch("unetrt.export.weights_figure")


def unet_batch() -> int:
    """``unet-batch``: see :mod:`unetrt.batch.cli`."""
    return _launch("unetrt.batch.cli")
