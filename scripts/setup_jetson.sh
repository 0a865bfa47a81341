#!/usr/bin/env bash
# unetrt on a Jetson with JetPack 6.1 or newer (L4T R36.4: Orin, Ubuntu 22.04, Python 3.10, CUDA 12, TensorRT 10.3)
# or JetPack 7 (L4T R38 and later: Thor, and Orin from JetPack 7.2; Ubuntu 24.04, Python 3.12, CUDA 13, TensorRT 10
# or 11): a venv that sees JetPack's own TensorRT and OpenCV (built with GStreamer, which csi:// needs), the packages
# building an engine needs, the CUDA kernels for this Jetson's GPU, and at the end the backend and device a stream
# will use.
#
#   bash scripts/setup_jetson.sh                # venv in .venv, then builds the camvid TensorRT engine (minutes)
#   bash scripts/setup_jetson.sh --no-engine    # everything but the engine build (the first unet-stream builds it)
#   bash scripts/setup_jetson.sh --cpu-only     # CI: the steps that need no GPU (no TensorRT, pycuda, nvcc)
#   VENV=path bash scripts/setup_jetson.sh      # another venv folder
#   UNETRT_CUDA_ARCHS=87 bash scripts/setup_jetson.sh   # the kernels' compute capability (default: this GPU's)
#
# Never installs an OpenCV wheel (it would shadow JetPack's GStreamer build) nor NumPy 2 (JetPack's cv2 and
# TensorRT bindings are built for NumPy 1.x). JetPack 5 (Xavier, Python 3.8, TensorRT 8.5) is not supported:
# see docs/jetson.md.

# Run with sh (dash), 'set -o pipefail' below stops with a line that does not say bash runs this.
[ -n "${BASH_VERSION:-}" ] || { echo "error: $0 is a bash script: run it with bash $0" >&2; exit 2; }
set -euo pipefail
cd "$(dirname "$0")/.."

cpu_only=0
build_engine=1
for argument in "$@"; do
  case "$argument" in
    --cpu-only) cpu_only=1; build_engine=0 ;;
    --no-engine) build_engine=0 ;;
    -h|--help) awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' scripts/setup_jetson.sh; exit 0 ;;
    *) echo "error: unknown option $argument (see --help)" >&2; exit 2 ;;
  esac
done
venv=${VENV:-.venv}
python=${PYTHON:-/usr/bin/python3}
# Under sudo the venv, build/ and the engine cache would be root's: the user's streams would build an engine of their
# own (minutes) and the user's next run would fail on root's log file. A root shell of its own (a container) has no
# SUDO_USER.
if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  echo "error: run it as $SUDO_USER, without sudo (bash $0): it makes $venv and the engine cache for the user who" \
       "runs the streams, where sudo leaves root's files in this checkout and builds root's engine cache" >&2
  exit 2
fi
log=build/setup_jetson.log
mkdir -p build
: >"$log"

say() { echo "setup_jetson: $*"; }
fail() { echo "error: $*" >&2; exit 1; }

# --- the platform ---------------------------------------------------------------------------------------
# UNETRT_TEGRA_RELEASE and UNETRT_DEVICE_TREE stand in for the files that say which Jetson this is (the tests).
release_file=${UNETRT_TEGRA_RELEASE:-/etc/nv_tegra_release}
device_tree=${UNETRT_DEVICE_TREE:-/proc/device-tree/compatible}
if [ "$cpu_only" -eq 0 ]; then
  release=$(head -n 1 "$release_file" 2>/dev/null || true)
  l4t=$(echo "$release" | sed -n 's/^# R\([0-9][0-9]*\) .*/\1/p')
  [ -n "$l4t" ] \
    || fail "no JetPack found ($release_file: ${release:-missing}); on another machine use scripts/setup_venv.sh, or --cpu-only"
  [ "$l4t" -ge 36 ] \
    || fail "this is JetPack 5 or older ($release): unetrt needs Python >= 3.10 and TensorRT 10 (JetPack 6.1 or newer); see docs/jetson.md"
  "$python" -c 'import sys; assert sys.version_info[:2] >= (3, 10)' \
    || fail "$python is older than 3.10; JetPack 6 ships 3.10, JetPack 7 3.12"
  trt_version=$("$python" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null) \
    || fail "JetPack's TensorRT Python bindings do not import: sudo apt install python3-libnvinfer"
  [ "${trt_version%%.*}" -ge 10 ] \
    || fail "TensorRT $trt_version found: unetrt needs TensorRT 10, which comes with JetPack 6.1 or newer (L4T R36.4); JetPack 6.0 has 8.6: upgrade JetPack (see docs/jetson.md)"
  export PATH="/usr/local/cuda/bin:$PATH" CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  command -v nvcc >/dev/null || fail "nvcc not found in /usr/local/cuda/bin: sudo apt install nvidia-jetpack (or cuda-nvcc)"
  # The CUDA kernels are built for this GPU: Thor (tegra264) is compute capability 11.0, Orin (tegra234) 8.7.
  if [ -z "${UNETRT_CUDA_ARCHS:-}" ]; then
    if tr '\0' '\n' 2>/dev/null <"$device_tree" | grep -qx 'nvidia,tegra264'; then
      UNETRT_CUDA_ARCHS=110
    else
      UNETRT_CUDA_ARCHS=87
    fi
  fi
  say "L4T R$l4t, TensorRT $trt_version, CUDA kernels for sm_$UNETRT_CUDA_ARCHS"
fi
"$python" -c 'import cv2' 2>/dev/null \
  || fail "the system OpenCV is missing: sudo apt install nvidia-opencv (JetPack's OpenCV, built with GStreamer)"

# A re-run with nothing changed (demo.sh runs this script every time) skips pip and the CUDA build: the inputs'
# hash is kept in the venv.
stamp="$venv/unetrt-jetson-setup.stamp"
state=$(echo "python=$("$python" -V 2>&1) cpu_only=$cpu_only tensorrt=${trt_version:-none} archs=${UNETRT_CUDA_ARCHS:-none}" \
  | bash scripts/install_state.sh scripts/setup_jetson.sh)
# What the install made must still be there (a later 'pip install -e .' without UNETRT_CUDA drops the kernels).
installed="import onnx; from unetrt import _tiling$([ "$cpu_only" -eq 1 ] || echo '; import pycuda.driver; assert _tiling.cuda_built')"

install_into_venv() {
  # --- the venv: system site packages (tensorrt, cv2, numpy 1.x) stay visible ------------------------------
  say "venv in $venv (with the system's TensorRT and OpenCV)"
  if [ -x "$venv/bin/python" ]; then
    # A venv made by setup_venv.sh (test.sh runs it) sees neither JetPack's TensorRT nor its OpenCV.
    grep -qs '^include-system-site-packages *= *true' "$venv/pyvenv.cfg" \
      || fail "$venv exists but was not made with --system-site-packages (scripts/setup_venv.sh or scripts/test.sh made it?), so it cannot see JetPack's TensorRT and OpenCV: remove it (rm -rf $venv) or set VENV=another-folder"
    "$venv/bin/python" -m pip --version >/dev/null 2>&1 \
      || fail "$venv has no pip (python3-venv was missing when it was made?): remove it (rm -rf $venv) and rerun"
  elif [ -e "$venv" ]; then
    # Not ours to remove: a venv whose python is gone (with the user's packages), or VENV naming a wrong folder.
    "$python" -m venv --system-site-packages "$venv" >>"$log" 2>&1 \
      || fail "could not make the venv $venv in what is already there (see $log): if it is a venv to replace," \
              "remove it (rm -rf $venv), else set VENV=another-folder; then rerun"
  else
    "$python" -m venv --system-site-packages "$venv" >>"$log" 2>&1 \
      || { rm -rf "$venv"; fail "could not make the venv $venv: sudo apt install python3-venv, then rerun"; }
  fi
  pip=("$venv/bin/python" -m pip install -q)
  constraints=build/setup_jetson.constraints
  printf 'numpy<2\nopencv-python<0\nopencv-python-headless<0\nopencv-contrib-python<0\n' >"$constraints"
  "${pip[@]}" --upgrade pip "setuptools>=64" wheel pybind11 >>"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; fail "pip could not install its build tools in $venv (no network?); see $log"; }
  # onnx reads the model to build its engine; onnxconverter-common makes the FP16 graph TensorRT 11 builds from
  # (it has no FP16 flag; JetPack 7 may bring it, or a later TensorRT be installed into this venv).
  "${pip[@]}" -c "$constraints" "numpy<2" "onnx>=1.16" "onnxconverter-common>=1.14" >>"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; fail "pip could not install onnx and onnxconverter-common; see $log"; }

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

  # --- unetrt with its CUDA kernels (Orin: sm_87, Thor: sm_110) ----------------------------------------------
  if [ "$cpu_only" -eq 1 ]; then
    cuda=0
  else
    cuda=1
  fi
  say "unetrt (UNETRT_CUDA=$cuda)"
  UNETRT_CUDA=$cuda UNETRT_CUDA_ARCHS=${UNETRT_CUDA_ARCHS:-} "${pip[@]}" -c "$constraints" --no-build-isolation \
    -e . >>"$log" 2>&1 || { tail -n 30 "$log" >&2; fail "pip install of unetrt failed; see $log"; }
  "$venv/bin/python" - "$python" <<'PY' || exit 1
import importlib.metadata as metadata
import os
import sys
from pathlib import Path

import numpy

system_python = sys.argv[1]
wheels = []
for dist in metadata.distributions():
    name = dist.metadata["Name"] or ""
    if not name.lower().startswith("opencv"):
        continue
    folder = Path(str(dist.locate_file(""))).resolve()
    # The venv's pip leaves a wheel outside the venv where it is ('Not uninstalling ... outside environment', exit 0:
    # pypa/pip issues 3352, 5176): a 'pip3 install opencv-python' of a Jetson tutorial, in ~/.local or /usr/local.
    if folder.is_relative_to(Path(sys.prefix).resolve()):
        remove = f"{sys.executable} -m pip uninstall {name}"
    else:
        sudo = "" if folder.stat().st_uid == os.geteuid() else "sudo "
        remove = f"{sudo}{system_python} -m pip uninstall {name}"
    wheels.append(f"{name} {dist.version} in {folder} (remove it: {remove})")
if wheels:
    sys.exit(f"error: OpenCV wheels shadow JetPack's OpenCV (built with GStreamer) in this venv: {'; '.join(wheels)}")
if int(numpy.__version__.split(".")[0]) >= 2:
    sys.exit(f"error: NumPy {numpy.__version__} in this venv: JetPack's cv2 and TensorRT need 1.x: pip install 'numpy<2'")
PY

}

if grep -qsx "state=$state" "$stamp" && "$venv/bin/python" -c "$installed" 2>/dev/null; then
  say "$venv is up to date"
else
  rm -f "$stamp"
  install_into_venv
  echo "state=$state" >"$stamp"
fi

# --- what a stream will use (and, on a GPU, its TensorRT engine built and cached now) -----------------------
if [ "$build_engine" -eq 1 ]; then
  say "building the camvid TensorRT engine once (minutes; cached for every later start)"
  "$venv/bin/python" -m unetrt.doctor --build
else
  "$venv/bin/python" -m unetrt.doctor
fi
say "done: source $venv/bin/activate; unet-stream csi://0 http://0.0.0.0:8080 --legend"
