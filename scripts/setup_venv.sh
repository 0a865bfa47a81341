#!/usr/bin/env bash
# Create .venv (once) with CPU PyTorch, unetrt in strict editable mode and the given extras; a re-run with
# nothing changed skips pip (the inputs' hash and the installed extras are kept in .venv/unetrt-setup.stamp).
# Usage: scripts/setup_venv.sh [extras]   e.g. scripts/setup_venv.sh export,dev
# Each step prints one line ("[setup 2/5] ...") so a first run, which takes minutes, is never silent.
# OpenCV: the 'opencv' extra (opencv-python-headless) is added only when no cv2 imports, so a system OpenCV
# (JetPack's, with GStreamer; reached through a venv made with --system-site-packages) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-export}"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "error: unetrt needs Python 3.10 or newer (found $(python3 --version))" >&2; exit 2; }
steps=5
step() { echo "[setup $1/${steps}] $2"; }
if [ -x .venv/bin/python ]; then
  step 1 "checking the existing .venv ($(.venv/bin/python -V 2>&1))"
else
  step 1 "creating .venv with $(python3 -V 2>&1)"
  python3 -m venv .venv
fi
# cv2 from a pip wheel counts as ours (keep the extra); a cv2 from the system is kept and no wheel is added.
pip_opencv=$(.venv/bin/python - <<'PY'
import importlib.metadata as metadata
import importlib.util
ours = any((d.metadata["Name"] or "").lower().startswith("opencv") for d in metadata.distributions())
print("yes" if ours or importlib.util.find_spec("cv2") is None else "no")
PY
)
[ "$pip_opencv" = yes ] && extras="${extras:+${extras},}opencv"
# Extras only accumulate: demo.sh (export) after test.sh (export,dev) must not reinstall.
stamp=.venv/unetrt-setup.stamp
installed=$([ -f "$stamp" ] && sed -n 's/^extras=//p' "$stamp" || true)
extras=$(printf '%s\n' ${extras//,/ } ${installed//,/ } | sort -u | paste -sd, -)
# What the install depends on (scripts/install_state.sh: the packaging, the package files the strict editable
# install links, the C++/CUDA sources, this script's own pins), with this venv's Python and CUDA setting.
state=$(echo "python=$(.venv/bin/python -V 2>&1) UNETRT_CUDA=${UNETRT_CUDA:-auto}" \
  | bash scripts/install_state.sh scripts/setup_venv.sh)
if [ "$extras" = "$installed" ] && grep -qx "state=${state}" "$stamp" 2>/dev/null \
   && .venv/bin/python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("unetrt") is None)' 2>/dev/null; then
  echo ".venv is up to date (extras: ${extras})"
  exit 0
fi
rm -f "$stamp"
mkdir -p build
log=build/setup.log
echo "setting up .venv (extras: ${extras}; pip's output goes to ${log}: follow it with tail -f ${log})"
: > "$log"
pip() {
  .venv/bin/python -m pip "$@" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "error: pip $* failed; see $log" >&2; exit 1; }
}
step 2 "upgrading pip, setuptools and wheel"
pip install -q --upgrade pip "setuptools>=64" wheel
step 3 "installing CPU-only PyTorch 2.13.0 (the largest download: minutes on a slow connection)"
# torch is pinned to the CPU wheel before anything can ask for a loose 'torch' and pull a CUDA build. PyPI's
# torch for Linux x86_64 is a CUDA build (GBs); the CPU one is 2.13.0+cpu, from a wheel pip already finds
# (find-links, a configured index) or else from PyTorch's CPU index.
cpu_torch="torch==2.13.0+cpu"
if ! .venv/bin/python -m pip install -q "$cpu_torch" >>"$log" 2>&1; then
  echo "  (no $cpu_torch wheel where pip looks: trying PyTorch's CPU index, https://download.pytorch.org/whl/cpu)"
  .venv/bin/python -m pip install -q --retries 1 "$cpu_torch" --extra-index-url https://download.pytorch.org/whl/cpu \
    >>"$log" 2>&1 || { tail -n 20 "$log" >&2
    echo "error: cannot install the CPU build of PyTorch ($cpu_torch) for $(.venv/bin/python -V 2>&1): install it" \
         "into .venv yourself (never PyPI's plain torch, a CUDA build) and run this again; see $log" >&2; exit 1; }
fi
# Strict mode links the package tree into build/__editable__.*, which mypy, pyright and Pylance follow.
step 4 "installing unetrt with ${extras} and compiling its C++ kernels (a few minutes the first time)"
pip install -q -e ".[${extras}]" --config-settings editable_mode=strict
if [[ ",${extras}," == *",dev,"* ]]; then
  step 5 "installing the TensorRT type stubs for mypy"
  # The stubs pin tensorrt==10.13 and its CUDA bindings, which PyPI cannot serve here; mypy needs only the .pyi files.
  pip install -q --no-deps "tensorrt-stubs==10.13.0.35.1"
else
  step 5 "no type stubs to install (only the dev extra needs them)"
fi
printf 'state=%s\nextras=%s\n' "$state" "$extras" > "$stamp"
echo ".venv is ready (extras: ${extras})"
