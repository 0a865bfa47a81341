#!/usr/bin/env bash
# CI: the Jetson install (scripts/setup_jetson.sh) keeps the system OpenCV (the one built with GStreamer, which
# csi:// needs). Debian 12's python3-opencv (OpenCV 4.6, GStreamer: YES, built for NumPy 1.x and Python 3.11)
# stands in for JetPack's. Steps: scripts/setup_jetson.sh --cpu-only (its part that needs no GPU: the venv from
# the system Python with --system-site-packages, onnx and NumPy 1.x, unetrt without CUDA kernels, and the doctor's
# report of what a stream runs), then:
#   - a second run skips the install (nothing changed);
#   - the report names the backend and device a stream uses;
#   - cv2 is still the system one and still reports GStreamer: YES;
#   - unet-stream sample out.mp4 works;
#   - with NumPy 2 forced in, every command fails with one line naming the numpy<2 fix (then NumPy 1 is restored).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s python3-opencv python3-venv python3-dev >/dev/null 2>&1; then
  apt-get install -y -q python3-opencv python3-venv python3-dev >/dev/null
fi
venv=$PWD/build/jetson-venv
out=build/jetson-check
src=build/jetson-src
rm -rf "$venv" "$out"
mkdir -p "$out"
bash scripts/copy_checkout.sh "$src"  # the install builds unetrt._tiling in place, without CUDA kernels
# --- scripts/setup_jetson.sh, the part that needs no GPU (on a Jetson it also builds pycuda, the CUDA kernels
# and the TensorRT engine) ---
VENV="$venv" bash "$src/scripts/setup_jetson.sh" --cpu-only >"$out/setup.log" 2>&1 \
  || { tail -n 30 "$out/setup.log" >&2; echo "error: scripts/setup_jetson.sh --cpu-only failed" >&2; exit 1; }
cat "$out/setup.log"
grep -q "^unet-stream --model camvid runs on: onnxruntime .* cpu$" "$out/setup.log" \
  || { echo "error: the setup did not end with the backend and device a stream uses" >&2; exit 1; }
"$venv/bin/python" -c "import onnx" || { echo "error: the setup did not install onnx (engine builds need it)" >&2; exit 1; }
# A re-run with nothing changed (scripts/demo.sh on a Jetson runs the setup each time) skips pip and the build.
VENV="$venv" bash "$src/scripts/setup_jetson.sh" --cpu-only >"$out/setup-again.log" 2>&1 \
  || { tail -n 30 "$out/setup-again.log" >&2; echo "error: the second scripts/setup_jetson.sh --cpu-only failed" >&2; exit 1; }
grep -q "^setup_jetson: $venv is up to date$" "$out/setup-again.log" && ! grep -q "^setup_jetson: unetrt" "$out/setup-again.log" \
  || { cat "$out/setup-again.log" >&2; echo "error: the second setup did not skip the install" >&2; exit 1; }
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
