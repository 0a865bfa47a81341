#!/usr/bin/env bash
# Build unetrt._tiling and unetrt._tiling_emu once more with AddressSanitizer and UndefinedBehaviorSanitizer
# (into build/sanitize, beside the normal build) and run the native kernel tests against them: hypothesis cases,
# bad input and the emulated CUDA kernels. Any sanitizer report fails the run. CPU build only (UNETRT_CUDA=0).
# Usage: scripts/sanitize_native.sh [pytest args]     (needs .venv from scripts/setup_venv.sh with the dev extra)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
python=.venv/bin/python
[ -x "$python" ] || { echo "error: no .venv; run scripts/setup_venv.sh export,dev first" >&2; exit 2; }
out=build/sanitize
rm -rf "$out"
mkdir -p "$out"

# -g1: line tables for the stack traces, without the full debug info that slows the build; no recovery, so the
# first report fails the test that caused it.
sanitize="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -O1 -g1"
echo "building the sanitized modules into $out (log: $out/build.log)"
CFLAGS="$sanitize" CXXFLAGS="$sanitize" LDFLAGS="-fsanitize=address,undefined" UNETRT_CUDA=0 \
  "$python" setup.py -q build_ext --build-lib "$out/lib" --build-temp "$out/temp" >"$out/build.log" 2>&1 \
  || { tail -n 40 "$out/build.log" >&2; echo "error: the sanitized build failed" >&2; exit 1; }

# A pytest plugin that loads the sanitized modules as unetrt._tiling and unetrt._tiling_emu before anything
# imports unetrt (tests/conftest.py does), and names them in the report header.
cat >"$out/sanitized_modules.py" <<'PY'
"""Loads the sanitized native modules in place of the normal build (see scripts/sanitize_native.sh)."""

import importlib.util
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parent / "lib" / "unetrt"
for name in ("_tiling", "_tiling_emu"):
    path = next(LIB.glob(f"{name}.*.so"))
    spec = importlib.util.spec_from_file_location(f"unetrt.{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[f"unetrt.{name}"] = module


def pytest_report_header() -> str:
    from unetrt import _tiling, _tiling_emu

    for module in (_tiling, _tiling_emu):
        if not str(module.__file__).startswith(str(LIB)):
            raise RuntimeError(f"{module.__name__} comes from {module.__file__}, not the sanitized build")
    return f"sanitized native modules: {_tiling.__file__}, {_tiling_emu.__file__}"
PY

# The interpreter is not instrumented, so the ASan runtime is preloaded, with libstdc++ (ASan hooks
# __cxa_throw only when libstdc++ is there as it starts; python itself does not link it). CPython and numpy keep
# memory to the end by design, so leak detection is off.
libasan=$(g++ -print-file-name=libasan.so)
libstdcxx=$(g++ -print-file-name=libstdc++.so)
for lib in "$libasan" "$libstdcxx"; do
  [ -f "$lib" ] || { echo "error: $(basename "$lib") not found (g++ -print-file-name)" >&2; exit 1; }
done
# --capture=sys: sanitizer reports go to file descriptor 2 and must reach the log even when the process aborts.
echo "running tests/cpp_ext under ASan+UBSan"
status=0
LD_PRELOAD="$libasan $libstdcxx" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" PYTHONPATH="$out${PYTHONPATH:+:$PYTHONPATH}" \
  "$python" -m pytest -p sanitized_modules tests/cpp_ext -q -p no:cacheprovider --capture=sys "$@" || status=$?
echo "sanitizer run: exit $status, $(( $(date +%s) - start )) s"
exit "$status"
