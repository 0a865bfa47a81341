#!/usr/bin/env bash
# unetrt on a Jetson Orin with JetPack 6 (L4T R36, Ubuntu 22.04, Python 3.10, CUDA 12.x, TensorRT 10.3):
# a venv that sees JetPack's own TensorRT and OpenCV (built with GStreamer, which csi:// needs), the packages
# building an engine needs, the CUDA kernels, and at the end the backend and device a stream will use.
#
#   bash scripts/setup_jetson.sh                # venv in .venv, then builds the camvid TensorRT engine (minutes)
#   bash scripts/setup_jetson.sh --no-engine    # everything but the engine build (the first unet-stream builds it)
#   bash scripts/setup_jetson.sh --cpu-only     # CI: the steps that need no GPU (no TensorRT, pycuda, nvcc)
#   VENV=path bash scripts/setup_jetson.sh      # another venv folder
#
# Never installs an OpenCV wheel (it would shadow JetPack's GStreamer build) nor NumPy 2 (JetPack's cv2 and
# TensorRT bindings are built for NumPy 1.x). JetPack 5 (Xavier, Python 3.8, TensorRT 8.5) is not supported:
# see docs/jetson.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu_only=0
build_engine=1
for argument in "$@"; do
  case "$argument" in
    --cpu-only) cpu_only=1; build_engine=0 ;;
    --no-engine) build_engine=0 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $argument (see --help)" >&2; exit 2 ;;
  esac
done
venv=${VENV:-.venv}
python=${PYTHON:-/usr/bin/python3}
log=build/setup_jetson.log
mkdir -p build
: >"$log"

say() { echo "setup_jetson: $*"; }
fail() { echo "error: $*" >&2; exit 1; }

# --- the platform ---------------------------------------------------------------------------------------
if [ "$cpu_only" -eq 0 ]; then
  release=$(head -n 1 /etc/nv_tegra_release 2>/dev/null || true)
  case "$release" in
    *"R36"*) ;;
    *"R35"*|*"R34"*|*"R32"*)
      fail "this is JetPack 5 or older ($release): unetrt needs Python >= 3.10 and TensorRT 10 (JetPack 6); see docs/jetson.md" ;;
    *) fail "no JetPack 6 found (/etc/nv_tegra_release: ${release:-missing}); on another machine use scripts/setup_venv.sh, or --cpu-only" ;;
  esac
  "$python" -c 'import sys; assert sys.version_info[:2] >= (3, 10)' \
    || fail "$python is older than 3.10; JetPack 6 ships 3.10"
  "$python" -c 'import tensorrt, sys; sys.exit(0 if int(tensorrt.__version__.split(".")[0]) >= 10 else 1)' 2>/dev/null \
    || fail "JetPack's TensorRT Python bindings are missing or older than 10: sudo apt install python3-libnvinfer"
  export PATH="/usr/local/cuda/bin:$PATH" CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  command -v nvcc >/dev/null || fail "nvcc not found in /usr/local/cuda/bin: sudo apt install nvidia-jetpack (or cuda-nvcc)"
fi
"$python" -c 'import cv2' 2>/dev/null \
  || fail "the system OpenCV is missing: sudo apt install python3-opencv (JetPack's, built with GStreamer)"

# --- the venv: system site packages (tensorrt, cv2, numpy 1.x) stay visible ------------------------------
say "venv in $venv (with the system's TensorRT and OpenCV)"
[ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages "$venv"
pip=("$venv/bin/python" -m pip install -q)
constraints=build/setup_jetson.constraints
printf 'numpy<2\nopencv-python<0\nopencv-python-headless<0\nopencv-contrib-python<0\n' >"$constraints"
"${pip[@]}" --upgrade pip "setuptools>=64" wheel pybind11 >>"$log" 2>&1
# onnx reads the model to build its engine; no onnxconverter-common: TensorRT 10 builds FP16 by flag.
"${pip[@]}" -c "$constraints" "numpy<2" "onnx>=1.16" >>"$log" 2>&1 \
  || { tail -n 20 "$log" >&2; fail "pip could not install onnx; see $log"; }

# --- pycuda: present, or built against JetPack's CUDA -----------------------------------------------------
if [ "$cpu_only" -eq 0 ]; then
  if "$venv/bin/python" -c 'import pycuda.driver' 2>/dev/null; then
    say "pycuda: found"
  else
    say "pycuda: building against $CUDA_HOME (a few minutes)"
    CUDA_ROOT="$CUDA_HOME" "${pip[@]}" -c "$constraints" "pycuda>=2024.1" >>"$log" 2>&1 \
      || { tail -n 20 "$log" >&2; fail "pycuda did not build; see $log (it needs python3-dev and nvcc)"; }
  fi
fi

# --- unetrt with its CUDA kernels (Orin: sm_87) ------------------------------------------------------------
if [ "$cpu_only" -eq 1 ]; then
  cuda=0
else
  cuda=1
fi
say "unetrt (UNETRT_CUDA=$cuda)"
UNETRT_CUDA=$cuda UNETRT_CUDA_ARCHS=${UNETRT_CUDA_ARCHS:-87} "${pip[@]}" -c "$constraints" --no-build-isolation \
  -e . >>"$log" 2>&1 || { tail -n 30 "$log" >&2; fail "pip install of unetrt failed; see $log"; }
"$venv/bin/python" - <<'PY'
import importlib.metadata as metadata
import numpy
wheels = [d.metadata["Name"] for d in metadata.distributions() if (d.metadata["Name"] or "").lower().startswith("opencv")]
assert not wheels, f"an OpenCV wheel was installed over the system one: {wheels}"
assert int(numpy.__version__.split(".")[0]) < 2, f"NumPy {numpy.__version__}: JetPack's cv2 and TensorRT need 1.x"
PY

# --- what a stream will use (and, on a GPU, its TensorRT engine built and cached now) -----------------------
if [ "$build_engine" -eq 1 ]; then
  say "building the camvid TensorRT engine once (minutes; cached for every later start)"
  "$venv/bin/python" -m unetrt.doctor --build
else
  "$venv/bin/python" -m unetrt.doctor
fi
say "done: source $venv/bin/activate; unet-stream csi://0 http://0.0.0.0:8080 --legend"
