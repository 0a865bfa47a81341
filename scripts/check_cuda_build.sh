#!/usr/bin/env bash
# CI check of the CUDA build without a GPU: compile the kernels for Jetson Orin (sm_87) and Hopper (sm_90) with
# every warning an error (nvcc and host compiler), compile the CUDA-enabled bindings, and report each kernel's
# registers, barriers and shared memory from ptxas. Fails on any warning, and on any kernel using barriers or
# shared memory: the emulated CUDA tests (tests/cpp_ext/test_tiling_emulated.py) are exact only without them.
# Usage: scripts/check_cuda_build.sh            (nvcc from CUDA_HOME, PATH or /usr/local/cuda; python from .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
nvcc="${CUDA_HOME:+$CUDA_HOME/bin/}nvcc"
command -v "$nvcc" >/dev/null || nvcc=/usr/local/cuda/bin/nvcc
[ -x "$(command -v "$nvcc")" ] || { echo "error: nvcc not found; set CUDA_HOME or put nvcc on PATH" >&2; exit 2; }
python=.venv/bin/python
[ -x "$python" ] || python=python3
out=build/cuda_check
mkdir -p "$out"
echo "nvcc: $("$nvcc" --version | tail -n 1)"

# Kernels: one object per arch so that the two compile side by side on CI's 2 cores.
pids=()
for arch in 87 90; do
  "$nvcc" -c cpp_ext/tiling_cuda.cu -o "$out/tiling_cuda_sm$arch.o" -O3 -std=c++17 -Icpp_ext \
    -gencode="arch=compute_$arch,code=sm_$arch" --Werror all-warnings \
    -Xcompiler=-fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror -Xptxas -v >"$out/ptxas_sm$arch.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { status=1; echo "error: nvcc failed:" >&2; cat "$out/ptxas_sm$([ "$i" = 0 ] && echo 87 || echo 90).log" >&2; }
done
[ "$status" = 0 ] || exit 1

# The bindings as the CUDA build compiles them (UNETRT_WITH_CUDA), warnings as errors.
cuda_include="$(dirname "$(dirname "$(readlink -f "$(command -v "$nvcc")")")")/include"
[ -f "$cuda_include/cuda_runtime_api.h" ] || cuda_include=/usr/local/cuda/include
py_includes=$("$python" -c 'import pybind11, sysconfig; print(pybind11.get_include(), sysconfig.get_paths()["include"])')
include_flags=()
for dir in $py_includes; do include_flags+=("-I$dir"); done
g++ -std=c++17 -O1 -fsyntax-only -Wall -Wextra -Werror -DUNETRT_WITH_CUDA=1 -Icpp_ext "-I$cuda_include" \
  "${include_flags[@]}" cpp_ext/bindings.cpp

# Every kernel: registers, barriers, shared memory. ptxas prints the kernel name, then its figures.
report=$(for arch in 87 90; do
  awk -v arch="sm_$arch" '
    /Compiling entry function/ { match($0, /function \x27[^\x27]+\x27/); name = substr($0, RSTART + 10, RLENGTH - 11) }
    /Used [0-9]+ registers/ {
      regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
      bars = $0; sub(/.*used /, "", bars); sub(/ barriers.*/, "", bars)
      smem = 0; if ($0 ~ /bytes smem/) { smem = $0; sub(/ bytes smem.*/, "", smem); sub(/.*, /, "", smem) }
      print arch, regs, bars, smem, name
    }' "$out/ptxas_sm$arch.log"
done | c++filt)
echo "arch   regs barriers smem kernel"
echo "$report" | awk '{ printf "%-6s %4s %8s %4s ", $1, $2, $3, $4; $1 = $2 = $3 = $4 = ""; sub(/^ +/, ""); print }'
kernels=$(echo "$report" | grep -c . || true)  # grep -c exits 1 when it counts none; the check below says so
[ "$kernels" -ge 2 ] || { echo "error: ptxas reported no kernels" >&2; exit 1; }
if echo "$report" | awk '$3 != 0 || $4 != 0 { bad = 1 } END { exit !bad }'; then
  echo "error: a kernel uses barriers or shared memory; the emulated CUDA tests would no longer be exact" >&2
  exit 1
fi
echo "CUDA build check passed: $kernels kernel builds, 0 warnings, 0 barriers, no shared memory, $(( $(date +%s) - start )) s"
