#!/usr/bin/env bash
# mypy over the whole unetrt package, TensorRT modules checked against tensorrt-stubs.
# mypy cannot follow setuptools' editable finder, so the package is staged as a tree of
# symlinks under build/typecheck (engine/ as unetrt/, export/ as unetrt/export/, ...),
# next to a copy of the stubs with their syntax errors patched.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
site=$($py -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stage=build/typecheck
rm -rf "$stage"
mkdir -p "$stage/stubs" "$stage/src/unetrt"
if [ -d "$site/tensorrt_bindings" ]; then
  cp -r "$site/tensorrt" "$site/tensorrt_bindings" "$stage/stubs/"
  # tensorrt-stubs 10.13.0.35.1 names parameters 'in' and puts a required one after defaults in add_scale_nd.
  sed -i -E 's/\(self(: [A-Za-z0-9]+)?, in: /(self\1, in_: /; s/, channel_axis: int\) -> IScaleLayer/, channel_axis: int = ...) -> IScaleLayer/' \
    "$stage/stubs/tensorrt_bindings/tensorrt.pyi"
fi
ln -s "$PWD"/engine/*.py "$PWD/engine/py.typed" "$stage/src/unetrt/"
for sub in backends stream; do ln -s "$PWD/engine/$sub" "$stage/src/unetrt/$sub"; done
ln -s "$PWD/export" "$stage/src/unetrt/export"
ln -s "$PWD/benchmarks" "$stage/src/unetrt/benchmarks"
MYPYPATH="$stage/src:$stage/stubs" .venv/bin/mypy --follow-imports=silent -p unetrt
