#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one run, for a machine that has one (CI has none):
#   1. the kernel tests (the CUDA kernels bit for bit against the CPU kernels) and the GPU tests (pytest -m cuda:
#      the GPU-resident frame path with real pycuda and the torch backend on CUDA against the host path);
#   2. compute-sanitizer (memcheck, initcheck, racecheck, synccheck) over the kernel tests and the frame path;
#   3. GPU benchmarks: unet-bench end to end and bare on the bundled camvid checkpoint, the tiling kernels, and the
#      main job (the bundled clip as a camera stream) on the GPU path.
# Every stage runs even when an earlier one fails; each writes OUT_DIR/NAME.log and a line to OUT_DIR/summary.txt.
# Needs: unetrt importable with the CUDA build of unetrt._tiling, pycuda, a CUDA build of torch, pytest, CuPy or
# torch for the kernel tests' device arrays.
# Usage: scripts/check_gpu.sh OUT_DIR [FRAMES_DIR]   (PYTHON selects the interpreter; default .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/check_gpu.sh OUT_DIR [FRAMES_DIR]" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd) || { echo "error: cannot create $1" >&2; exit 2; }
frames=${2:-}
python=${PYTHON:-.venv/bin/python}
[ -x "$(command -v "$python")" ] || { echo "error: no python at $python; set PYTHON" >&2; exit 2; }
export PYTHONUNBUFFERED=1
failed=0

# stage NAME SECONDS COMMAND...: run with a time limit, log, and record ok/FAILED with the wall time.
stage() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name: $*" | tee "$out/$name.log"
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >>"$out/$name.log" 2>&1
  rc=$?
  local verdict=ok
  [ "$rc" = 0 ] || { verdict="FAILED (exit $rc$([ "$rc" = 124 ] && echo ", over ${limit} s"))"; failed=1; }
  printf '%-28s %-32s %4d s\n' "$name" "$verdict" "$(($(date +%s) - start))" | tee -a "$out/summary.txt"
  tail -n 3 "$out/$name.log" | grep -v "^== $name:"
}

unet() {  # a unetrt command by name, without its console script (the checkout may not be pip-installed)
  local command=${1//-/_}
  shift
  "$python" -c "import sys; from unetrt.commands import $command; sys.exit($command())" "$@"
}

sanitize() {  # sanitize TOOL PYTEST_ARGS...: pytest under compute-sanitizer; any error report fails the stage
  local tool=$1
  shift
  compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 20 --target-processes all \
    "$python" -m pytest -q -p no:cacheprovider "$@"
}

export python
export -f unet sanitize

stage environment 60 bash -c "nvidia-smi -L && nvidia-smi --query-gpu=driver_version,clocks.sm,clocks.mem \
  --format=csv && \"$python\" -c 'import torch, pycuda, numpy, unetrt._tiling as t; \
  print(\"torch\", torch.__version__, torch.cuda.get_device_name()); print(\"pycuda\", pycuda.VERSION_TEXT); \
  print(\"cuda_built\", t.cuda_built, \"devices\", t.cuda_device_count()); assert t.cuda_built and t.cuda_device_count()'"
stage kernel_tests 120 "$python" -m pytest -q -rs -p no:cacheprovider tests/cpp_ext
stage gpu_tests 240 "$python" -m pytest -q -rs -p no:cacheprovider -m cuda tests/engine/test_gpu_frame_path.py \
  tests/engine/backends/test_tensorrt_backend.py tests/benchmarks/test_bench_cli.py
kernel_tests=(tests/cpp_ext/test_tiling_kernels_cuda.py)
stage memcheck_kernels 150 sanitize memcheck "${kernel_tests[@]}"

model=engine/models/camvid.pt
frames_flag=()
[ -n "$frames" ] && frames_flag=(--frames "$frames")
stage bench_end_to_end 150 unet unet-bench --model "$model" --backend torch --device cuda --end-to-end \
  --size 480x360 --batch-size 1,4 --warmup 10 --iterations 50 --trials 5 "${frames_flag[@]}" \
  -o "$out/bench_gpu_camvid_end-to-end.json" --markdown "$out/bench_gpu_camvid_end-to-end.md"
stage bench_tiling 90 "$python" -m unetrt.benchmarks.bench_tiling --trials 5 --results-dir "$out"
stage main_job 90 unet unet-stream sample "$out/camvid_annotated.mp4" --model "$model" --device cuda --overwrite
rm -f "$out/camvid_annotated.mp4"
stage memcheck_frame_path 150 sanitize memcheck tests/engine/test_gpu_frame_path.py -k "whole or tiled or threads"
stage bench_network 90 unet unet-bench --model "$model" --backend torch --device cuda --no-data-transfers \
  --size 480x360 --batch-size 1,4 --warmup 10 --iterations 50 --trials 5 \
  -o "$out/bench_gpu_camvid_network.json" --markdown "$out/bench_gpu_camvid_network.md"
for tool in initcheck racecheck synccheck; do
  stage "${tool}_kernels" 90 sanitize "$tool" "${kernel_tests[@]}"
done

echo "== summary"
cat "$out/summary.txt"
exit "$failed"
