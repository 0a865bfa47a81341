"""TensorRT backend: what it checks without TensorRT, and inference against ONNX Runtime where a GPU exists."""

from __future__ import annotations

import re
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import requires_tensorrt_gpu, tiny_info
from fakes.cuda import ArrayOnStream, FakeGpu, capturing_on_another_thread, install_fake_gpu
from fakes.tensorrt import FakeExecutionContext, computed_in_fp16, install_fake_tensorrt, write_plan_from_onnx

from unetrt.backends import open_backend
from unetrt.backends.tensorrt import (
    MISSING_TENSORRT,
    EngineResourceError,
    TensorRTBackend,
    parse_device,
    require_tensorrt,
    tensorrt_available,
    tensorrt_major,
)
from unetrt.cuda import DeviceArray, read_cuda_array
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
    array, stream = read_cuda_array(FakeDeviceArray((2, 3, 8, 8), stream=7), "images")
    assert (array.ptr, array.shape, array.dtype, stream) == (0xD000, (2, 3, 8, 8), np.dtype(np.float32), 7)
    contiguous = FakeDeviceArray((2, 3, 8, 8), strides=(3 * 64 * 4, 64 * 4, 8 * 4, 4))
    assert read_cuda_array(contiguous, "images")[0].shape == (2, 3, 8, 8)


def test_cuda_array_interface_errors() -> None:
    with pytest.raises(ValueError, match="__cuda_array_interface__"):
        read_cuda_array(np.zeros((1, 3, 8, 8), np.float32), "images")
    transposed = FakeDeviceArray((2, 3, 8, 8), strides=(4, 8, 24, 192))
    with pytest.raises(ValueError, match="C-contiguous"):
        read_cuda_array(transposed, "images")
    with pytest.raises(ValueError, match="read-only"):
        read_cuda_array(FakeDeviceArray((2, 3, 8, 8), read_only=True), "out", writable=True)


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
        # A caller's own context is never adopted: the backend works in the primary context, so arrays made in
        # the caller's context are copied into primary-context arrays first.
        primary = cuda.Device(0).retain_primary_context()
        primary.push()
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
        cuda.Context.pop()
        primary.detach()
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


# --- on the CPU, against fakes of TensorRT, pycuda and the CUDA driver that keep the libraries' rules ------------


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path],
             tmp_path: Path) -> tuple[FakeGpu, Path]:
    """A fake Orin with fake TensorRT 10.3 and a fake FP32 plan of the tiny model (max batch 4, up to 96 x 96): its
    answers are ONNX Runtime's FP32 ones to rounding, so a test of what reaches the engine and comes back (graphs,
    streams, buffers) compares them tightly; an FP16 plan computes in FP16 (the fake's [FP16] rule)."""
    gpu = install_fake_gpu(monkeypatch)
    install_fake_tensorrt(monkeypatch, gpu)
    return gpu, write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "tiny.plan", gpu, precision="fp32")


def _onnx(tiny_model_files: dict[str, Path], batch: np.ndarray) -> np.ndarray:
    from unetrt.backends.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(tiny_model_files["onnx"], device="cpu") as ort_backend:
        return ort_backend.infer(batch)


@pytest.mark.gpu_contract
def test_fake_infer_matches_onnxruntime_through_a_replayed_graph(
        fake_trt: tuple[FakeGpu, Path], tiny_model_files: dict[str, Path]) -> None:
    gpu, plan = fake_trt
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((2, 3, 64, 64)).astype(np.float32) for _ in range(2)]
    with TensorRTBackend(plan) as backend:
        assert backend.device == "cuda:0 (Orin (fake))" and backend.max_batch == 4
        for batch in (*batches, *batches):
            np.testing.assert_allclose(backend.infer(batch), _onnx(tiny_model_files, batch), atol=1e-5)
        assert ("graph", 1) in gpu.log  # runs 3 and 4 of the shape replayed the captured enqueue
        other = rng.standard_normal((1, 3, 32, 96)).astype(np.float32)
        np.testing.assert_allclose(backend.infer(other), _onnx(tiny_model_files, other), atol=1e-5)
    assert gpu.driver_stack() == [] and gpu.live("device") == 0 and gpu.live("pinned") == 0


@pytest.mark.gpu_contract
def test_fake_graph_is_dropped_when_infer_device_changes_the_shape(
        fake_trt: tuple[FakeGpu, Path], tiny_model_files: dict[str, Path]) -> None:
    """infer_device runs on the same execution context as infer: its shape change must drop infer's graph, or the
    graph would replay after the context ran another shape (the fake refuses that, as the graph is stale)."""
    import pycuda.driver as cuda

    from unetrt.cuda import DeviceArray

    gpu, plan = fake_trt
    batch = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    other = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(plan) as backend:
        for _ in range(3):
            backend.infer(batch)
        with backend.device_session():
            memory = cuda.mem_alloc(other.nbytes)
            gpu.bytes_at(int(memory), other.nbytes)[:] = other.reshape(-1).view(np.uint8)
        np.testing.assert_allclose(backend.infer_device(DeviceArray(int(memory), other.shape, other.dtype)),
                                   _onnx(tiny_model_files, other), atol=1e-5)
        np.testing.assert_allclose(backend.infer(batch), _onnx(tiny_model_files, batch), atol=1e-5)
        with backend.device_session():
            memory.free()


@pytest.mark.gpu_contract
def test_fake_unaligned_device_array_is_refused_not_run_on_stale_buffers(fake_trt: tuple[FakeGpu, Path]) -> None:
    """Finding 5: set_tensor_address refuses an address that is not 256-byte aligned; the backend says so."""
    import pycuda.driver as cuda

    from unetrt.cuda import DeviceArray

    _gpu, plan = fake_trt
    with TensorRTBackend(plan) as backend:
        with backend.device_session():
            memory = cuda.mem_alloc(4 + 3 * 32 * 32 * 4)
        view = DeviceArray(int(memory) + 4, (1, 3, 32, 32), np.dtype(np.float32))
        with pytest.raises(ValueError, match="256-byte aligned"):
            backend.infer_device(view)
        # the backend's own buffers are bound again
        assert backend.infer(np.zeros((1, 3, 32, 32), np.float32)).shape[0] == 1
        with backend.device_session():
            memory.free()


@pytest.mark.gpu_contract
def test_fake_foreign_context_is_not_adopted(fake_trt: tuple[FakeGpu, Path]) -> None:
    """Finding 12: a pycuda.autoinit-style context current on the thread is left alone; the backend allocates in
    the primary context and leaves the thread's context stack as it found it."""
    import pycuda.driver as cuda

    gpu, plan = fake_trt
    cuda.init()  # as pycuda.autoinit does first
    own = cuda.Device(0).make_context()
    try:
        stack = list(gpu.driver_stack())
        before = gpu.live("device")
        with TensorRTBackend(plan) as backend:
            ours = [ptr for ptr, (_, context, kind) in gpu._blocks.items() if kind == "device"][before:]
            assert ours and all(gpu.context_of(ptr) is gpu.primary(0) for ptr in ours)
            backend.infer(np.zeros((1, 3, 32, 32), np.float32))
        assert gpu.driver_stack() == stack
    finally:
        own.detach()


@pytest.mark.gpu_contract
def test_fake_device_ordinal_is_used(monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path],
                                     tmp_path: Path) -> None:
    gpu = install_fake_gpu(monkeypatch, FakeGpu(count=2))
    install_fake_tensorrt(monkeypatch, gpu)
    plan = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "tiny.plan", gpu)
    with TensorRTBackend(plan, device="cuda:1") as backend:
        assert backend.device.startswith("cuda:1")
        assert gpu.primary(1).retains == 1 and gpu.primary(0).retains == 0
    assert gpu.primary(1).retains == 0


@pytest.mark.gpu_contract
@pytest.mark.parametrize("kept", [10, -1000], ids=["cut-in-its-header", "cut-in-its-network"])
def test_fake_corrupt_plan_is_refused_with_the_rebuild_command(kept: int, fake_trt: tuple[FakeGpu, Path]) -> None:
    """A plan cut short anywhere (a copy that stopped): TensorRT's runtime returns None. The fake took one cut in
    its network for a plan, and ONNX Runtime's protobuf error came out of unet-bench as a traceback."""
    gpu, plan = fake_trt
    plan.write_bytes(plan.read_bytes()[:kept])
    with pytest.raises(ValueError, match=r"could not deserialise.*unet-build"):
        TensorRTBackend(plan)
    assert gpu.driver_stack() == [] and gpu.primary(0).retains == 0


@pytest.mark.gpu_contract
def test_fake_runtime_refuses_plans_of_another_version_or_device(fake_trt: tuple[FakeGpu, Path],
                                                                  tiny_model_files: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    import tensorrt as trt

    gpu, plan = fake_trt
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    assert runtime.deserialize_cuda_engine(plan.read_bytes()) is not None
    older = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "old.plan", gpu, version="8.6.1")
    assert runtime.deserialize_cuda_engine(older.read_bytes()) is None
    elsewhere = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "x86.plan",
                                FakeGpu(name="NVIDIA H100", compute_capability=(9, 0)))
    assert runtime.deserialize_cuda_engine(elsewhere.read_bytes()) is None


@pytest.mark.gpu_contract
def test_fake_plan_from_another_tensorrt_is_refused_before_loading(fake_trt: tuple[FakeGpu, Path],
                                                                   tiny_model_files: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    """A plan built before a JetPack upgrade: the message names both TensorRT versions and the rebuild, where
    TensorRT itself only returns None."""
    from unetrt.plan_metadata import PlanCompatibilityError

    gpu, _ = fake_trt
    older = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "old.plan", gpu, version="10.0.1")
    with pytest.raises(PlanCompatibilityError,
                       match=r"TensorRT 10\.0\.1 built it, this machine has TensorRT 10\.3\.0.*unet-build"):
        TensorRTBackend(older)
    assert gpu.driver_stack() == [] and gpu.primary(0).retains == 0


@pytest.mark.gpu_contract
def test_fake_fp16_input_plan_takes_half_input(monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path],
                                               tmp_path: Path) -> None:
    import onnxruntime as ort

    gpu = install_fake_gpu(monkeypatch)
    install_fake_tensorrt(monkeypatch, gpu)
    plan = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "half.plan", gpu, input_dtype="float16")
    batch = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(plan) as backend:
        assert backend.input_dtype == np.float16
        # The engine's FP16 layers (the fake's [FP16] rule) on the batch as half: what a float32 batch written into
        # the half binding unconverted would not give.
        fp16 = ort.InferenceSession(computed_in_fp16(tiny_model_files["onnx"].read_bytes(), True),
                                    providers=["CPUExecutionProvider"])
        (expected,) = fp16.run(None, {fp16.get_inputs()[0].name: batch.astype(np.float16).astype(np.float32)})
        np.testing.assert_allclose(backend.infer(batch), expected, atol=1e-5)


@pytest.mark.gpu_contract
def test_fake_without_pycuda_the_backend_says_how_to_install(fake_trt: tuple[FakeGpu, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _, plan = fake_trt
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(ImportError, match="pip install pycuda"):
        TensorRTBackend(plan)


@pytest.mark.gpu_contract
def test_fake_close_on_another_thread_releases_through_the_driver(fake_trt: tuple[FakeGpu, Path]) -> None:
    """pycuda releases a retained context only on the thread that retained it; a backend closed elsewhere (a
    stream's worker) releases it through the driver and leaves that thread's context stack empty."""
    import threading

    gpu, plan = fake_trt
    backend = TensorRTBackend(plan)
    assert gpu.primary(0).retains == 1
    stacks: list[int] = []

    def close() -> None:
        backend.close()
        stacks.append(len(gpu.driver_stack()))

    worker = threading.Thread(target=close)
    worker.start()
    worker.join()
    assert stacks == [0] and gpu.primary(0).retains == 0 and gpu.driver_stack() == []


@pytest.mark.gpu_contract
def test_graph_cache_warms_up_captures_replays_and_falls_back_once() -> None:
    """The one graph policy, on its own: run 1 plain, run 2 captured and replayed, run 3 replayed; a new key starts
    over; a capture that fails warns once and that key runs plainly from then on."""
    import warnings

    from unetrt.cuda import CAPTURE_ATTEMPTS, GraphCache

    events: list[str] = []

    class Recorded:
        def __init__(self, key: str) -> None:
            self.key = key

        def launch(self, stream_handle: int) -> None:
            events.append(f"replay {self.key}")

        def destroy(self) -> None:
            events.append(f"destroy {self.key}")

    current = {"key": "a", "refuse": False}

    def capture(enqueue: Any) -> Recorded | None:
        return None if current["refuse"] else Recorded(current["key"])

    graphs = GraphCache(capture, "the test")
    for _ in range(3):
        graphs.run("a", 7, lambda: events.append("plain a"))
    assert events == ["plain a", "replay a", "replay a"]
    events.clear()
    # A refusal can be passing (another thread's work invalidated the capture): the next call tries again.
    current.update(key="b", refuse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            graphs.run("b", 7, lambda: events.append("plain b"))
        current["refuse"] = False
        for _ in range(2):
            graphs.run("b", 7, lambda: events.append("plain b"))
    assert events == ["destroy a", "plain b", "plain b", "replay b", "replay b"]
    events.clear()
    # Refused CAPTURE_ATTEMPTS times: graphs are off for that key, with one warning.
    current.update(key="c", refuse=True)
    with pytest.warns(RuntimeWarning, match=f"capture of the test failed {CAPTURE_ATTEMPTS} times"):
        for _ in range(1 + CAPTURE_ATTEMPTS):
            graphs.run("c", 7, lambda: events.append("plain c"))
    current["refuse"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graphs.run("c", 7, lambda: events.append("plain c"))
    assert events == ["destroy b"] + ["plain c"] * (2 + CAPTURE_ATTEMPTS)
    events.clear()
    # A key without graphs between replays of another: its plain run may set another shape on the execution
    # context, so the other key's graph is dropped and captured again, never replayed stale.
    current["key"] = "a"
    for key in ("a", "a", "a", "c", "a", "a", "a"):
        graphs.run(key, 7, lambda key=key: events.append(f"plain {key}"))
    assert events == ["plain a", "replay a", "replay a", "destroy a", "plain c", "plain a", "replay a", "replay a"]


@pytest.mark.gpu_contract
def test_fake_infer_device_waits_for_the_stream_of_out(fake_trt: tuple[FakeGpu, Path],
                                                       tiny_model_files: dict[str, Path]) -> None:
    """CUDA Array Interface v3: "stream": "An optional stream upon which synchronization must take place at the
    point of consumption": work still queued on ``out``'s stream must end before TensorRT writes into it."""
    import pycuda.driver as cuda

    gpu, plan = fake_trt
    batch = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(plan) as backend:
        out_shape = backend.infer(batch).shape
        with backend.device_session():
            images = cuda.mem_alloc(batch.nbytes)
            logits = cuda.mem_alloc(int(np.prod(out_shape)) * 4)
            gpu.bytes_at(int(images), batch.nbytes)[:] = batch.reshape(-1).view(np.uint8)
            producer = cuda.Stream()  # another library's stream (torch's, CuPy's) in the same context
        for out_stream, syncs in ((None, 0), (1, 1), (producer.handle, 1)):
            gpu.log.clear()
            result = backend.infer_device(ArrayOnStream(int(images), batch.shape, None),
                                          out=ArrayOnStream(int(logits), out_shape, out_stream))
            # That stream alone: a context-wide synchronize would break another thread's graph capture.
            assert (gpu.log.count(("sync",)), gpu.log.count(("context sync",))) == (syncs, 0)
            np.testing.assert_allclose(gpu.view(int(logits), out_shape, "float32"), _onnx(tiny_model_files, batch),
                                       atol=1e-5)
            assert result.__cuda_array_interface__["data"][0] == int(logits)
        with backend.device_session():
            images.free()
            logits.free()


def _queue_upload(gpu: FakeGpu, batch: np.ndarray, stream: Any) -> Any:
    """Device memory of zeros, and the copy of ``batch`` into it queued on ``stream`` (None: the legacy stream), not
    yet run: a producer library's upload as an input reaches the backend."""
    import pycuda.driver as cuda

    images = cuda.mem_alloc(batch.nbytes)
    gpu.bytes_at(int(images), batch.nbytes)[:] = 0
    staged = cuda.pagelocked_empty(batch.shape, np.float32)
    staged[...] = batch
    cuda.memcpy_htod_async(images, staged, stream)
    return images


@pytest.mark.gpu_contract
def test_fake_infer_device_reads_an_input_its_producer_stream_still_writes(fake_trt: tuple[FakeGpu, Path],
                                                                           tiny_model_files: dict[str, Path]) -> None:
    """The input's producer (torch, CuPy) queued the copy that fills it on its own stream and returned: TensorRT
    must read it only once that stream's work has run (CUDA Array Interface v3, "stream"), not the zeros before."""
    import pycuda.driver as cuda

    gpu, plan = fake_trt
    batch = np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(plan) as backend:
        with backend.device_session():
            producer = cuda.Stream()
            images = _queue_upload(gpu, batch, producer)
        assert gpu.pending() == 1  # the producer's copy has not run
        logits = backend.infer_device(ArrayOnStream(int(images), batch.shape, producer.handle))
        np.testing.assert_allclose(logits, _onnx(tiny_model_files, batch), atol=1e-5)
        with backend.device_session():
            images.free()


@pytest.mark.gpu_contract
def test_fake_infer_device_reads_an_input_queued_on_the_legacy_stream(fake_trt: tuple[FakeGpu, Path],
                                                                      tiny_model_files: dict[str, Path]) -> None:
    """The backend's stream is non-blocking (so that its graph captures leave other threads' legacy-stream work
    valid) and so no longer waits for the legacy stream by itself: an input whose producer says stream 1 (CUDA
    Array Interface v3: the legacy default stream, torch's default) is read once that stream's work has run."""

    gpu, plan = fake_trt
    batch = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(plan) as backend:
        with backend.device_session():
            images = _queue_upload(gpu, batch, None)  # queued on the legacy stream
        assert gpu.pending() == 1
        logits = backend.infer_device(ArrayOnStream(int(images), batch.shape, 1))
        np.testing.assert_allclose(logits, _onnx(tiny_model_files, batch), atol=1e-5)
        with backend.device_session():
            images.free()


@pytest.mark.gpu_contract
def test_fake_a_failed_capture_destroys_its_graph_and_the_key_is_tried_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A captured graph must be destroyed (cuGraphDestroy) also when the enqueue raised something else than a
    refusal; a pycuda error inside the capture is a refusal (pycuda's errors are not RuntimeErrors)."""
    gpu = install_fake_gpu(monkeypatch)
    import pycuda.driver as cuda

    from unetrt.cuda import DriverGraph, GraphCache, PrimaryContext

    context = PrimaryContext(0)
    try:
        with context.active():
            stream = cuda.Stream()

            def fails(error: BaseException) -> None:
                raise error

            with pytest.raises(ValueError):
                DriverGraph.capture(stream.handle, lambda: fails(ValueError("the network returned shape ...")))
            assert gpu.graphs == {}
            assert DriverGraph.capture(stream.handle, lambda: fails(cuda.LogicError("not capturable"))) is None
            assert gpu.graphs == {}

            graphs = GraphCache(lambda enqueue: DriverGraph.capture(stream.handle, enqueue), "the test")
            failing = {"now": False}

            def enqueue() -> None:
                if failing["now"]:
                    raise ValueError("a transient failure")

            graphs.run("k", stream.handle, enqueue)  # the warm-up
            failing["now"] = True
            with pytest.raises(ValueError):
                graphs.run("k", stream.handle, enqueue)  # the capture
            failing["now"] = False
            graphs.run("k", stream.handle, enqueue)  # captured now
            assert graphs.graph is not None and len(gpu.graphs) == 1
            graphs.clear()
    finally:
        context.release()


@pytest.mark.gpu_contract
def test_fake_graphs_refused_at_one_shape_are_still_captured_at_another(fake_trt: tuple[FakeGpu, Path]) -> None:
    """CUDA graphs are turned off per input shape: one whose capture was refused three times runs plainly, and the
    other size of a robot's second camera is still captured and replayed (infer's graphs are keyed by the shape; a
    constant key turned them off for every shape after one shape's refusals, and every test passed)."""
    _gpu, plan = fake_trt
    refused, other = np.zeros((1, 3, 32, 32), np.float32), np.zeros((1, 3, 64, 64), np.float32)
    with TensorRTBackend(plan) as backend:
        engine = backend._held.engine
        engine.capturable = False  # the fake's enqueueV3 under capture then fails, as for an engine with a loop
        with pytest.warns(RuntimeWarning, match="failed 3 times"):
            for _ in range(4):  # a warm-up, then three refused captures
                backend.infer(refused)
        assert backend._held.graphs.graph is None
        engine.capturable = True
        for _ in range(3):
            backend.infer(other)
        assert backend._held.graphs.graph is not None
        backend.infer(refused)
        assert backend._held.graphs.graph is None  # that shape runs plainly from now on


@pytest.mark.gpu_contract
def test_fake_contexts_on_one_profile_are_not_run_concurrently(fake_trt: tuple[FakeGpu, Path]) -> None:
    """[PROFILE-SHARING]: two contexts of one dynamic-shape engine share profile 0, so the fake refuses the second
    while the first still runs on another stream; the backend's two contexts (infer and the device entry) share its
    one stream, so their work never overlaps."""
    import pycuda.driver as cuda

    _gpu, plan = fake_trt
    shape = (1, 3, 32, 32)
    with TensorRTBackend(plan) as backend:
        with backend.device_session():
            engine = backend._held.engine
            first, second = engine.create_execution_context(), engine.create_execution_context()
            memory = [cuda.mem_alloc(4 * 3 * 32 * 32 * 11) for _ in range(2)]
            for context in (first, second):
                assert context.set_input_shape("image", shape)
                assert context.set_tensor_address("image", int(memory[0])) and context.set_tensor_address(
                    "logits", int(memory[1]))
            one, other = cuda.Stream(), cuda.Stream()
            assert first.execute_async_v3(one.handle)
            assert not second.execute_async_v3(other.handle)  # first still runs on another stream
            assert second.execute_async_v3(one.handle)  # the same stream orders them
            one.synchronize()
            assert second.execute_async_v3(other.handle)  # first is done
            other.synchronize()
            # The device entry and infer share the backend's stream: neither is refused.
            out = cuda.mem_alloc(4 * 2 * 11 * 32 * 32)
            backend.enqueue(int(memory[0]), (2, 3, 32, 32), int(out), int(backend._held.stream.handle))
        backend.infer(np.zeros(shape, np.float32))
        with backend.device_session():
            backend._held.stream.synchronize()
            for allocation in (*memory, out):
                allocation.free()
            del first, second


@pytest.mark.gpu_contract
def test_fake_plan_with_vectorized_input_is_refused_with_the_rebuild_command(
        monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """[IO-FORMAT]: an FP16-input engine built without pinned I/O formats may read its input as kHWC8; infer's
    copy and the frame path's extract kernel write linear NCHW, so the engine would compute from scrambled input.
    The backend checks the formats when it opens the plan and names the rebuild."""
    gpu = install_fake_gpu(monkeypatch)
    install_fake_tensorrt(monkeypatch, gpu)
    plan = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "hwc8.plan", gpu, input_dtype="float16",
                                input_format="HWC8")
    with pytest.raises(ValueError, match=r"'image'.*HWC8.*linear.*unet-build"):
        TensorRTBackend(plan)
    assert gpu.primary(0).retains == 0 and gpu.driver_stack() == []


@pytest.mark.gpu_contract
@pytest.mark.parametrize("short_of", ["activations", "buffers"])
def test_fake_a_failed_open_destroys_the_engine_in_its_context(fake_trt: tuple[FakeGpu, Path], short_of: str) -> None:
    """[TEARDOWN]: the engine loads but its execution context (or the buffers) find no memory; the engine the open
    made must be destroyed before the retained context is released, not later with the exception's traceback (whose
    frames hold it) on whatever thread drops that exception, in a context that may no longer exist."""
    import gc

    from fakes.tensorrt import FakeEngine

    from unetrt.backends.tensorrt import EngineResourceError

    gpu, plan = fake_trt
    gpu.memory_bytes = plan.stat().st_size + FakeEngine.load_overhead + (
        FakeEngine.context_memory // 2 if short_of == "activations" else FakeEngine.context_memory + 1)
    with pytest.raises(EngineResourceError) as caught:
        TensorRTBackend(plan)
    assert gpu.primary(0).retains == 0 and gpu.driver_stack() == []
    del caught
    gc.collect()
    assert [entry for entry in gpu.log if entry[0] == "tensorrt freed outside its context"] == []
    assert gpu.live("library") == 0


@pytest.mark.gpu_contract
def test_fake_a_backend_dropped_without_close_is_released_in_its_context(fake_trt: tuple[FakeGpu, Path]) -> None:
    """A bare backend (open_backend without `with` or close()) dropped on a thread: its engine, context, buffers and
    retained CUDA context were freed by the garbage collector at whatever moment, outside its CUDA context
    ([TEARDOWN]: TensorRT's "context is destroyed", sometimes a crash), and the context stayed retained."""
    import gc

    from unetrt.dropped import wait_for_releases

    gpu, plan = fake_trt
    batch = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)

    def use_and_drop() -> None:
        backend = TensorRTBackend(plan)
        backend.infer(batch)

    worker = threading.Thread(target=use_and_drop)
    worker.start()
    worker.join()
    gc.collect()
    assert wait_for_releases(30)
    assert gpu.primary(0).retains == 0 and gpu.live("device") == 0 and gpu.live("pinned") == 0
    assert not [entry for entry in gpu.log if entry[0] == "tensorrt freed outside its context"]


def _interrupt_after_the_first(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """Make ``owner.name`` do its work, then raise KeyboardInterrupt, once: a Ctrl-C whose handler runs at the
    next bytecode after that call returned (Python runs signal handlers between bytecodes, in the main thread)."""
    original, calls = getattr(owner, name), iter([True])

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if next(calls, False):
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(owner, name, interrupted)


@pytest.mark.gpu_contract
def test_fake_a_close_interrupted_mid_release_is_finished_by_the_next_close(
        fake_trt: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while close() freed the backend's buffers: the context was released under what was left (the other
    buffer, the stream, the engine: leaked, or destroyed later outside their context) and the next close() did
    nothing, as the backend counted as closed."""
    import pycuda.driver as cuda

    gpu, plan = fake_trt
    backend = TensorRTBackend(plan)
    backend.infer(np.zeros((1, 3, 32, 32), np.float32))
    _interrupt_after_the_first(monkeypatch, cuda.DeviceAllocation, "free")
    with pytest.raises(KeyboardInterrupt):
        backend.close()
    backend.close()
    assert gpu.primary(0).retains == 0 and gpu.driver_stack() == []
    assert gpu.live("device") == gpu.live("pinned") == gpu.live("library") == 0
    assert not [entry for entry in gpu.log if entry[0] == "tensorrt freed outside its context"]
    backend.close()


@pytest.mark.gpu_contract
def test_fake_an_interrupt_as_the_open_backend_registers_its_release_leaves_nothing_held(
        fake_trt: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C landing at the registration of the dropped backend's release, once the engine was open: the engine,
    its buffers and the retained context had no owner left to release them."""
    import gc

    from unetrt.backends import tensorrt
    from unetrt.dropped import wait_for_releases

    gpu, plan = fake_trt

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tensorrt, "release_when_dropped", interrupted)
    with pytest.raises(KeyboardInterrupt):
        TensorRTBackend(plan)
    assert gpu.primary(0).retains == 0 and gpu.live("device") == gpu.live("pinned") == 0
    gc.collect()
    assert wait_for_releases(30)
    assert gpu.primary(0).retains == 0 and gpu.live("library") == 0
    assert not [entry for entry in gpu.log if entry[0] == "tensorrt freed outside its context"]


@pytest.mark.gpu_contract
def test_fake_a_primary_context_dropped_unreleased_is_released_on_the_release_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A PrimaryContext its owner never stored (Ctrl-C between its construction and the owner's next line, as in
    Segmenter's opening of the CUDA frame path) kept its retain for the rest of the process."""
    import gc

    from unetrt.cuda import PrimaryContext
    from unetrt.dropped import wait_for_releases

    gpu = install_fake_gpu(monkeypatch)
    context = PrimaryContext(0)
    assert gpu.primary(0).retains == 1
    # Dropped here; not before the count above, which the release thread would otherwise race.
    del context
    gc.collect()
    assert wait_for_releases(30)
    assert gpu.primary(0).retains == 0 and gpu.driver_stack() == []


@pytest.mark.gpu_contract
def test_fake_a_primary_context_interrupted_right_after_its_retain_releases_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C landing once the context was retained, before PrimaryContext's constructor returned: the retain was
    lost with the half-made object."""
    from contextlib import contextmanager

    from unetrt import cuda
    from unetrt.cuda import PrimaryContext

    gpu = install_fake_gpu(monkeypatch)

    @contextmanager
    def interrupted_at_the_end(what: str) -> Any:
        yield
        raise KeyboardInterrupt

    monkeypatch.setattr(cuda, "gpu_resources", interrupted_at_the_end)
    with pytest.raises(KeyboardInterrupt):
        PrimaryContext(0)
    assert gpu.primary(0).retains == 0 and gpu.driver_stack() == []


@pytest.mark.gpu_contract
def test_fake_a_graph_destroy_interrupted_is_not_destroyed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C right after cuGraphExecDestroy returned: the next destroy() (a resumed close) destroyed the same
    executable graph again, undefined behaviour in CUDA."""
    from fakes.cuda import FakeDriverLibrary

    gpu = install_fake_gpu(monkeypatch)
    import pycuda.driver as cuda

    from unetrt.cuda import DriverGraph, PrimaryContext

    context = PrimaryContext(0)
    try:
        with context.active():
            stream = cuda.Stream()
            graph = DriverGraph.capture(stream.handle, lambda: None)
            assert graph is not None and len(gpu.execs) == len(gpu.graphs) == 1
            destroyed: list[int] = []
            destroy = FakeDriverLibrary.cuGraphExecDestroy

            def counted(library: FakeDriverLibrary, graph_exec: Any) -> int:
                destroyed.append(int(graph_exec.value))
                return destroy(library, graph_exec)

            monkeypatch.setattr(FakeDriverLibrary, "cuGraphExecDestroy", counted)
            _interrupt_after_the_first(monkeypatch, FakeDriverLibrary, "cuGraphExecDestroy")
            with pytest.raises(KeyboardInterrupt):
                graph.destroy()
            graph.destroy()
            assert len(destroyed) == 1 and gpu.execs == {} and gpu.graphs == {}
    finally:
        context.release()


@pytest.mark.gpu_contract
def test_fake_a_refused_enqueue_raises_instead_of_returning_the_previous_logits(
        fake_trt: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """``execute_async_v3`` reports a failed launch by returning False ("True if the kernels were enqueued
    successfully, False otherwise", ``IExecutionContext.execute_async_v3``, TensorRT Python API); ignored, the output
    buffer still holds the previous call's logits, which infer would return as this frame's."""
    import pycuda.driver as cuda

    _, plan = fake_trt
    rng = np.random.default_rng(6)
    first, second = (rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2))
    with TensorRTBackend(plan, cuda_graph=False) as backend:
        backend.infer(first)
        with backend.device_session():
            memory = cuda.mem_alloc(second.nbytes)
        with monkeypatch.context() as patch:
            patch.setattr(FakeExecutionContext, "execute_async_v3", lambda self, stream: False)
            with pytest.raises(RuntimeError, match="TensorRT failed to enqueue inference for shape 1x3x32x32"):
                backend.infer(second)
            with pytest.raises(RuntimeError, match="TensorRT failed to enqueue inference for shape 1x3x32x32"):
                backend.infer_device(DeviceArray(int(memory), second.shape, second.dtype))
        with backend.device_session():
            memory.free()


@pytest.mark.gpu_contract
def test_fake_logits_infer_returned_outlive_the_next_call(fake_trt: tuple[FakeGpu, Path],
                                                         tiny_model_files: dict[str, Path]) -> None:
    """infer's logits are the caller's own: the page-locked output buffer is refilled by the next call and freed by
    close() (``cuMemFreeHost``), so a result that were a view of it would change under a caller that keeps the last
    frame's logits (or read freed memory after close)."""
    _, plan = fake_trt
    rng = np.random.default_rng(7)
    first, second = (rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2))
    with TensorRTBackend(plan) as backend:
        kept = backend.infer(first)
        backend.infer(second)
    np.testing.assert_allclose(kept, _onnx(tiny_model_files, first), atol=1e-5)


@pytest.mark.gpu_contract
def test_fake_infer_device_of_a_shape_infer_replays_reads_the_callers_array(
        fake_trt: tuple[FakeGpu, Path], tiny_model_files: dict[str, Path]) -> None:
    """infer's CUDA graph holds the backend's own buffer addresses (a graph replays its launches as captured: TensorRT
    Developer Guide, "Working with CUDA Graphs"); infer_device of the same shape must enqueue on the caller's array,
    not replay that graph, which would compute infer's last input again."""
    import pycuda.driver as cuda

    gpu, plan = fake_trt
    rng = np.random.default_rng(8)
    batch, other = (rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2))
    with TensorRTBackend(plan) as backend:
        for _ in range(3):
            backend.infer(batch)  # warm-up, capture, replay
        assert ("graph", 1) in gpu.log
        with backend.device_session():
            memory = cuda.mem_alloc(other.nbytes)
            gpu.bytes_at(int(memory), other.nbytes)[:] = other.reshape(-1).view(np.uint8)
        for _ in range(2):
            np.testing.assert_allclose(backend.infer_device(DeviceArray(int(memory), other.shape, other.dtype)),
                                       _onnx(tiny_model_files, other), atol=1e-5)
        with backend.device_session():
            memory.free()


@pytest.mark.gpu_contract
def test_fake_close_destroys_the_captured_graphs(fake_trt: tuple[FakeGpu, Path]) -> None:
    """An instantiated graph holds device resources until ``cuGraphExecDestroy`` (CUDA Driver API); the primary
    context outlives the backend when another library retains it (torch, CuPy), so a graph left behind by close()
    would leak with every backend a long-running program opens."""
    gpu, plan = fake_trt
    with TensorRTBackend(plan) as backend:
        for _ in range(3):
            backend.infer(np.zeros((1, 3, 32, 32), np.float32))  # warm-up, capture, replay
        assert gpu.execs
    assert gpu.execs == {} and gpu.graphs == {}


@pytest.mark.gpu_contract
def test_fake_a_closed_backend_refuses_every_call(fake_trt: tuple[FakeGpu, Path]) -> None:
    """After close() the engine, buffers and stream are freed and the primary context released: a call must be
    refused with the reason, not reach freed device memory."""
    _, plan = fake_trt
    batch = np.zeros((1, 3, 32, 32), np.float32)
    backend = TensorRTBackend(plan)
    backend.infer(batch)
    backend.close()
    with pytest.raises(ValueError, match="this backend is closed"):
        backend.infer(batch)
    with pytest.raises(ValueError, match="this backend is closed"):
        backend.infer_device(DeviceArray(0x1000, batch.shape, batch.dtype))
    with pytest.raises(ValueError, match="this backend is closed"), backend.device_session():
        pass


@pytest.mark.gpu_contract
def test_fake_enqueue_after_the_device_session_ended_is_refused(fake_trt: tuple[FakeGpu, Path]) -> None:
    """The session's end releases the backend's lock and pops its CUDA context: an enqueue on the same thread
    afterwards would run the execution context unlocked (TensorRT: "Do not call the APIs of the same
    IExecutionContext from multiple threads at any given time", ``IExecutionContext``) with no context current."""
    _, plan = fake_trt
    with TensorRTBackend(plan) as backend:
        with backend.device_session():
            pass
        with pytest.raises(RuntimeError, match=r"inside 'with backend.device_session\(\):'"):
            backend.enqueue(0, (1, 3, 32, 32), 0, 0)


@pytest.mark.gpu_contract
def test_fake_infer_device_refuses_arrays_the_engine_would_misread(
        monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """TensorRT reads a tensor's bytes as the engine's dtype whatever the caller wrote, and writes the whole output
    (``set_tensor_address`` takes a bare pointer): float32 images into an FP16-input engine would be read as twice
    as many halves, and an ``out`` of another shape would be written past its end."""
    gpu = install_fake_gpu(monkeypatch)
    install_fake_tensorrt(monkeypatch, gpu)
    import pycuda.driver as cuda

    plan = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "half.plan", gpu, input_dtype="float16")
    shape = (1, 3, 32, 32)
    with TensorRTBackend(plan) as backend:
        out_shape = backend.output_shape(shape)
        with backend.device_session():
            images = cuda.mem_alloc(int(np.prod(shape)) * 4)
            logits = cuda.mem_alloc(int(np.prod(out_shape)) * 4)
        with pytest.raises(ValueError, match="images must have dtype float16"):
            backend.infer_device(DeviceArray(int(images), shape, np.dtype(np.float32)))
        half = DeviceArray(int(images), shape, np.dtype(np.float16))
        smaller = (out_shape[0], out_shape[1], out_shape[2] // 2, out_shape[3])
        with pytest.raises(ValueError, match="out must have shape"):
            backend.infer_device(half, out=DeviceArray(int(logits), smaller, np.dtype(np.float32)))
        with backend.device_session():
            images.free()
            logits.free()


@pytest.mark.gpu_contract
def test_fake_a_device_past_the_last_gpu_is_named(fake_trt: tuple[FakeGpu, Path]) -> None:
    """'cuda:1' on a Jetson (one GPU): pycuda's ``Device(1)`` would raise its own LogicError (``cuDeviceGet``:
    invalid device ordinal), not the ValueError that says how many devices there are."""
    _, plan = fake_trt
    with pytest.raises(ValueError, match=r"CUDA device 1 does not exist; this machine has 1 CUDA device"):
        TensorRTBackend(plan, device="cuda:1")


@pytest.mark.gpu_contract
def test_fake_engine_opened_while_another_thread_captures_a_graph_is_not_taken_for_a_damaged_plan(
        fake_trt: tuple[FakeGpu, Path]) -> None:
    """A plan opened while another thread captures a CUDA graph in global mode (PyTorch's torch.cuda.graph default):
    TensorRT's cudaMalloc is refused, deserialize_cuda_engine returns None [CAPTURE-ALLOC], and the backend called the
    plan corrupt, which makes the engine cache delete a good engine and rebuild it (minutes on a Jetson). It is a
    GPU that cannot give memory now: an EngineResourceError naming the capture, and the plan is kept."""
    gpu, plan = fake_trt
    with capturing_on_another_thread(), pytest.raises(EngineResourceError, match="captures a CUDA graph"):
        TensorRTBackend(plan)
    assert gpu.driver_stack() == [] and gpu.primary(0).retains == 0
    with TensorRTBackend(plan) as backend:  # once the capture has ended
        assert backend.infer(np.zeros((1, 3, 32, 32), np.float32)).shape[:2] == (1, backend.info.num_classes)
        # The device entry's execution context is made when it is first used: named alike, not "too little memory".
        with backend.device_session() as stream, capturing_on_another_thread(), pytest.raises(
                EngineResourceError, match=r"execution context .* captures a CUDA graph in global mode"):
            backend.enqueue(0, (1, 3, 32, 32), 0, stream)


@pytest.mark.gpu_contract
def test_fake_engine_refused_by_a_capture_names_pycudas_reason_and_the_thread_local_fix(
        fake_trt: tuple[FakeGpu, Path]) -> None:
    """The line of a plan opened during another thread's global-mode capture: CUDA's own reason, and the fix that
    works, torch.cuda.graph's capture_error_mode='thread_local' (a global-mode capture refuses cudaMalloc on every
    thread; a thread-local one only on its own: CUDA Driver API, cuStreamBeginCapture's CUstreamCaptureMode)."""
    _, plan = fake_trt
    with capturing_on_another_thread(), pytest.raises(EngineResourceError) as refused:
        TensorRTBackend(plan)
    assert re.fullmatch(
        rf"TensorRT could not load {re.escape(repr(str(plan)))}: CUDA refuses to allocate GPU memory on this thread "
        r"now \(\S.*\), most often because another thread captures a CUDA graph in global mode "
        r"\(torch\.cuda\.graph's default\); run this before or after that capture, or capture with "
        r"torch\.cuda\.graph\(\.\.\., capture_error_mode='thread_local'\)", str(refused.value)), str(refused.value)


@pytest.mark.gpu_contract
def test_fake_plan_of_another_gpu_model_of_the_same_architecture_runs_with_a_warning(
        fake_trt: tuple[FakeGpu, Path], tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """An AGX Orin's plan on an Orin NX: TensorRT loads it with a warning [GPU-MODEL], so the backend warns that its
    tactics were timed on the other GPU and runs it (the fake refused it before, which no GPU does)."""
    gpu, _ = fake_trt
    agx = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "agx.plan", FakeGpu(name="Orin AGX (fake)"))
    with pytest.warns(RuntimeWarning, match="same architecture"), TensorRTBackend(agx) as backend:
        assert backend.infer(np.zeros((1, 3, 32, 32), np.float32)).shape[:2] == (1, backend.info.num_classes)
    assert gpu.name == "Orin (fake)"


# --- resident batches (unet-bench's device mode, --no-data-transfers) ------------------------------------------


def _copies_to_the_device(gpu: FakeGpu) -> int:
    return sum(1 for entry in gpu.log if entry == ("htod",))


@pytest.mark.gpu_contract
@pytest.mark.parametrize("input_dtype", ["float32", "float16"])
def test_fake_a_resident_batch_is_copied_once_and_gives_infers_logits(
        input_dtype: str, monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """``resident`` (unet-bench's device mode on a Jetson, without torch): the batch is cast to the engine's input
    dtype and copied once into two buffers of the backend's own, in its CUDA context; every run reads it there, and
    the logits are ``infer``'s, with ``infer``'s captured graph still right after a run of another shape."""
    gpu = install_fake_gpu(monkeypatch)
    install_fake_tensorrt(monkeypatch, gpu)
    plan = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "tiny.plan", gpu, precision="fp32",
                                input_dtype=input_dtype)
    batch = np.random.default_rng(11).standard_normal((2, 3, 32, 32)).astype(np.float32)
    other = np.random.default_rng(12).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with TensorRTBackend(plan) as backend:
        expected = backend.infer(batch)
        for _ in range(3):  # the third replays infer's graph of this shape
            other_expected = backend.infer(other)
        own = gpu.live("device")
        resident = backend.resident(batch)
        assert gpu.live("device") == own + 2
        for pointer in (resident._input, resident._output):
            assert pointer % 256 == 0 and gpu.context_of(pointer) is gpu.primary(0)
        with pytest.raises(ValueError, match=r"^this batch has not run yet; call run\(\) before logits\(\)$"):
            resident.logits()
        copies = _copies_to_the_device(gpu)
        batch[...] = 0  # copied once: a later write to the host batch is not the resident batch's
        for _ in range(3):
            resident.run()
        assert _copies_to_the_device(gpu) == copies and gpu.pending() == 0
        logits = resident.logits()
        assert logits.dtype == np.float32 and resident.shape == (2, 3, 32, 32)
        np.testing.assert_array_equal(logits, expected)
        np.testing.assert_array_equal(backend.infer(other), other_expected)
    assert gpu.live("device") == 0 and gpu.driver_stack() == []


@pytest.mark.gpu_contract
def test_fake_a_resident_batch_refuses_as_infer_and_after_close(fake_trt: tuple[FakeGpu, Path]) -> None:
    gpu, plan = fake_trt
    backend = TensorRTBackend(plan)
    for bad, line in [(np.zeros((1, 3, 32), np.float32), "batch must be a 4-D N x C x H x W numpy array"),
                      (np.zeros((1, 3, 32, 32), np.int64), "batch dtype must be float32"),
                      (np.zeros((5, 3, 32, 32), np.float32), "outside the engine's optimisation profile")]:
        with pytest.raises(ValueError, match=line) as refused:
            backend.resident(bad)
        assert "\n" not in str(refused.value)
    assert gpu.live("device") == 2  # the backend's own buffers only
    resident = backend.resident(np.zeros((1, 3, 32, 32), np.float32))
    resident.run()
    backend.close()
    assert gpu.live("device") == 0 and gpu.primary(0).retains == 0
    for call in (resident.run, resident.logits, lambda: backend.resident(np.zeros((1, 3, 32, 32), np.float32))):
        with pytest.raises(ValueError, match=r"^this backend is closed; open a new one$"):
            call()


@pytest.mark.gpu_contract
def test_fake_a_resident_batch_dropped_is_freed_in_its_context(fake_trt: tuple[FakeGpu, Path]) -> None:
    """A resident batch dropped while its backend lives frees its two buffers on the release thread, with the
    backend's CUDA context current; dropped after the backend's close, it frees nothing twice."""
    import gc

    from unetrt.dropped import wait_for_releases

    gpu, plan = fake_trt
    batch = np.random.default_rng(13).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(plan) as backend:
        resident = backend.resident(batch)
        resident.run()
        del resident
        gc.collect()
        assert wait_for_releases(30)
        assert gpu.live("device") == 2 and gpu.driver_stack() == []
        kept = backend.resident(batch)
    del kept
    gc.collect()
    assert wait_for_releases(30)
    assert gpu.live("device") == 0 and gpu.primary(0).retains == 0


@pytest.mark.gpu_contract
def test_fake_threads_sharing_resident_batches_each_get_their_logits(fake_trt: tuple[FakeGpu, Path]) -> None:
    """Threads running one resident batch, beside threads running another of another shape on the same backend,
    each get the logits of their batch (runs and copies take the backend's lock in turn; each batch has its own
    output buffer)."""
    _gpu, plan = fake_trt
    rng = np.random.default_rng(14)
    batches = [rng.standard_normal(shape).astype(np.float32) for shape in ((1, 3, 32, 32), (2, 3, 64, 32))]
    with TensorRTBackend(plan) as backend:
        expected = [backend.infer(batch) for batch in batches]
        residents = [backend.resident(batch) for batch in batches]
        wrong: list[object] = []

        def work(index: int) -> None:
            try:
                for _ in range(20):
                    residents[index].run()
                    if not np.array_equal(residents[index].logits(), expected[index]):
                        wrong.append(index)
            except Exception as exc:  # a thread's failure must fail the test, not vanish with the thread
                wrong.append(exc)

        workers = [threading.Thread(target=work, args=(i % 2,)) for i in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert wrong == []


@pytest.mark.gpu_contract
def test_fake_a_resident_batch_without_device_memory_is_one_line_and_holds_nothing(
        fake_trt: tuple[FakeGpu, Path]) -> None:
    """The output buffer finds no memory after the input's was allocated: one line naming the sizes and the fix, and
    the input's buffer freed at once, not left to close()."""
    gpu, plan = fake_trt
    batch = np.zeros((1, 3, 32, 32), np.float32)
    with TensorRTBackend(plan) as backend:
        own = gpu.live("device")
        gpu.memory_bytes = 1 << 40
        used = gpu.memory_bytes - (gpu.free_device_bytes() or 0)
        gpu.memory_bytes = used + batch.nbytes  # room for the input's buffer, none for the output's
        with pytest.raises(EngineResourceError, match=r"no memory left for a resident batch of 1x3x32x32.*close other "
                                                      r"GPU programs or time a smaller batch") as refused:
            backend.resident(batch)
        assert "\n" not in str(refused.value) and gpu.live("device") == own
        gpu.memory_bytes = None
        resident = backend.resident(batch)
        resident.run()
        np.testing.assert_array_equal(resident.logits(), backend.infer(batch))



@pytest.mark.gpu_contract
def test_fake_resident_logits_are_the_callers_own_array(fake_trt: tuple[FakeGpu, Path]) -> None:
    """logits() returns a copy: a later infer() or logits() of another batch, which reuse the backend's host output
    buffer, leaves the logits a caller holds as they were."""
    _gpu, plan = fake_trt
    rng = np.random.default_rng(16)
    batch, other = (rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2))
    with TensorRTBackend(plan) as backend:
        expected = backend.infer(batch)
        resident, other_resident = backend.resident(batch), backend.resident(other)
        resident.run()
        logits = resident.logits()
        backend.infer(other)
        other_resident.run()
        other_resident.logits()
        np.testing.assert_array_equal(logits, expected)


@pytest.mark.gpu_contract
def test_fake_resident_batches_of_one_shape_each_keep_their_own_data(fake_trt: tuple[FakeGpu, Path]) -> None:
    """Two resident batches of one shape made one after the other: each copy is done before resident() returns, so
    the second batch, staged through the same host buffer, is not what the first one holds."""
    _gpu, plan = fake_trt
    rng = np.random.default_rng(17)
    batches = [rng.standard_normal((2, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    with TensorRTBackend(plan) as backend:
        expected = [backend.infer(batch) for batch in batches]
        residents = [backend.resident(batch) for batch in batches]
        for resident, want in zip(residents, expected):
            resident.run()
            np.testing.assert_array_equal(resident.logits(), want)


@pytest.mark.gpu_contract
def test_fake_a_resident_batch_without_device_memory_names_its_size(fake_trt: tuple[FakeGpu, Path]) -> None:
    """The out-of-memory line names the two buffers' size in MiB, so a user can tell how far the GPU fell short."""
    gpu, plan = fake_trt
    batch = np.zeros((4, 3, 96, 96), np.float32)
    with TensorRTBackend(plan) as backend:
        needed = batch.nbytes + int(np.prod(backend.output_shape(batch.shape))) * 4
        gpu.memory_bytes = 1 << 40
        gpu.memory_bytes -= gpu.free_device_bytes() or 0  # no room left at all
        with pytest.raises(EngineResourceError, match=rf"resident batch of 4x3x96x96 on .* \({needed / 2**20:.1f} "
                                                      r"MiB\): "):
            backend.resident(batch)
        gpu.memory_bytes = None


@pytest.mark.gpu_contract
def test_fake_a_dropped_resident_batch_is_freed_under_the_backends_lock(fake_trt: tuple[FakeGpu, Path],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The release thread frees a dropped batch's buffers holding the backend's lock, as close() and the runs do:
    a close() on another thread meanwhile would free them a second time (checked from inside the free, not by racing
    threads)."""
    import gc

    from unetrt.backends import tensorrt
    from unetrt.dropped import wait_for_releases

    _gpu, plan = fake_trt
    with TensorRTBackend(plan) as backend:
        resident = backend.resident(np.zeros((1, 3, 32, 32), np.float32))
        held: list[bool] = []
        free_all = tensorrt._EngineResources._free_all

        def probed(allocations: list[Any]) -> None:
            held.append(backend._lock.locked())
            free_all(allocations)

        monkeypatch.setattr(tensorrt._EngineResources, "_free_all", staticmethod(probed))
        del resident
        gc.collect()
        assert wait_for_releases(30)
        assert held == [True]


@pytest.mark.gpu_contract
def test_fake_a_resident_run_holds_the_backends_lock(fake_trt: tuple[FakeGpu, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A resident batch's run binds infer()'s execution context to its own buffers and back: it holds the backend's
    lock meanwhile, or an infer() on another thread would run into the batch's buffers (checked from inside the run,
    not by racing threads)."""
    _gpu, plan = fake_trt
    with TensorRTBackend(plan) as backend:
        resident = backend.resident(np.zeros((1, 3, 32, 32), np.float32))
        held: list[bool] = []
        enqueue_from = backend._enqueue_from

        def probed(*args: Any) -> None:
            held.append(backend._lock.locked())
            enqueue_from(*args)

        monkeypatch.setattr(backend, "_enqueue_from", probed)
        resident.run()
        assert held == [True]


@pytest.mark.tensorrt
@requires_gpu
def test_a_resident_batch_gives_infers_logits(tiny_plan: Path) -> None:
    """unet-bench's device mode on a real engine: the batch copied once into the backend's own buffers (pycuda alone)
    and run there gives infer's logits."""
    batch = np.random.default_rng(15).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with TensorRTBackend(tiny_plan) as backend:
        expected = backend.infer(batch)
        resident = backend.resident(batch)
        for _ in range(3):
            resident.run()
        np.testing.assert_allclose(resident.logits(), expected, atol=1e-5)

