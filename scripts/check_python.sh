#!/usr/bin/env bash
# CI: the runtime on a Jetson's Python, 3.10 (JetPack 6, Ubuntu 22.04) or 3.12 (JetPack 7, Ubuntu 24.04), with
# NumPy 1.x as scripts/setup_jetson.sh pins it and the ONNX Runtime pip gives that Python (for 3.10 the last
# release for it, older than the dev venv's): the GPU contract tests (TensorRT, pycuda and the CUDA driver as fakes;
# the CUDA kernels by emulation) and, with --backends, the backends' tests and the bundled model on the CPU. No CPU
# build of torch can be had for these Pythons here (PyPI's torch is a CUDA build), and a Jetson runtime has none
# either: the tiny test model comes from the dev venv (UNETRT_TEST_TINY_MODELS), tests of .pt models skip.
# Usage: scripts/check_python.sh VERSION [--backends]   e.g. scripts/check_python.sh 3.10 --backends
#        (after scripts/setup_venv.sh; that Python from PATH or pyenv)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-}
backends=0
[ "${2:-}" = "--backends" ] && backends=1
case "$version" in
  3.10) jetpack="JetPack 6" ;;
  3.12) jetpack="JetPack 7" ;;
  *) echo "usage: scripts/check_python.sh 3.10|3.12 [--backends]" >&2; exit 2 ;;
esac
tag=py${version/./}
python=
# A pyenv shim on PATH answers to pythonX.Y without running one: each candidate must run and say that version.
for candidate in $(command -v "python$version" || true) \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -rV); do
  if "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" 2>/dev/null
  then
    python=$candidate
    break
  fi
done
[ -n "$python" ] \
  || { echo "error: no Python $version ($jetpack's) on PATH or in pyenv: install it (pyenv install $version) to run this check" >&2; exit 1; }
venv=$PWD/build/$tag-venv
src=build/$tag-src
models=$PWD/build/$tag-models
log=$PWD/build/$tag.log
rm -rf "$venv" "$models"
mkdir -p "$models"
: > "$log"
bash scripts/copy_checkout.sh "$src"  # the install builds unetrt._tiling in place, without CUDA kernels
"$python" -m venv "$venv"
pip() { "$venv/bin/python" -m pip "$@" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "error: pip $* failed; see $log" >&2; exit 1; }; }
pip install -q --upgrade pip "setuptools>=64" wheel pybind11
# NumPy 1.x, as scripts/setup_jetson.sh pins it (JetPack's cv2 and TensorRT are built for it).
(cd "$src" && UNETRT_CUDA=0 pip install -q --no-build-isolation -e ".[opencv]" "numpy<2" pytest pytest-timeout hypothesis \
  "onnx>=1.16" "onnxconverter-common>=1.14")  # what the tensorrt extra brings, TensorRT and pycuda aside
"$venv/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is not None)' \
  || { echo "error: torch was installed into the Python $version venv (a CUDA build from PyPI)" >&2; exit 1; }
.venv/bin/python -c "
import sys
from pathlib import Path
sys.path.insert(0, 'tests')
from conftest import write_tiny_model_files
write_tiny_model_files(Path('$models'))"
"$venv/bin/python" -c "
import sys, numpy, onnxruntime
print(f'Python {sys.version.split()[0]}, NumPy {numpy.__version__}, ONNX Runtime {onnxruntime.__version__}')"
# The GPU contract tests.
(cd "$src" && UNETRT_TEST_TINY_MODELS="$models" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  -m gpu_contract tests/engine tests/fakes tests/benchmarks)
if [ "$backends" -eq 1 ]; then
  # Every test of the backends and of the model files they read, and the bundled model on the CPU.
  (cd "$src" && UNETRT_TEST_TINY_MODELS="$models" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    -m "not gpu_contract" tests/engine/backends tests/engine/test_model_file.py tests/benchmarks/test_bench_matmul.py)
  "$venv/bin/python" - "$version" <<'PY'
import sys

import numpy as np

from unetrt import Segmenter

with Segmenter("camvid") as segmenter:
    mask = segmenter.segment(np.zeros((360, 480, 3), np.uint8)).mask
print(f"Python {sys.argv[1]}: Segmenter('camvid') on {segmenter.backend.name} segmented a 480x360 frame -> mask {mask.shape}")
PY
fi
echo "python $version check passed"
