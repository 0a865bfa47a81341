#!/usr/bin/env bash
# Run scripts/check_gpu.sh on a GPU machine from a bundle made by tools/gpu_check_bundle.sh, with this checkout's
# sources (not pip-installed): the unetrt package is assembled from symlinks in a temporary folder, the bundle's
# extension modules beside them (built here with nvcc when they do not import), the bundle's site/ on PYTHONPATH.
# Writes RESULTS_DIR/check/ (every stage's log and summary.txt) and RESULTS_DIR/check.tgz of it.
# Usage: tools/gpu_check_from_bundle.sh BUNDLE_DIR RESULTS_DIR   (PYTHON: the interpreter, default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: tools/gpu_check_from_bundle.sh BUNDLE_DIR RESULTS_DIR" >&2; exit 2; }
bundle=$(cd "$1" && pwd) || { echo "error: no bundle at $1" >&2; exit 2; }
mkdir -p "$2/check" && results=$(cd "$2" && pwd) || { echo "error: cannot create $2" >&2; exit 2; }
python=${PYTHON:-python3}
repo=$(pwd)
export PATH=$PATH:/usr/local/cuda/bin
package=$(mktemp -d)/unetrt
frames=$(mktemp -d)
mkdir -p "$package"
for entry in engine/*; do
  case "$entry" in *.so) ;; *) ln -s "$repo/$entry" "$package/" ;; esac
done
ln -s "$repo/export" "$package/export"
ln -s "$repo/benchmarks" "$package/benchmarks"
cp "$bundle"/so/*.so "$package/"
export PYTHONPATH="$(dirname "$package"):$bundle/site${PYTHONPATH:+:$PYTHONPATH}"
{
  lscpu | grep -E "Model name|^CPU\(s\)"
  if ! "$python" -c "import unetrt._tiling as t; print('unetrt._tiling from the bundle: cuda_built', t.cuda_built)"; then
    echo "the bundle's extension does not import here: building it with this machine's nvcc"
    rm -f "$package"/*.so
    build=$(mktemp -d)
    UNETRT_CUDA=1 UNETRT_CUDA_ARCHS=${UNETRT_CUDA_ARCHS:-90} "$python" setup.py -q build_ext \
      --build-lib "$build/lib" --build-temp "$build/tmp" && cp "$build"/lib/unetrt/*.so "$package/"
  fi
  "$python" -c "import pycuda.driver as d; d.init(); print('pycuda', d.get_version(), d.Device(0).name())"
  # The benchmarks' frames: every 12th of the sample clip (CamVid sequence 0016E5, as val/), 8 scenes.
  "$python" -c "
import sys, cv2
capture = cv2.VideoCapture(sys.argv[1])
for index in range(96):
    ok, frame = capture.read()
    if not ok:
        break
    if index % 12 == 0:
        cv2.imwrite(f'{sys.argv[2]}/clip_{index:03d}.png', frame)
" "$repo/engine/samples/camvid_0016E5.mp4" "$frames" && echo "frames: $(ls "$frames" | wc -l) from the sample clip"
} >"$results/check/setup.log" 2>&1
cat "$results/check/setup.log"
[ -n "$(ls -A "$frames")" ] || frames=""  # no OpenCV to decode the clip: the benchmarks draw random frames
PYTHON=$python bash scripts/check_gpu.sh "$results/check" "$frames"
status=$?
tar czf "$results/check.tgz" -C "$results" check
exit "$status"
