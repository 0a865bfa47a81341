#!/usr/bin/env bash
# mypy over the whole unetrt package, TensorRT modules checked against tensorrt-stubs.
# The strict editable install (scripts/setup_venv.sh) gives mypy the package as build/__editable__.*/unetrt;
# only the stubs are staged, as a copy with their syntax errors patched.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
site=$($py -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stubs=build/typecheck-stubs
rm -rf "$stubs"
mkdir -p "$stubs"
if [ -d "$site/tensorrt_bindings" ]; then
  cp -r "$site/tensorrt" "$site/tensorrt_bindings" "$stubs/"
  # tensorrt-stubs 10.13.0.35.1 names parameters 'in' and puts a required one after defaults in add_scale_nd.
  sed -i -E 's/\(self(: [A-Za-z0-9]+)?, in: /(self\1, in_: /; s/, channel_axis: int\) -> IScaleLayer/, channel_axis: int = ...) -> IScaleLayer/' \
    "$stubs/tensorrt_bindings/tensorrt.pyi"
fi
MYPYPATH="$stubs" .venv/bin/mypy -p unetrt
