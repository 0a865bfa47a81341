#!/usr/bin/env bash
# Create .venv (once) with CPU PyTorch, unetrt in editable mode and the given extras.
# Usage: scripts/setup_venv.sh [extras]   e.g. scripts/setup_venv.sh export,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-export}"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "error: unetrt needs Python 3.10 or newer (found $(python3 --version))" >&2; exit 2; }
[ -x .venv/bin/python ] || python3 -m venv .venv
mkdir -p build
log=build/setup.log
echo "setting up .venv (extras: ${extras}; pip log: ${log})"
: > "$log"
pip() {
  .venv/bin/python -m pip "$@" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "error: pip $* failed; see $log" >&2; exit 1; }
}
pip install -q --upgrade pip "setuptools>=64" wheel
# torch is pinned to the CPU wheel before anything can ask for a loose 'torch' and pull a CUDA build.
pip install -q "torch==2.13.0"
pip install -q -e ".[${extras}]"
if [[ ",${extras}," == *",dev,"* ]]; then
  # The stubs pin tensorrt==10.13 and its CUDA bindings, which PyPI cannot serve here; mypy needs only the .pyi files.
  pip install -q --no-deps "tensorrt-stubs==10.13.0.35.1"
fi
