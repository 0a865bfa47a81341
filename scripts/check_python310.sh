#!/usr/bin/env bash
# CI: the runtime on Python 3.10, JetPack 6's Python (Ubuntu 22.04), with NumPy 1.x as on a Jetson and the last
# ONNX Runtime release for 3.10, older than the dev venv's: the GPU contract tests (TensorRT, pycuda
# and the CUDA driver as fakes; the CUDA kernels by emulation) and the bundled model on the CPU. No CPU build of
# torch can be had for 3.10 here (PyPI's torch is a CUDA build), and a Jetson runtime has none either: the tiny
# test model comes from the dev venv (UNETRT_TEST_TINY_MODELS), tests of .pt models skip.
# Usage: scripts/check_python310.sh   (after scripts/setup_venv.sh; Python 3.10 from PATH or pyenv)
set -euo pipefail
cd "$(dirname "$0")/.."
python310=
# A pyenv shim on PATH answers to python3.10 without running one: each candidate must run and say 3.10.
for candidate in $(command -v python3.10 || true) \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.*/bin/python3.10 2>/dev/null | sort -rV); do
  if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
    python310=$candidate
    break
  fi
done
[ -n "$python310" ] \
  || { echo "error: no Python 3.10 (JetPack 6's) on PATH or in pyenv: install it (pyenv install 3.10) to run this check" >&2; exit 1; }
venv=$PWD/build/py310-venv
src=build/py310-src
models=$PWD/build/py310-models
log=$PWD/build/py310.log
rm -rf "$venv" "$models"
mkdir -p "$models"
: > "$log"
bash scripts/copy_checkout.sh "$src"  # the install builds unetrt._tiling in place, without CUDA kernels
"$python310" -m venv "$venv"
pip() { "$venv/bin/python" -m pip "$@" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "error: pip $* failed; see $log" >&2; exit 1; }; }
pip install -q --upgrade pip "setuptools>=64" wheel pybind11
# NumPy 1.x, as scripts/setup_jetson.sh pins it (JetPack's cv2 and TensorRT are built for it).
(cd "$src" && UNETRT_CUDA=0 pip install -q --no-build-isolation -e ".[opencv]" "numpy<2" pytest hypothesis \
  "onnx>=1.16" "onnxconverter-common>=1.14")  # what the tensorrt extra brings, TensorRT and pycuda aside
"$venv/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is not None)' \
  || { echo "error: torch was installed into the Python 3.10 venv (a CUDA build from PyPI)" >&2; exit 1; }
.venv/bin/python -c "
import sys
from pathlib import Path
sys.path.insert(0, 'tests')
from conftest import write_tiny_model_files
write_tiny_model_files(Path('$models'))"
"$venv/bin/python" -c "
import sys, numpy, onnxruntime
print(f'Python {sys.version.split()[0]}, NumPy {numpy.__version__}, ONNX Runtime {onnxruntime.__version__}')"
# The GPU contract tests, and every test of the backends and of the model files they read.
(cd "$src" && UNETRT_TEST_TINY_MODELS="$models" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  -m gpu_contract tests/engine tests/fakes tests/benchmarks)
(cd "$src" && UNETRT_TEST_TINY_MODELS="$models" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  -m "not gpu_contract" tests/engine/backends tests/engine/test_model_file.py tests/benchmarks/test_bench_matmul.py)
"$venv/bin/python" - <<'PY'
import numpy as np
from unetrt import Segmenter
with Segmenter("camvid") as segmenter:
    mask = segmenter.segment(np.zeros((360, 480, 3), np.uint8)).mask
print(f"Python 3.10: Segmenter('camvid') on {segmenter.backend.name} segmented a 480x360 frame -> mask {mask.shape}")
PY
echo "python 3.10 check passed"
