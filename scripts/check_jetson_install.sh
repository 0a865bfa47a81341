#!/usr/bin/env bash
# CI: the README's Jetson install keeps the system OpenCV (the one built with GStreamer, which csi:// needs).
# Debian 12's python3-opencv (OpenCV 4.6, GStreamer: YES, built for NumPy 1.x and Python 3.11) stands in for
# JetPack's. Steps: a venv from the system Python with --system-site-packages, the README's pip line
# (pycuda is left out: it needs a CUDA device to build against), then:
#   - cv2 is still the system one and still reports GStreamer: YES;
#   - unet-stream sample out.mp4 works;
#   - with NumPy 2 forced in, every command fails with one line naming the numpy<2 fix (then NumPy 1 is restored).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s python3-opencv python3-venv python3-dev >/dev/null 2>&1; then
  apt-get install -y -q python3-opencv python3-venv python3-dev >/dev/null
fi
venv=build/jetson-venv
out=build/jetson-check
rm -rf "$venv" "$out"
mkdir -p "$out"
# --- the README's Jetson steps (UNETRT_CUDA=0: this machine has no GPU; on a Jetson nvcc is found and used) ---
/usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=64" wheel pybind11 >"$out/pip.log" 2>&1
UNETRT_CUDA=0 "$venv/bin/python" -m pip install -q --no-build-isolation -e . "numpy<2" >>"$out/pip.log" 2>&1 \
  || { tail -n 30 "$out/pip.log" >&2; echo "error: pip install failed; see $out/pip.log" >&2; exit 1; }
# --- checks ---
"$venv/bin/python" - <<'PY'
import importlib.metadata as metadata
import cv2
import numpy

wheels = [d.metadata["Name"] for d in metadata.distributions() if (d.metadata["Name"] or "").lower().startswith("opencv")]
assert not wheels, f"pip installed an OpenCV wheel over the system one: {wheels}"
assert cv2.__file__.startswith("/usr/lib/python3/dist-packages/"), f"cv2 is not the system one: {cv2.__file__}"
gstreamer = [line.strip() for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GStreamer:")]
assert gstreamer and "YES" in gstreamer[0], f"system OpenCV lost GStreamer: {gstreamer}"
print(f"cv2 {cv2.__version__} from {cv2.__file__}: {gstreamer[0]}; numpy {numpy.__version__}")
PY
"$venv/bin/unet-stream" sample "$out/out.mp4" --max-frames 20 --headless --overwrite --stats "$out/stats.json"
"$venv/bin/python" -c "
import json, sys
summary = json.load(open('$out/stats.json'))
assert summary['written'] == 20, summary
print(f\"unet-stream sample: {summary['written']} frames written as {summary['output_codec']}\")"
# --- NumPy 2 next to a cv2 built for NumPy 1.x: one line, exit 2, the fix named ---
"$venv/bin/python" -m pip install -q "numpy>=2" >>"$out/pip.log" 2>&1
set +e
"$venv/bin/unet-stream" sample "$out/never.mp4" --max-frames 1 2>"$out/numpy2.err"
code=$?
set -e
"$venv/bin/python" -m pip install -q "numpy<2" >>"$out/pip.log" 2>&1
cat "$out/numpy2.err"
[ "$code" -eq 2 ] || { echo "error: expected exit code 2 with NumPy 2, got $code" >&2; exit 1; }
[ "$(wc -l <"$out/numpy2.err")" -eq 1 ] || { echo "error: expected one line with NumPy 2" >&2; exit 1; }
grep -q "pip install 'numpy<2'" "$out/numpy2.err" || { echo "error: the NumPy 2 message names no fix" >&2; exit 1; }
echo "jetson install check passed"
