#!/usr/bin/env bash
# Install the runtime alone (no torch, no extras) in a fresh venv and segment a frame with the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$PWD/build/runtime-venv
src=build/runtime-src
rm -rf "$venv"
bash scripts/copy_checkout.sh "$src"  # the install builds unetrt._tiling in place, without CUDA kernels
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=64" wheel pybind11
(cd "$src" && UNETRT_CUDA=0 "$venv/bin/python" -m pip install -q --no-build-isolation -e ".[opencv]")
"$venv/bin/python" - <<'PY'
import importlib.util
import numpy as np
assert importlib.util.find_spec("torch") is None, "torch must not be installed by the runtime"
import unetrt
import unetrt._tiling
from unetrt import Segmenter
with Segmenter("camvid") as seg:
    mask = seg.segment(np.zeros((360, 480, 3), np.uint8)).mask
print(f"runtime without torch: unetrt {unetrt.__version__} segmented a 480x360 frame -> mask {mask.shape}")
PY
