#!/usr/bin/env bash
# The main job: the bundled camvid model segments the bundled clip as a camera stream, on the fastest path
# present, writing an annotated video and printing the summary. On a Jetson that is TensorRT: the venv comes
# from scripts/setup_jetson.sh (JetPack's TensorRT and OpenCV, pycuda, the CUDA kernels) and the first stream
# builds the engine and caches it. Elsewhere, a system-wide TensorRT (an NGC container) stays visible to the venv,
# where the stream uses it with pycuda (built once against the CUDA toolkit) and a GPU; else it is OpenVINO INT8 on
# the CPU (the openvino extra).
# UNETRT_TEGRA_RELEASE: the file that marks a Jetson (default /etc/nv_tegra_release; the tests point it elsewhere).
# Run with sh (dash), 'set -o pipefail' below stops with a line that does not say bash runs this.
[ -n "${BASH_VERSION:-}" ] || { echo "error: $0 is a bash script: run it with bash $0" >&2; exit 2; }
set -euo pipefail
cd "$(dirname "$0")/.."
# TensorRT's real bindings: tensorrt-stubs (the dev extra's type checking) is an importable namespace package too.
has_tensorrt='import tensorrt; tensorrt.__version__'
if [ -f "${UNETRT_TEGRA_RELEASE:-/etc/nv_tegra_release}" ]; then
  echo "[demo 1/2] a Jetson: setting up .venv with JetPack's TensorRT and OpenCV (scripts/setup_jetson.sh; the" \
       "first run builds pycuda and the CUDA kernels for minutes, later runs skip it)"
  bash scripts/setup_jetson.sh --no-engine
  engine=" (the first run builds its TensorRT engine: minutes, then cached)"
else
  if [ ! -e .venv ] && python3 -c "$has_tensorrt" 2>/dev/null; then
    echo "[demo 1/2] setting up .venv that sees this machine's TensorRT (the first run installs packages for" \
         "several minutes; later runs skip it)"
    python3 -m venv --system-site-packages .venv
  else
    echo "[demo 1/2] setting up .venv (the first run installs packages for several minutes; later runs skip it)"
  fi
  bash scripts/setup_venv.sh export,openvino
  engine=""
  mkdir -p out
  # TensorRT's GPU path needs pycuda, which pip builds from source against the CUDA toolkit: tried once (a failed
  # build is remembered in the venv, so later runs start at once on the path they have).
  if .venv/bin/python -c "$has_tensorrt" 2>/dev/null && ! .venv/bin/python -c 'import pycuda.driver' 2>/dev/null \
     && [ ! -e .venv/unetrt-pycuda.failed ]; then
    nvcc="${CUDA_HOME:+$CUDA_HOME/bin/nvcc}"
    [ -n "$nvcc" ] || nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
    if [ ! -x "$nvcc" ]; then
      echo "[demo 1/2] TensorRT is here but pycuda is not, and there is no CUDA toolkit (nvcc) to build it: the" \
           "stream runs without TensorRT (install the toolkit, or set CUDA_HOME to it, and run again)"
    else
      cuda_root="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"  # nvcc may be a link in /usr/local/bin
      echo "[demo 1/2] building pycuda against $cuda_root for TensorRT's GPU path (a few minutes, once; log in" \
           "out/pycuda-build.log)"
      if ! CUDA_ROOT="$cuda_root" .venv/bin/python -m pip install "pycuda>=2024.1" >out/pycuda-build.log 2>&1; then
        touch .venv/unetrt-pycuda.failed
        echo "[demo 1/2] pycuda did not build (out/pycuda-build.log; it needs python3-dev): the stream runs" \
             "without TensorRT; fix that and delete .venv/unetrt-pycuda.failed to try again"
      fi
    fi
  fi
fi
mkdir -p out
echo "[demo 2/2] segmenting the bundled CamVid clip with the bundled camvid model into out/camvid_annotated.mp4$engine"
exec .venv/bin/unet-stream sample out/camvid_annotated.mp4 --model camvid --overwrite "$@"
