#!/usr/bin/env bash
# Create .venv (once) with CPU PyTorch, unetrt in strict editable mode and the given extras; a re-run with
# nothing changed skips pip (the inputs' hash and the installed extras are kept in .venv/unetrt-setup.stamp).
# Usage: scripts/setup_venv.sh [extras]   e.g. scripts/setup_venv.sh export,dev
# Each step prints one line ("[setup 2/5] ...") so a first run, which takes minutes, is never silent.
# OpenCV: the 'opencv' extra (opencv-python-headless) is added only when no cv2 imports, so a system OpenCV
# (JetPack's, with GStreamer; reached through a venv made with --system-site-packages) is kept.

# Run with sh (dash), 'set -o pipefail' below stops with a line that does not say bash runs this.
[ -n "${BASH_VERSION:-}" ] || { echo "error: $0 is a bash script: run it with bash $0" >&2; exit 2; }
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h|--help) awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' scripts/setup_venv.sh; exit 0 ;;
esac
[ $# -le 1 ] || {
  echo "error: scripts/setup_venv.sh takes one comma-separated list of extras (scripts/setup_venv.sh export,dev)," \
       "not $# arguments" >&2; exit 2; }
extras="${1:-export}"
# pip only warns, into its log, about an extra unetrt lacks: a misspelt one would end in '.venv is ready' without it.
known=$(sed -n '/^\[project.optional-dependencies\]/,/^\[/s/^\([A-Za-z0-9_-]*\) *=.*/\1/p' pyproject.toml)
for extra in ${extras//,/ }; do
  printf '%s\n' "$known" | grep -qxF -- "$extra" || {
    echo "error: unknown extra '$extra' (scripts/setup_venv.sh takes a comma-separated list of:" \
         "$(printf '%s\n' "$known" | paste -sd, - | sed 's/,/, /g'))" >&2; exit 2; }
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "error: unetrt needs Python 3.10 or newer (found $(python3 --version))" >&2; exit 2; }
steps=5
step() { echo "[setup $1/${steps}] $2"; }
[ ! -e .venv ] || [ -d .venv ] || {
  echo "error: .venv is a file, not a virtual environment: move it away (or rm .venv) and run this again" >&2; exit 2; }
# Its Python removed (an upgrade, a pyenv version uninstalled): 'python3 -m venv' stops on the link it left.
if [ -L .venv/bin/python ] && ! .venv/bin/python -V >/dev/null 2>&1; then
  echo "error: .venv/bin/python does not run (its Python, $(readlink -m .venv/bin/python), is gone?):" \
       "remove .venv (rm -rf .venv) and run this again" >&2; exit 2
fi
if [ -x .venv/bin/python ]; then
  step 1 "checking the existing .venv ($(.venv/bin/python -V 2>&1))"
else
  step 1 "creating .venv with $(python3 -V 2>&1)"
  python3 -m venv .venv
fi
# One made earlier by an older Python (python3.9 -m venv .venv) would fail only in pip, on 'requires a different Python'.
venv_python=$(.venv/bin/python -V 2>&1)
[[ "$venv_python" =~ ^Python\ 3\.([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -lt 10 ] && {
  echo "error: .venv was made with $venv_python, and unetrt needs Python 3.10 or newer: remove it (rm -rf .venv) and" \
       "run this again to make it with $(python3 -V 2>&1)" >&2; exit 2; }
# A venv whose making was cut short (Ctrl-C during its ensurepip, or python3-venv missing) has a python without pip.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  echo "  (.venv has no pip: its making was cut short; adding pip with ensurepip)"
  .venv/bin/python -m ensurepip --upgrade >/dev/null 2>&1 || {
    echo "error: .venv has no pip and ensurepip cannot add it (Debian and Ubuntu: sudo apt install python3-venv):" \
         "remove it (rm -rf .venv) and run this again" >&2; exit 1; }
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
# Offline (no network, PIP_NO_INDEX) pip's last line is 'No matching distribution found for wheel': say the way out.
offline_fix="pip finds no packages where it looks (no network?): connect, or point PIP_INDEX_URL or PIP_FIND_LINKS at an index or a folder of wheels, and run this again"
pip() {
  .venv/bin/python -m pip "$@" >>"$log" 2>&1 || {
    tail -n 40 "$log" >&2
    if grep -qE 'No matching distribution found|Could not find a version that satisfies' "$log"; then
      echo "error: pip $* failed: $offline_fix; see $log" >&2
    else
      echo "error: pip $* failed; see $log" >&2
    fi
    exit 1; }
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
