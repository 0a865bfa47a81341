"""The runtime (``unetrt`` without ``unetrt.export``) must import and run where torch is absent."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import unetrt

# Modules that need torch by design; everything else in unetrt must not import it.
TORCH_MODULES = ("unetrt.export", "unetrt.backends.torch", "unetrt.benchmarks")


def runtime_modules() -> list[str]:
    names = []
    for module in pkgutil.walk_packages(unetrt.__path__, "unetrt."):
        if not module.name.startswith(TORCH_MODULES):
            names.append(module.name)
    return names


def test_runtime_imports_and_segments_with_torch_blocked(tiny_model_files: dict[str, Path]) -> None:
    modules = runtime_modules()
    assert "unetrt.segmenter" in modules and "unetrt.backends.onnxruntime" in modules
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
        "import importlib, numpy as np\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from unetrt.segmenter import Segmenter\n"
        f"with Segmenter({str(tiny_model_files['onnx'])!r}) as seg:\n"
        "    print(seg.segment(np.zeros((20, 30, 3), np.uint8)).mask.shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("(20, 30)")


def test_torch_backend_says_how_to_install_torch(tiny_model_files: dict[str, Path]) -> None:
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from unetrt.segmenter import Segmenter\n"
        "try:\n"
        f"    Segmenter({str(tiny_model_files['pt'])!r})\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "the torch backend needs PyTorch" in proc.stdout, proc.stdout + proc.stderr
