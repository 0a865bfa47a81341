"""The one import root: engine/ is unetrt, export/ is unetrt.export, benchmarks/ is unetrt.benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import unetrt
import unetrt.benchmarks

ROOT = Path(__file__).resolve().parents[1]


def test_folders_map_onto_one_import_root() -> None:
    assert Path(unetrt.__file__).resolve().parent == ROOT / "engine"
    assert Path(unetrt.benchmarks.__file__).resolve().parent == ROOT / "benchmarks"


def test_export_package_maps_to_export_folder() -> None:
    import importlib.util

    spec = importlib.util.find_spec("unetrt.export")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).resolve().parent == ROOT / "export"


def test_bundled_model_and_clip_are_package_data() -> None:
    from unetrt.bundled import bundled_model_names, bundled_model_path, sample_clip

    assert "camvid" in bundled_model_names()
    for suffix in (".onnx", ".pt"):
        path = bundled_model_path("camvid", suffix)
        assert path.stat().st_size <= 10 * 1024 * 1024
    assert sample_clip().stat().st_size <= 5 * 1024 * 1024


def test_every_bundled_model_file_is_package_data_within_10_mb() -> None:
    # The TensorRT-layout INT8 file beside the others: a Jetson's pip install must carry what TensorRT builds from.
    import fnmatch
    import re

    from unetrt.bundled import MODELS_DIR, TENSORRT_INT8_SUFFIX

    setup = (ROOT / "setup.py").read_text()
    patterns = re.search(r'package_data=\{"unetrt": \[([^\]]*)\]', setup)
    assert patterns is not None, "setup.py names the package data of unetrt"
    globs = re.findall(r'"([^"]+)"', patterns.group(1))
    assert (MODELS_DIR / f"camvid{TENSORRT_INT8_SUFFIX}").is_file()
    for path in MODELS_DIR.iterdir():
        assert any(fnmatch.fnmatch(f"models/{path.name}", pattern) for pattern in globs), path.name
        assert path.stat().st_size <= 10 * 1024 * 1024, path.name


# tools/gpu_check_bundle.sh's pycuda and CUDA kernels, as measured on 2026-12-05 (docs/gpu-path.md).
GPU_CHECK_BUNDLE_BYTES = 5_492_785


def test_the_checkout_leaves_room_for_the_gpu_check_bundle() -> None:
    # A call to the GPU machine carries the checkout and the bundle, 64 MiB in all; a file more (another model
    # variant) must not find that out only when a GPU is lent.
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    tracked = sum(path.stat().st_size for path in files if path.is_file())
    assert tracked + GPU_CHECK_BUNDLE_BYTES <= 64 << 20, f"the checkout is {tracked} bytes"
