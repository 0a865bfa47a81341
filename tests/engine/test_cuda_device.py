"""The GPU-resident path on the CPU: CudaDevice with its real PycudaDriver over the fake pycuda and CUDA driver
(tests/fakes), whose device memory is host memory, and kernels that run the emulated CUDA launches of
unetrt._tiling_emu (every block and thread of the real launch configuration) or the CPU kernels on it. The fakes
keep the libraries' rules (contexts, capture, alignment), so the orchestration, pointer arithmetic, copies and
graph capture the GPU runs are checked here."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import tiny_info
from fakes.cuda import FakeGpu, FakeOp, install_fake_gpu
from fakes.kernels import FakeKernels
from fakes.tensorrt import FakeEngine, install_fake_tensorrt, write_plan_from_onnx
from plan_fixtures import route_cuda_kernels_to

from unetrt import _tiling, _tiling_emu
from unetrt.backends import open_backend
from unetrt.backends.base import DeviceBackend, network_output_shape
from unetrt.cuda import CAPTURE_ATTEMPTS
from unetrt.cuda_device import CudaDevice
from unetrt.device import HostDevice, resize_frame
from unetrt.frame_path import FramePath
from unetrt.preprocessing import check_frame
from unetrt.tiling import plan_tiles, plan_whole

pytestmark = pytest.mark.gpu_contract


class RuntimeBackend:
    """A DeviceBackend as torch or ONNX Runtime is one: the CUDA runtime makes the primary context current (pycuda
    does not see that), and the network (a CPU backend) reads and writes the fake device memory on the stream."""

    input_dtype = np.dtype(np.float32)
    output_dtype = np.dtype(np.float32)
    name = "fake-runtime"
    max_input_hw = None
    max_batch = None

    def __init__(self, inner: Any, gpu: FakeGpu, ordinal: int = 0, capturable: bool = True) -> None:
        self.inner, self.gpu, self.info, self.ordinal = inner, gpu, inner.info, ordinal
        self.precision, self.path, self.threads = inner.precision, inner.path, inner.threads
        self.device = f"cuda:{ordinal} (fake)"
        self.capturable = capturable
        self.sessions = 0
        self.stream: int | None = None
        self.refuse_under_capture = False

    @contextmanager
    def device_session(self) -> Iterator[int]:
        self.sessions += 1
        stack = list(self.gpu.driver_stack())
        self.gpu.runtime_set_device(self.ordinal)
        try:
            if self.stream is None:
                self.stream = self.gpu.new_stream().handle
            yield self.stream
        finally:
            self.gpu.driver_stack()[:] = stack
            self.gpu.release_primary(self.ordinal)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return network_output_shape(self.info, input_shape)

    def enqueue(self, input_ptr: int, input_shape: tuple[int, ...], output_ptr: int, stream: int) -> None:
        if self.refuse_under_capture and self.gpu.capturing(stream):
            # As a library raises on a launch into an invalidated capture.
            self.gpu.invalidate_capture(stream)
            raise RuntimeError("operation not permitted when stream is capturing")
        images = self.gpu.view(input_ptr, input_shape, np.float32)
        out = self.gpu.view(output_ptr, self.output_shape(input_shape), np.float32)
        self.gpu.enqueue(stream, FakeOp(lambda: out.__setitem__(slice(None), self.inner.infer(images)),
                                        kind="network"))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.inner.infer(batch)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(params=["emulated", "cpu"])
def fake_gpu(tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
             request: pytest.FixtureRequest) -> Iterator[tuple[RuntimeBackend, FakeGpu, CudaDevice]]:
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    backend = RuntimeBackend(open_backend(tiny_model_files["onnx"]), gpu)
    assert isinstance(backend, DeviceBackend)
    kernels = _tiling_emu if request.param == "emulated" else _tiling
    yield backend, gpu, CudaDevice(backend, kernels=FakeKernels(gpu, kernels))
    backend.close()


def frames(count: int, shape: tuple[int, ...], dtype: Any = np.uint8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    high = 65536 if dtype == np.uint16 else 256
    return [rng.integers(0, high, shape).astype(dtype) for _ in range(count)]


def kinds(gpu: FakeGpu) -> list[str]:
    return [entry[0] for entry in gpu.log]


@pytest.mark.parametrize("blend", ["gaussian", "crop"])
def test_cuda_device_equals_host_device(fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice], blend: str) -> None:
    """Whole frames and a grid with shifted last tiles give the host path's masks and probabilities exactly."""
    backend, _, device = fake_gpu
    host = FramePath(HostDevice(backend.inner.infer), backend.info, blend)
    cuda = FramePath(device, backend.info, blend)
    batch = frames(2, (70, 100, 3))
    for grid, size in ((plan_whole(70, 100, "same", 3), 2), (plan_tiles((70, 100), 32, 8, "same", 3), 3)):
        expected = host.run(batch, grid, True, size)
        got = cuda.run(batch, grid, True, size)
        for want, have in zip(expected, got):
            assert np.array_equal(want.mask, have.mask)
            assert want.probabilities is not None and have.probabilities is not None
            assert np.array_equal(want.probabilities, have.probabilities)
    assert plan_tiles((70, 100), 32, 8, "same", 3).shift != (0, 0)


def _rgb_twin(frame: np.ndarray) -> np.ndarray:
    """The RGB (RGBA) frame of a BGR (BGRA) one, alpha kept last."""
    return np.ascontiguousarray(frame[..., [2, 1, 0, 3][: frame.shape[2]]])


@pytest.mark.parametrize("channels", [3, 4], ids=["rgb", "rgba"])
def test_rgb_frames_on_the_device_give_the_host_answers_of_their_bgr_twins(
        fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice], channels: int) -> None:
    """color_order='rgb' on the GPU path: the extract kernel's channel mapping reads RGB (RGBA) frames, and whole
    frames and a grid of tiles give the host path's masks and probabilities of the BGR (BGRA) twins bit for bit."""
    backend, _, device = fake_gpu
    host = FramePath(HostDevice(backend.inner.infer), backend.info)
    cuda = FramePath(device, backend.info, color_order="rgb")
    bgr = frames(2, (70, 100, channels), seed=channels)
    rgb = [check_frame(_rgb_twin(frame)) for frame in bgr]  # the path takes checked frames: alpha dropped
    for grid, size in ((plan_whole(70, 100, "same", 3), 2), (plan_tiles((70, 100), 32, 8, "same", 3), 3)):
        expected = host.run([check_frame(frame) for frame in bgr], grid, True, size)
        got = cuda.run(rgb, grid, True, size)
        for want, have in zip(expected, got, strict=True):
            assert np.array_equal(want.mask, have.mask)
            assert want.probabilities is not None and have.probabilities is not None
            assert np.array_equal(want.probabilities, have.probabilities)


@pytest.mark.parametrize("tile", [None, 16], ids=["whole", "tiled"])
def test_a_segmenter_on_the_gpu_path_takes_rgb_frames(tiny_model_files: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch, tile: int | None) -> None:
    """Segmenter(color_order='rgb') with the GPU-resident path (emulated CUDA launches) segments RGB and RGBA
    frames as the host path segments their BGR and BGRA twins."""
    import unetrt.segmenter as segmenter_module

    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    route_cuda_kernels_to(monkeypatch, gpu, _tiling_emu)
    monkeypatch.setattr(segmenter_module, "open_backend",
                        lambda *args, **kwargs: RuntimeBackend(open_backend(tiny_model_files["onnx"]), gpu))
    onnx = tiny_model_files["onnx"]
    with segmenter_module.Segmenter(onnx, device_path="cuda", probabilities=True, tile=tile, color_order="rgb",
                                    warm_up=False) as on_gpu, \
            segmenter_module.Segmenter(onnx, device_path="host", probabilities=True, tile=tile,
                                       warm_up=False) as on_host:
        assert isinstance(on_gpu.device, CudaDevice) and isinstance(on_host.device, HostDevice)
        for channels in (3, 4):
            bgr = frames(1, (40, 56, channels), seed=channels)[0]
            want, have = on_host.segment(bgr), on_gpu.segment(_rgb_twin(bgr))
            assert np.array_equal(want.mask, have.mask)
            assert want.probabilities is not None and have.probabilities is not None
            assert np.array_equal(want.probabilities, have.probabilities)


@pytest.mark.parametrize("tile", [None, 16], ids=["whole", "tiled"])
def test_a_segmenter_with_a_working_size_gives_the_host_answers_on_the_gpu_path(
        tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tile: int | None) -> None:
    """A model with a working size (camvid's 224x168, or working_size=): uint8 frames as cameras give them (BGR,
    BGRA, gray, a flipped view) are resized on the GPU by the resize kernel and on the host by cv2.resize,
    which rounds in fixed point, a level away on some pixels: about 0.1 % of the mask pixels and probabilities by up
    to 0.07 differed between the two paths of one model (camvid on the bundled clip's 480x360 frames; here 190 of
    the BGR frame's 10800). Both paths now resize with the kernel's arithmetic, and agree bit for bit; so do uint16,
    float32 and float64 frames, colour and gray, which since 2026-12-07 are resized by the same kernel (on the GPU on
    the GPU path) rather than by OpenCV on the host, and gray frames, which go to the kernels as one channel."""
    import unetrt.segmenter as segmenter_module

    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    route_cuda_kernels_to(monkeypatch, gpu, _tiling_emu)
    monkeypatch.setattr(segmenter_module, "open_backend",
                        lambda *args, **kwargs: RuntimeBackend(open_backend(tiny_model_files["onnx"]), gpu))
    onnx = tiny_model_files["onnx"]
    options: dict[str, Any] = {"probabilities": True, "tile": tile, "working_size": (64, 48), "warm_up": False}
    with segmenter_module.Segmenter(onnx, device_path="cuda", **options) as on_gpu, \
            segmenter_module.Segmenter(onnx, device_path="host", **options) as on_host:
        assert isinstance(on_gpu.device, CudaDevice) and isinstance(on_host.device, HostDevice)
        bgr = cv2.GaussianBlur(frames(1, (90, 120, 3), seed=7)[0], (0, 0), 2)
        cases = {"bgr": bgr, "bgra": np.dstack([bgr, bgr[..., :1]]), "gray": bgr[..., 1], "flipped": bgr[:, ::-1],
                 "uint16": bgr.astype(np.uint16) * 257, "float32": bgr.astype(np.float32) / 255,
                 "float64": bgr / 255.0, "gray uint16": bgr[..., 1].astype(np.uint16) * 257,
                 "gray float32": bgr[..., 1].astype(np.float32) / 255,
                 "bgra uint16": np.dstack([bgr, bgr[..., :1]]).astype(np.uint16) * 257}
        for name, frame in cases.items():
            for size in ("frame", "working"):
                want, have = on_host.segment(frame, probabilities_size=size), on_gpu.segment(frame,
                                                                                           probabilities_size=size)
                assert np.array_equal(want.mask, have.mask), (name, size, int((want.mask != have.mask).sum()))
                assert want.probabilities is not None and have.probabilities is not None
                assert np.array_equal(want.probabilities, have.probabilities), (name, size)


def test_blend_weight_divides_each_source_pixel_once(fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    """Finding 10: the blend weight divides the K x H x W accumulator once per source pixel (finish with
    write_logits), and the resize reads the normalised scores (no weight, so no division at each of the 4 x K
    taps per output pixel); the masks and probabilities stay the host path's bit for bit."""
    backend, _, device = fake_gpu
    grid = plan_tiles((70, 100), 32, 8, "same", 3)
    batch = frames(1, (70, 100, 3))
    want = FramePath(HostDevice(backend.inner.infer), backend.info).run(batch, grid, True)[0]
    have = FramePath(device, backend.info).run(batch, grid, True)[0]
    assert np.array_equal(want.mask, have.mask)
    assert want.probabilities is not None and have.probabilities is not None
    assert np.array_equal(want.probabilities.view(np.uint32), have.probabilities.view(np.uint32))
    kernels = device.kernels
    assert isinstance(kernels, FakeKernels)
    assert [name for name, _ in kernels.calls] == ["finish", "finish_resized"]
    assert kernels.calls[0][1]["write_logits"] and kernels.calls[0][1]["mask_ptr"] == 0
    assert kernels.calls[1][1]["weight_ptr"] == 0


def test_allocates_in_the_primary_context_the_runtime_made_current(
        fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    """Finding 1: torch and ONNX Runtime make the primary context current through the runtime, which pycuda does
    not count; the device pushes the retained primary context itself, so pycuda can allocate."""
    backend, gpu, device = fake_gpu
    path = FramePath(device, backend.info)
    path.run(frames(1, (40, 56, 3)), plan_whole(40, 56, "same", 3), False)
    assert gpu.live("device") > 0
    assert all(gpu.context_of(ptr) is gpu.primary(0) for ptr, (_, _, kind) in gpu._blocks.items()
               if kind == "device")
    assert gpu.driver_stack() == [] and gpu.pycuda_stack() == []


def test_frame_goes_up_once_and_only_results_come_back(
        fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    backend, gpu, device = fake_gpu
    path = FramePath(device, backend.info)
    frame = frames(1, (40, 56, 3))[0]
    grid = plan_whole(40, 56, "same", 3)
    path.run([frame], grid, False)
    gpu.log.clear()
    result = path.run([frame], grid, True)[0]
    assert kinds(gpu)[0] == "htod" and kinds(gpu).count("htod") == 1  # uint8, as the camera gave it
    # The mask, the probabilities, then the finish's count of non-finite pixels (8 bytes a frame), before the one wait.
    assert kinds(gpu).count("dtoh") == 3
    assert kinds(gpu).count("sync") == 1 and kinds(gpu)[-1] == "sync"  # one host wait, at the end
    assert result.mask.shape == (40, 56) and result.probabilities is not None


@pytest.mark.parametrize("kernels", [_tiling_emu, _tiling], ids=["emulated", "cpu"])
@pytest.mark.parametrize("frame_hw", [(40, 56), (60, 80)], ids=["extract", "resize"])
def test_integrated_gpu_reads_the_frame_in_place(tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                 kernels: Any, frame_hw: tuple[int, int]) -> None:
    """Finding 9: on an integrated GPU (CU_DEVICE_ATTRIBUTE_INTEGRATED) the frame is copied once into mapped
    page-locked memory and the kernels read it there: no device copy; the masks are the host path's. The CUDA
    build's pointer check took only device and managed memory, so on a Jetson the extract (or resize) kernel
    refused every mapped frame: cudaPointerGetAttributes calls it cudaMemoryTypeHost (emulated: the fake GPU
    answers for cudaPointerGetAttributes)."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=True))
    backend = RuntimeBackend(open_backend(tiny_model_files["onnx"]), gpu)
    device = CudaDevice(backend, kernels=FakeKernels(gpu, kernels))
    info = backend.info if frame_hw == (40, 56) else replace(backend.info, working_size=(56, 40))
    path = FramePath(device, info)
    host = FramePath(HostDevice(backend.inner.infer), info)
    grid = plan_whole(40, 56, "same", 3)
    for seed in range(2):
        frame = frames(1, (*frame_hw, 3), seed=seed)
        small = frame[0] if frame_hw == (40, 56) else _resized(frame[0], (40, 56))  # the resize kernel's numbers
        gpu.log.clear()
        have = path.run(frame, grid, True, probabilities_size="working")[0].probabilities
        want = host.run([small], grid, True)[0].probabilities
        assert have is not None and want is not None
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-6)
        assert "htod" not in kinds(gpu)
    assert gpu.live("pinned") >= 1
    backend.close()


def test_graph_is_captured_on_the_second_call_and_replayed(
        fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    backend, gpu, device = fake_gpu
    path = FramePath(device, backend.info)
    grid = plan_tiles((70, 100), 32, 8, "same", 3)
    first, second = frames(1, (70, 100, 3), seed=1), frames(1, (70, 100, 3), seed=2)
    reference = [FramePath(HostDevice(backend.inner.infer), backend.info).run(f, grid, False)[0].mask
                 for f in (first, second)]
    masks = []
    for batch in (first, first, second):
        gpu.log.clear()
        masks.append(path.run(batch, grid, False)[0].mask)
    assert "graph" in kinds(gpu) and "network" not in kinds(gpu)  # the last call replayed the whole device part
    assert np.array_equal(masks[1], reference[0]) and np.array_equal(masks[2], reference[1])
    # A new frame size is a new graph: run plainly first, capture again on its second call.
    other = plan_tiles((64, 96), 32, 8, "same", 3)
    gpu.log.clear()
    path.run(frames(1, (64, 96, 3)), other, False)
    assert "graph" not in kinds(gpu)


def test_failed_capture_turns_graphs_off_for_that_size_and_the_frame_is_segmented(
        fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    """Finding 2: a call refused under capture (it raises) ends the capture; the frame still runs plainly; after
    CAPTURE_ATTEMPTS refusals, with one warning, that frame size runs without graphs from then on."""
    backend, gpu, device = fake_gpu
    backend.refuse_under_capture = True
    path = FramePath(device, backend.info)
    grid = plan_whole(40, 56, "same", 3)
    frame = frames(1, (40, 56, 3))
    expected = FramePath(HostDevice(backend.inner.infer), backend.info).run(frame, grid, False)[0].mask
    path.run(frame, grid, False)
    with pytest.warns(RuntimeWarning, match=f"capture .* failed {CAPTURE_ATTEMPTS} times"):
        for _ in range(CAPTURE_ATTEMPTS):
            assert np.array_equal(path.run(frame, grid, False)[0].mask, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(path.run(frame, grid, False)[0].mask, expected)
    assert all(not stream.capture for stream in gpu.streams.values())


def _frame(dtype: Any, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A frame over its dtype's range: 0..255, 0..65535, or [0, 1] for floats."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def _recorded_uploads(device: CudaDevice, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes of every host-to-device copy the device queues from now on."""
    uploads: list[int] = []
    upload = device.driver.upload

    def recording(dst: int, src: np.ndarray, stream: int) -> None:
        uploads.append(src.nbytes)
        upload(dst, src, stream)

    monkeypatch.setattr(device.driver, "upload", recording)
    return uploads


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("channels", [0, 3], ids=["gray", "colour"])
def test_working_size_resize_runs_on_the_device_for_every_dtype(
        fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice], monkeypatch: pytest.MonkeyPatch, dtype: Any,
        channels: int) -> None:
    """One resize implementation: a frame of any dtype goes up once at its own size (float64 as float32, gray as
    one channel) and the resize kernel makes the working-size image on the GPU, bit for bit the host path's
    resize_frame. Until 2026-12-07 a uint16 or float frame was resized on the host by cv2.resize (on both paths),
    beside the native kernel that resized uint8 frames."""
    _, gpu, device = fake_gpu
    shape = (48, 64)
    image = _frame(dtype, (120, 160) if channels == 0 else (120, 160, channels))
    kernel_dtype = np.dtype(np.float32) if dtype == np.float64 else np.dtype(dtype)
    uploads = _recorded_uploads(device, monkeypatch)
    gpu.log.clear()
    with device.session():
        prepared = device.prepare(image, shape, 0)
        device.synchronize()
        assert prepared.shape == (*shape, *image.shape[2:]) and prepared.dtype == kernel_dtype
        assert "resize" in kinds(gpu) and kinds(gpu).count("htod") == 1
        assert uploads == [120 * 160 * max(channels, 1) * kernel_dtype.itemsize]
        resized = gpu.view(prepared.ptr, prepared.shape, prepared.dtype)
        host = resize_frame(image, shape)
        assert host.dtype == kernel_dtype and np.array_equal(resized.view(np.uint8), host.view(np.uint8))


class _GrayNetwork:
    """A 1-channel, 2-class stand-in network on the host (the inner backend of a RuntimeBackend) that keeps a copy
    of every input batch it is given."""

    precision, path, threads = "fp32", Path("gray.onnx"), 1

    def __init__(self, working_size: tuple[int, int] | None) -> None:
        self.info = tiny_info(num_classes=2, in_channels=1, working_size=working_size)
        self.inputs: list[np.ndarray] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.inputs.append(batch.copy())
        return np.concatenate([batch, -batch], axis=1)

    def close(self) -> None:
        """Nothing to free."""


@pytest.mark.parametrize("kernels", [_tiling_emu, _tiling], ids=["emulated", "cpu"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("tile", [None, 16], ids=["whole", "tiled"])
@pytest.mark.parametrize("working_size", [None, (64, 48)], ids=["frame size", "working size"])
def test_a_colour_frame_for_a_gray_model_goes_up_in_colour(monkeypatch: pytest.MonkeyPatch, kernels: Any,
                                                           dtype: Any, tile: int | None,
                                                           working_size: tuple[int, int] | None) -> None:
    """A colour frame for a 1-channel model: uploaded as the camera gave it, resized in colour on the GPU, turned
    gray by the extract kernel; the network input is the host path's bit for bit (tiled and untiled), and so are
    the masks and probabilities. Until this change the host converted it with cv2.cvtColor and uploaded the gray
    image."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    on_gpu, on_host = _GrayNetwork(working_size), _GrayNetwork(working_size)
    device = CudaDevice(RuntimeBackend(on_gpu, gpu), kernels=FakeKernels(gpu, kernels))
    uploads = _recorded_uploads(device, monkeypatch)
    frame = _frame(dtype, (90, 120, 3), seed=2)
    work_hw = (48, 64) if working_size else (90, 120)
    grid = plan_whole(*work_hw, "same", 3) if tile is None else plan_tiles(work_hw, tile, 4, "same", 3)
    # All tiles in one network call, so that the two paths' calls hold the same tiles.
    have = FramePath(device, on_gpu.info).run([frame], grid, True, grid.count)[0]
    want = FramePath(HostDevice(on_host.infer), on_host.info).run([frame], grid, True, grid.count)[0]
    windows = [] if tile is None else [4 * side for side in grid.output_hw]  # the blend windows (float32)
    assert uploads == [*windows, frame.nbytes]
    assert len(on_gpu.inputs) == len(on_host.inputs) == 1 and on_gpu.inputs[0].shape[:2] == (grid.count, 1)
    assert np.array_equal(on_gpu.inputs[0].view(np.uint32), on_host.inputs[0].view(np.uint32))
    assert np.array_equal(have.mask, want.mask)
    assert have.probabilities is not None and want.probabilities is not None
    assert np.array_equal(have.probabilities.view(np.uint32), want.probabilities.view(np.uint32))


def test_methods_outside_a_session_refuse(fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    _, _, device = fake_gpu
    with pytest.raises(RuntimeError, match="session"):
        device.prepare(np.zeros((4, 4, 3), np.uint8), None, 0)


@pytest.mark.parametrize("working_size", [None, (64, 48)], ids=["frame size", "working size"])
def test_a_gray_frame_goes_up_as_one_channel(fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice],
                                             monkeypatch: pytest.MonkeyPatch,
                                             working_size: tuple[int, int] | None) -> None:
    """A gray frame for a colour model: it was repeated to 3 channels on the host before the upload (3x the bytes
    over the bus, and 3x the resize work); now it goes up as it is and the extract kernel replicates it, with the
    masks and probabilities of the frame repeated to colour, bit for bit."""
    backend, _, device = fake_gpu
    info = replace(backend.info, working_size=working_size)
    assert info.in_channels == 3
    grid = plan_whole(48 if working_size else 90, 64 if working_size else 120, "same", 3)
    gray = cv2.GaussianBlur(_frame(np.uint8, (90, 120)), (0, 0), 2)
    uploads = _recorded_uploads(device, monkeypatch)
    have = FramePath(device, info).run([gray], grid, True)[0]
    want = FramePath(HostDevice(backend.inner.infer), info).run([np.dstack([gray] * 3)], grid, True)[0]
    assert uploads == [90 * 120]
    assert np.array_equal(have.mask, want.mask)
    assert have.probabilities is not None and want.probabilities is not None
    assert np.array_equal(have.probabilities.view(np.uint32), want.probabilities.view(np.uint32))


def test_release_frees_inside_a_session_and_the_path_recovers(
        fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    backend, gpu, device = fake_gpu
    path = FramePath(device, backend.info)
    grid = plan_whole(40, 56, "same", 3)
    frame = frames(1, (40, 56, 3))[0]
    before = path.run([frame], grid, False)[0].mask
    sessions = backend.sessions
    path.release()
    assert backend.sessions == sessions + 1 and device._cache == {} and device._graphs.graph is None
    assert gpu.live("device") == 0 and gpu.live("pinned") == 0
    assert gpu.primary(0).retains == 0 and gpu.driver_stack() == []
    assert np.array_equal(path.run([frame], grid, False)[0].mask, before)


def test_buffers_of_many_frame_sizes_stay_bounded(fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    """Finding 11: per-shape staging, device and download buffers are kept in a bounded LRU cache and freed on
    eviction, so a stream of changing frame sizes does not grow memory."""
    backend, gpu, device = fake_gpu
    path = FramePath(device, backend.info)
    live = []
    for step in range(24):
        height, width = 16 + 8 * (step % 12), 24 + 8 * (step // 12)
        path.run(frames(1, (height, width, 3), seed=step), plan_whole(height, width, "same", 3), False)
        live.append(gpu.live("device") + gpu.live("pinned"))
    assert len(device._cache) <= 64 and max(live) <= 64 + 8
    assert live[-1] <= live[11] + 4


@pytest.mark.parametrize("fake_gpu", ["cpu"], indirect=True)
def test_buffers_of_many_frame_sizes_stay_within_the_byte_budget(
        fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    """64 buffers of large frames with their class scores came to GBs (an 8 GB Jetson's memory); the cache also
    keeps at most cached_bytes of buffers from earlier calls, never freeing what the call being made uses."""
    backend, gpu, _ = fake_gpu
    device = CudaDevice(backend, kernels=FakeKernels(gpu, _tiling), cached_bytes=200_000)
    path = FramePath(device, backend.info)
    sizes = [(120 + 8 * step, 160 + 8 * step) for step in range(8)]
    for step, (height, width) in enumerate(sizes * 2):
        frame = frames(1, (height, width, 3), seed=step)
        path.run(frame, plan_whole(height, width, "same", 3), True)
        in_use = sum(int(device._cache[key].nbytes) for key in device._used_now)
        held = sum(int(buffer.nbytes) for buffer in device._cache.values())
        assert held <= max(200_000, in_use), (step, held, in_use)
    assert len(device._cache) < 4 * len(sizes)  # earlier sizes' buffers were freed, not only counted out
    # The last size's buffers are all kept, whatever the budget: its next call allocates nothing.
    blocks = set(gpu._blocks)
    path.run(frames(1, (*sizes[-1], 3), seed=99), plan_whole(*sizes[-1], "same", 3), True)
    assert set(gpu._blocks) == blocks


def test_device_of_the_backend_is_used(tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 12: no device ordinal is hard-coded; a backend on cuda:1 gets buffers in cuda:1's primary context."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(count=2, integrated=False))
    backend = RuntimeBackend(open_backend(tiny_model_files["onnx"]), gpu, ordinal=1)
    device = CudaDevice(backend, kernels=FakeKernels(gpu, _tiling))
    FramePath(device, backend.info).run(frames(1, (40, 56, 3)), plan_whole(40, 56, "same", 3), False)
    contexts = {gpu.context_of(ptr) for ptr, (_, _, kind) in gpu._blocks.items() if kind == "device"}
    assert contexts == {gpu.primary(1)}
    backend.close()


def test_kernels_run_on_the_backend_stream(fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice]) -> None:
    """Finding 12: the stream argument reaches every launch; with the emulated module the launchers' own stream
    plumbing (tiling_kernels.cuh's entry points, which the `<<<>>>` build compiles too) records each launch's stream."""
    backend, _, device = fake_gpu
    kernels = device.kernels
    assert isinstance(kernels, FakeKernels)
    _tiling_emu.launched_streams()
    FramePath(device, backend.info).run(frames(1, (70, 100, 3)), plan_tiles((70, 100), 32, 8, "same", 3), False)
    assert set(kernels.streams) == {backend.stream}
    launched = _tiling_emu.launched_streams()
    if kernels.pointers:
        assert len(launched) >= 4 and set(launched) == {backend.stream}


def test_without_pycuda_a_runtime_backend_takes_the_host_path_with_a_warning(
        tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 1: a torch or ONNX Runtime CUDA backend without pycuda, device path not forced: the host path and
    one warning line, not an ImportError; forced ('cuda'), the ImportError names the fix."""
    import unetrt.segmenter as segmenter_module

    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    monkeypatch.setattr("unetrt.cuda_device.cuda_kernels_built", lambda: True)  # pycuda alone is missing
    monkeypatch.setattr(segmenter_module, "open_backend",
                        lambda *args, **kwargs: RuntimeBackend(open_backend(tiny_model_files["onnx"]), gpu))
    with pytest.warns(RuntimeWarning, match="pip install pycuda") as caught, \
            segmenter_module.Segmenter(tiny_model_files["onnx"], warm_up=False) as segmenter:
        assert isinstance(segmenter.device, HostDevice)
        assert segmenter.segment(frames(1, (40, 56, 3))[0]).mask.shape == (40, 56)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    with pytest.raises(ImportError, match="pip install pycuda"):
        segmenter_module.Segmenter(tiny_model_files["onnx"], device_path="cuda", warm_up=False)


def test_onnxruntime_device_session_and_close_leave_the_context_stack_alone(
        tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 12: ONNX Runtime's device session retains the primary context of its device; close releases it and
    leaves the thread's context stack as it was (pycuda's detach would leave it pushed)."""
    from unetrt.backends.onnxruntime import OnnxRuntimeBackend

    gpu = install_fake_gpu(monkeypatch)
    backend = OnnxRuntimeBackend(tiny_model_files["onnx"], device="cpu")
    backend.device = "cuda"  # as on the CUDA provider, which this machine's onnxruntime lacks
    with backend.device_session() as stream:
        assert gpu.current() is gpu.primary(0) and stream in gpu.streams
    assert gpu.driver_stack() == []
    backend.close()
    assert gpu.driver_stack() == [] and gpu.pycuda_stack() == [] and gpu.primary(0).retains == 0


# --- with the fake TensorRT: one input shape per graph ------------------------------------------------------------


@pytest.fixture
def fake_trt_device(tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                    tmp_path: Path) -> Iterator[tuple[Any, FakeGpu, CudaDevice]]:
    from unetrt.backends.tensorrt import TensorRTBackend

    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    install_fake_tensorrt(monkeypatch, gpu)
    plan = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "tiny.plan", gpu)
    backend = TensorRTBackend(plan)
    yield backend, gpu, CudaDevice(backend, kernels=FakeKernels(gpu, _tiling))
    backend.close()


def test_six_tiles_at_max_batch_four_replay_one_graph(fake_trt_device: tuple[Any, FakeGpu, CudaDevice],
                                                      tiny_model_files: dict[str, Path]) -> None:
    """Finding 3: a 6-tile grid at max batch 4 runs the network at one shape (the short chunk padded), so the
    capture does not begin with a shape change (TensorRT refuses that) and the graph replays."""
    backend, gpu, device = fake_trt_device
    grid = plan_tiles((48, 64), 32, 8, "same", 3)
    assert grid.count == 6
    host = FramePath(HostDevice(open_backend(tiny_model_files["onnx"], "onnxruntime").infer), backend.info)
    path = FramePath(device, backend.info)
    for seed in range(3):
        frame = frames(1, (48, 64, 3), seed=seed)
        gpu.log.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = path.run(frame, grid, False, batch_size=4)[0].mask
        assert (got == host.run(frame, grid, False, batch_size=4)[0].mask).mean() > 0.999
    assert "graph" in kinds(gpu) and "tensorrt" not in kinds(gpu)


def test_infer_between_replays_does_not_stale_the_frame_path_graph(
        fake_trt_device: tuple[Any, FakeGpu, CudaDevice], tiny_model_files: dict[str, Path]) -> None:
    """The frame path's graph holds its execution context's shape; infer() of another shape on the same backend
    uses its own context, so the replay is still valid (the fake refuses a replay after a shape change)."""
    backend, gpu, device = fake_trt_device
    grid = plan_whole(64, 64, "same", 3)
    path = FramePath(device, backend.info)
    frame = frames(1, (64, 64, 3))
    expected = FramePath(HostDevice(open_backend(tiny_model_files["onnx"], "onnxruntime").infer), backend.info).run(
        frame, grid, False)[0].mask
    for _ in range(3):
        path.run(frame, grid, False)
        backend.infer(np.zeros((2, 3, 32, 32), np.float32))
    gpu.log.clear()
    assert (path.run(frame, grid, False)[0].mask == expected).mean() > 0.999
    assert "graph" in kinds(gpu) and "graph refused" not in kinds(gpu)


def test_engine_that_cannot_be_captured_still_segments(fake_trt_device: tuple[Any, FakeGpu, CudaDevice],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 2 with TensorRT: execute_async_v3 returning False under capture makes the backend raise inside the
    capture; the frame path runs that size plainly, and after CAPTURE_ATTEMPTS refusals warns once and stops
    trying."""
    backend, gpu, device = fake_trt_device
    monkeypatch.setattr(FakeEngine, "capturable", False)
    path = FramePath(device, backend.info)
    grid = plan_whole(64, 64, "same", 3)
    frame = frames(1, (64, 64, 3))
    first = path.run(frame, grid, False)[0].mask
    with pytest.warns(RuntimeWarning, match="capture"):
        for _ in range(CAPTURE_ATTEMPTS):
            assert np.array_equal(path.run(frame, grid, False)[0].mask, first)
    gpu.log.clear()
    assert np.array_equal(path.run(frame, grid, False)[0].mask, first)
    assert "tensorrt" in kinds(gpu)


def test_fp16_input_engine_gets_half_tiles_from_the_extract_kernel(
        tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Finding 8 (runtime side): an FP16-input plan takes the tiles as half, written by the extract kernel
    (emulated CUDA launch), and agrees with the same engine's host path fed the host's half tiles (the engine's
    FP16 layers give their own answers, not ONNX Runtime's FP32 ones)."""
    from unetrt.backends.tensorrt import TensorRTBackend

    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    install_fake_tensorrt(monkeypatch, gpu)
    plan = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "half.plan", gpu, input_dtype="float16")
    with TensorRTBackend(plan) as backend:
        device = CudaDevice(backend, kernels=FakeKernels(gpu, _tiling_emu))
        assert device.input_dtype == np.float16
        host = FramePath(HostDevice(backend.infer, np.float16), backend.info)
        grid = plan_whole(40, 56, "same", 3)
        frame = frames(1, (40, 56, 3))
        want = host.run(frame, grid, True)[0]
        have = FramePath(device, backend.info).run(frame, grid, True)[0]
        assert np.array_equal(want.mask, have.mask)
        assert want.probabilities is not None and have.probabilities is not None
        np.testing.assert_allclose(want.probabilities, have.probabilities, atol=1e-6)


@pytest.mark.parametrize("blend", ["gaussian", "whole"])
def test_probabilities_at_the_working_size(fake_gpu: tuple[RuntimeBackend, FakeGpu, CudaDevice], blend: str) -> None:
    """Finding 9: probabilities can come back at the working size (a fraction of the frame-size transfer); they are
    the probabilities of the working-size image, on the host and the GPU path alike, and the mask is unchanged."""
    from dataclasses import replace

    backend, gpu, device = fake_gpu
    info = replace(backend.info, working_size=(64, 48))
    frame = frames(1, (90, 120, 3))
    grid = plan_whole(48, 64, "same", 3) if blend == "whole" else plan_tiles((48, 64), 32, 8, "same", 3)
    host = FramePath(HostDevice(backend.inner.infer), info)
    # Each path's own working-size image: OpenCV's resize on the host, the resize kernel on the GPU.
    for path, small in ((host, resize_frame(frame[0], (48, 64))), (FramePath(device, info), _resized(frame[0]))):
        reference = host.run([small], grid, True)[0]
        full = path.run(frame, grid, True)[0]
        gpu.log.clear()
        result = path.run(frame, grid, True, probabilities_size="working")[0]
        assert result.probabilities is not None and result.probabilities.shape == (3, 48, 64)
        assert reference.probabilities is not None
        # within float rounding: the emulated and CPU kernels may differ in the last bit of a blended sum
        np.testing.assert_allclose(result.probabilities, reference.probabilities, rtol=0, atol=1e-6)
        assert np.array_equal(result.mask, full.mask) and result.mask.shape == (90, 120)
    with pytest.raises(ValueError, match="probabilities_size"):
        host.run(frame, grid, True, probabilities_size="half")


def _resized(frame: np.ndarray, hw: tuple[int, int] = (48, 64)) -> np.ndarray:
    out = np.empty((*hw, frame.shape[2]), np.uint8)
    _tiling_emu.resize_bilinear(frame, out)  # the resize kernel's own numbers
    return out


def test_the_driver_counts_gpus_without_pycuda_and_keeps_cuinit_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    import unetrt.cuda
    from unetrt.cuda import cuda_device_count

    gpu = install_fake_gpu(monkeypatch, FakeGpu(count=2))
    library = unetrt.cuda.driver_library()
    count = ctypes.c_int(0)
    assert library.cuDeviceGetCount(ctypes.byref(count)) == 3  # CUDA_ERROR_NOT_INITIALIZED before cuInit
    assert library.cuInit(1) == 1 and not gpu.initialized  # flags must be 0
    assert cuda_device_count() == 2 and gpu.initialized

    def no_driver() -> None:
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(unetrt.cuda, "driver_library", no_driver)
    assert cuda_device_count() == 0


# --- PycudaDriver and DriverGraph: what the driver refuses is reported, what it made is given back ---------------


def _refused_call(driver: Any, name: str, stream: int, gone: int) -> None:
    """One PycudaDriver call that the driver refuses: ``gone`` is the handle of a destroyed stream."""
    device, other = driver.allocate(256)[0], driver.allocate(256)[0]
    host = driver.pinned((256,), np.dtype(np.uint8))
    if name == "copy_2d":  # overlapping regions on a live stream: cuMemcpy2D's CUDA_ERROR_INVALID_VALUE
        driver.copy_2d(device + 16, 64, device, 64, 64, 2, stream)
    elif name == "upload":
        driver.upload(device, host, gone)
    elif name == "download":
        driver.download(host, device, gone)
    elif name == "zero":
        driver.zero(other, 256, gone)
    else:
        driver.synchronize(gone)


@pytest.mark.parametrize("name", ["upload", "download", "zero", "copy_2d", "synchronize"])
def test_the_pycuda_driver_raises_when_the_driver_refuses_a_call(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Every queued driver call returns a CUresult (CUDA Driver API: cuMemcpyHtoDAsync, cuMemcpyDtoHAsync,
    cuMemsetD8Async, cuMemcpy2DAsync, cuStreamSynchronize; CUDA_ERROR_INVALID_HANDLE for a stream that is gone,
    CUDA_ERROR_INVALID_VALUE for overlapping 2-D regions), and cuStreamSynchronize is where the errors of earlier
    asynchronous work surface ("may also return error codes from previous, asynchronous launches"). One ignored
    leaves a frame not uploaded, a tile not shifted or a mask not downloaded, and the caller gets a stale mask
    without a word: each must raise."""
    from unetrt.cuda_device import PycudaDriver

    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    driver = PycudaDriver(0)
    with driver.session():
        stream, gone = gpu.new_stream().handle, gpu.new_stream().handle
        gpu.destroy_stream(gone)
        with pytest.raises(RuntimeError, match="failed with CUDA error"):
            _refused_call(driver, name, stream, gone)


def test_a_captured_graph_the_driver_cannot_instantiate_is_destroyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuStreamEndCapture hands the captured graph to the caller, who must cuGraphDestroy it (CUDA Driver API,
    cuStreamEndCapture, cuGraphDestroy); cuGraphInstantiate can fail (CUDA_ERROR_OUT_OF_MEMORY on a Jetson short of
    memory). The capture then yields no graph and the work runs plainly, but the graph must not be left behind: the
    frame path tries each frame size CAPTURE_ATTEMPTS times, so a stream of sizes would leak without end."""
    from fakes.cuda import CUDA_ERROR_INVALID_VALUE, primary_context_pushed

    import unetrt.cuda
    from unetrt.cuda import STREAM_NON_BLOCKING, DriverGraph

    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    library = unetrt.cuda.driver_library()
    monkeypatch.setattr(library, "cuGraphInstantiateWithFlags", lambda *args: CUDA_ERROR_INVALID_VALUE,
                        raising=False)
    with primary_context_pushed() as cuda:
        stream = cuda.Stream(flags=STREAM_NON_BLOCKING)
        handle, ran = stream.handle, list[bool]()
        graph = DriverGraph.capture(handle, lambda: gpu.enqueue(handle, FakeOp(lambda: ran.append(True))))
        assert graph is None and ran == []  # recorded, not run
        assert gpu.graphs == {} and gpu.execs == {} and not gpu.capturing(handle)
        del stream  # destroyed while its context is current
