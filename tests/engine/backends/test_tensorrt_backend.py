"""TensorRT backend: what it checks without TensorRT, and inference against ONNX Runtime where a GPU exists."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import requires_tensorrt_gpu, tiny_info

from unetrt.backends import open_backend
from unetrt.backends.tensorrt import (
    MISSING_TENSORRT,
    TensorRTBackend,
    _cuda_array_info,
    parse_device,
    require_tensorrt,
    tensorrt_available,
    tensorrt_major,
)
from unetrt.plan_metadata import GpuIdentity, PlanMetadata, ShapeProfile, write_plan_metadata

requires_gpu = requires_tensorrt_gpu


def write_fake_plan(folder: Path) -> Path:
    plan = folder / "unet.plan"
    plan.write_bytes(b"not an engine")
    write_plan_metadata(plan, PlanMetadata(
        tensorrt_version="10.3.0", gpu=GpuIdentity("Orin", (8, 7)), input_name="image", output_name="logits",
        input_dtype="float32", output_dtype="float32",
        profile=ShapeProfile((1, 3, 4, 4), (1, 3, 64, 64), (2, 3, 64, 64)), precision="fp16",
        strongly_typed=False, source="tiny.onnx", info=tiny_info(),
    ))
    return plan


@pytest.mark.parametrize("device, index", [("auto", 0), ("cuda", 0), ("cuda:3", 3)])
def test_parse_device(device: str, index: int) -> None:
    assert parse_device(device) == index


@pytest.mark.parametrize("device, message", [("cpu", "GPU only"), ("gpu", "'auto', 'cuda' or 'cuda:N'"),
                                             ("cuda:x", "cuda:N")])
def test_parse_device_rejects(device: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_device(device)


def test_tensorrt_major() -> None:
    assert tensorrt_major("10.3.0") == 10 and tensorrt_major("11.4.0.106") == 11
    with pytest.raises(ValueError, match="TensorRT version"):
        tensorrt_major("unknown")


@pytest.mark.parametrize("missing", [None, types.ModuleType("tensorrt")], ids=["not-installed", "stubs-only"])
def test_require_tensorrt_explains_install(missing: types.ModuleType | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", missing)
    assert not tensorrt_available()
    with pytest.raises(ImportError) as caught:
        require_tensorrt()
    assert str(caught.value) == MISSING_TENSORRT and "\n" not in MISSING_TENSORRT


def test_missing_plan(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TensorRTBackend(tmp_path / "none.plan")


def test_missing_metadata_says_how_to_rebuild(tmp_path: Path) -> None:
    plan = tmp_path / "unet.plan"
    plan.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"unet.plan.json.*unet-build MODEL.onnx -o"):
        TensorRTBackend(plan)


def test_cpu_device_is_refused_through_open_backend(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="GPU only"):
        open_backend(write_fake_plan(tmp_path), device="cpu")


def test_without_tensorrt_the_backend_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError, match="JetPack"):
        open_backend(write_fake_plan(tmp_path))


class FakeDeviceArray:
    def __init__(self, shape: tuple[int, ...], typestr: str = "<f4", strides: tuple[int, ...] | None = None,
                 read_only: bool = False, stream: int | None = None) -> None:
        self.__cuda_array_interface__: dict[str, Any] = {
            "shape": shape, "typestr": typestr, "strides": strides, "data": (0xD000, read_only), "version": 3,
            "stream": stream,
        }


def test_cuda_array_interface_is_read() -> None:
    pointer, shape, dtype, stream = _cuda_array_info(FakeDeviceArray((2, 3, 8, 8), stream=7), "images")
    assert (pointer, shape, dtype, stream) == (0xD000, (2, 3, 8, 8), np.dtype(np.float32), 7)
    contiguous = FakeDeviceArray((2, 3, 8, 8), strides=(3 * 64 * 4, 64 * 4, 8 * 4, 4))
    assert _cuda_array_info(contiguous, "images")[1] == (2, 3, 8, 8)


def test_cuda_array_interface_errors() -> None:
    with pytest.raises(ValueError, match="__cuda_array_interface__"):
        _cuda_array_info(np.zeros((1, 3, 8, 8), np.float32), "images")
    transposed = FakeDeviceArray((2, 3, 8, 8), strides=(4, 8, 24, 192))
    with pytest.raises(ValueError, match="C-contiguous"):
        _cuda_array_info(transposed, "images")
    with pytest.raises(ValueError, match="read-only"):
        _cuda_array_info(FakeDeviceArray((2, 3, 8, 8), read_only=True), "out")


# --- with TensorRT and a GPU --------------------------------------------------------------------------------

PROFILE = {"min_shape": (1, 3, 16, 16), "opt_shape": (1, 3, 64, 64), "max_shape": (2, 3, 96, 96)}


@pytest.fixture(scope="module")
def tiny_plan(tiny_model_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unetrt.export.tensorrt import BuildOptions, build_engine

    plan = tmp_path_factory.mktemp("plan") / "tiny.plan"
    build_engine(tiny_model_files["onnx"], plan, BuildOptions(progress=False, opt_level=1, **PROFILE))
    return plan


def _reference(tiny_model_files: dict[str, Path], batch: np.ndarray) -> np.ndarray:
    from unetrt.backends.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(tiny_model_files["onnx"], device="cpu") as ort_backend:
        return ort_backend.infer(batch)


@pytest.mark.tensorrt
@requires_gpu
def test_infer_matches_onnxruntime_and_graph_replay(tiny_plan: Path, tiny_model_files: dict[str, Path]) -> None:
    rng = np.random.default_rng(0)
    first = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    second = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    with open_backend(tiny_plan) as backend:
        assert backend.name == "tensorrt" and backend.info == tiny_info()
        assert backend.max_batch == 2 and backend.max_input_hw == (96, 96)
        # runs 1 (warm-up), 2 (capture) and 3 (replay) of one shape must all compute the current input
        for batch in (first, second, first, second):
            np.testing.assert_allclose(backend.infer(batch), _reference(tiny_model_files, batch),
                                       atol=2e-3, rtol=1e-3)
        other = rng.standard_normal((1, 3, 32, 96)).astype(np.float32)
        np.testing.assert_allclose(backend.infer(other), _reference(tiny_model_files, other), atol=2e-3, rtol=1e-3)


@pytest.mark.tensorrt
@requires_gpu
def test_shape_outside_profile_is_refused(tiny_plan: Path) -> None:
    with TensorRTBackend(tiny_plan) as backend:
        with pytest.raises(ValueError, match=r"outside the engine's optimisation profile.*--max-shape 2x3x128x96"):
            backend.infer(np.zeros((1, 3, 128, 64), np.float32))
        with pytest.raises(ValueError, match="outside"):
            backend.infer(np.zeros((3, 3, 64, 64), np.float32))


@pytest.mark.tensorrt
@requires_gpu
def test_close_is_idempotent_and_final(tiny_plan: Path) -> None:
    backend = TensorRTBackend(tiny_plan, cuda_graph=False)
    backend.close()
    backend.close()
    with pytest.raises(ValueError, match="closed"):
        backend.infer(np.zeros((1, 3, 64, 64), np.float32))


@pytest.mark.tensorrt
@requires_gpu
def test_infer_device_with_gpuarray(tiny_plan: Path, tiny_model_files: dict[str, Path]) -> None:
    import pycuda.driver as cuda
    import pycuda.gpuarray as gpuarray

    batch = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    reference = _reference(tiny_model_files, batch)
    context = cuda.Device(0).make_context()
    try:
        # A caller's own pycuda context is adopted, so its device arrays are valid inside the backend.
        with TensorRTBackend(tiny_plan) as backend:
            images = gpuarray.to_gpu(batch)
            np.testing.assert_allclose(backend.infer_device(images), reference, atol=2e-3, rtol=1e-3)
            out = gpuarray.empty(reference.shape, np.float32)
            assert backend.infer_device(images, out=out) is out
            np.testing.assert_allclose(out.get(), reference, atol=2e-3, rtol=1e-3)
            with pytest.raises(ValueError, match="dtype"):
                backend.infer_device(gpuarray.to_gpu(batch.astype(np.float64)))
            # the backend's own buffers are bound again afterwards
            np.testing.assert_allclose(backend.infer(batch), reference, atol=2e-3, rtol=1e-3)
    finally:
        context.pop()
        context.detach()


@pytest.mark.tensorrt
@requires_gpu
def test_plan_from_another_tensorrt_is_refused_before_loading(tiny_plan: Path, tmp_path: Path) -> None:
    import json

    from unetrt.plan_metadata import PlanCompatibilityError, metadata_path

    copy = tmp_path / "old.plan"
    copy.write_bytes(tiny_plan.read_bytes())
    data = json.loads(metadata_path(tiny_plan).read_text())
    data["tensorrt_version"] = "8.6.1"
    metadata_path(copy).write_text(json.dumps(data))
    with pytest.raises(PlanCompatibilityError, match=r"TensorRT 8.6.1 built it.*unet-build"):
        TensorRTBackend(copy)


@pytest.mark.tensorrt
@pytest.mark.cuda
@requires_gpu
@pytest.mark.parametrize("shape", [(64, 64, 3), (150, 130, 3)], ids=["whole", "tiled"])
def test_gpu_resident_path_matches_the_host_path(tiny_plan: Path, shape: tuple[int, int, int]) -> None:
    """Segmenter on a plan runs the CudaDevice path (graph captured on the second call, replayed on the third)
    and gives the host path's masks and probabilities on the same engine."""
    from unetrt import _tiling
    from unetrt.cuda_device import CudaDevice
    from unetrt.segmenter import Segmenter

    if not (_tiling.cuda_built and _tiling.cuda_device_count() > 0):
        pytest.skip("unetrt._tiling was built without CUDA")
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3)]
    with Segmenter(tiny_plan, probabilities=True) as gpu, \
            Segmenter(tiny_plan, probabilities=True, device_path="host") as host:
        assert isinstance(gpu.device, CudaDevice)
        for frame in frames:
            want, have = host.segment(frame), gpu.segment(frame)
            assert (want.mask == have.mask).mean() >= 0.999
            assert np.abs(want.probabilities - have.probabilities).max() < 1e-4
