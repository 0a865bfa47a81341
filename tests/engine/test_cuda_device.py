"""The GPU-resident path on the CPU: CudaDevice driven through a fake driver whose device memory is host memory
and whose '*_cuda' kernels are the emulated CUDA launches of unetrt._tiling_emu (every block and thread of the
real launch configuration) or the CPU kernels, so the orchestration, pointer arithmetic, copies and graph
capture the GPU runs are exercised here."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unetrt import _tiling, _tiling_emu
from unetrt.backends import open_backend
from unetrt.backends.base import DeviceBackend, network_output_shape
from unetrt.cuda_device import CudaDevice
from unetrt.device import HostDevice
from unetrt.frame_path import FramePath
from unetrt.tiling import plan_tiles, plan_whole

STREAM = 0x5EED


class FakeDriver:
    """Device memory in host arrays at fake addresses; every queued operation is logged, and while capturing
    it is recorded into a graph instead of running."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._blocks: list[np.ndarray] = []
        self._next = 0x10000
        self.log: list[tuple[Any, ...]] = []
        self._recording: list[Callable[[], None]] | None = None

    # memory
    def allocate(self, nbytes: int) -> tuple[int, object]:
        block = np.zeros(nbytes, np.uint8)
        ptr = self._next
        self._next += (nbytes + 511) // 256 * 256  # a gap after every block catches overruns
        self._starts.append(ptr)
        self._blocks.append(block)
        return ptr, block

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        return np.zeros(shape, dtype)

    def bytes_at(self, ptr: int, nbytes: int) -> np.ndarray:
        index = bisect.bisect_right(self._starts, ptr) - 1
        offset = ptr - self._starts[index]
        block = self._blocks[index]
        assert index >= 0 and offset + nbytes <= block.size, f"access past a device allocation at {ptr:#x}"
        return block[offset : offset + nbytes]

    def view(self, ptr: int, shape: tuple[int, ...], dtype: Any, strides: tuple[int, ...] | None = None) -> np.ndarray:
        dtype = np.dtype(dtype)
        if strides is None:
            extent = int(np.prod(shape)) * dtype.itemsize
        else:
            extent = sum((side - 1) * stride for side, stride in zip(shape, strides)) + dtype.itemsize
        return np.ndarray(shape, dtype, buffer=self.bytes_at(ptr, extent), strides=strides)

    # queued work
    def queue(self, entry: tuple[Any, ...], work: Callable[[], None], stream: int) -> None:
        assert stream == STREAM, "all device work goes on the backend's stream"
        self.log.append(entry)
        if self._recording is not None:
            self._recording.append(work)
        else:
            work()

    def upload(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.queue(("upload", src.nbytes, src.dtype.str), lambda: self.bytes_at(dst, src.nbytes).__setitem__(
            slice(None), src.reshape(-1).view(np.uint8)), stream)

    def download(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.queue(("download", dst.nbytes), lambda: dst.reshape(-1).view(np.uint8).__setitem__(
            slice(None), self.bytes_at(src, dst.nbytes)), stream)

    def copy_2d(self, dst: int, dst_pitch: int, src: int, src_pitch: int, width_bytes: int, height: int,
                stream: int) -> None:
        def work() -> None:
            for row in range(height):
                data = self.bytes_at(src + row * src_pitch, width_bytes).copy()
                self.bytes_at(dst + row * dst_pitch, width_bytes)[:] = data

        assert dst + (height - 1) * dst_pitch + width_bytes <= src or src + (height - 1) * src_pitch + width_bytes \
            <= dst, "copy_2d regions must not overlap"
        self.queue(("copy_2d",), work, stream)

    def zero(self, dst: int, nbytes: int, stream: int) -> None:
        self.queue(("zero",), lambda: self.bytes_at(dst, nbytes).fill(0), stream)

    def synchronize(self, stream: int) -> None:
        assert stream == STREAM
        self.log.append(("sync",))

    def capture(self, stream: int, enqueue: Callable[[], bool]) -> FakeGraph | None:
        self._recording = []
        try:
            ok = enqueue()
        finally:
            recorded, self._recording = self._recording, None
        self.log.append(("captured", len(recorded)))
        return FakeGraph(self, recorded) if ok else None


class FakeGraph:
    def __init__(self, driver: FakeDriver, work: list[Callable[[], None]]) -> None:
        self.driver, self.work = driver, work

    def launch(self, stream_handle: int) -> None:
        assert stream_handle == STREAM
        self.driver.log.append(("graph", len(self.work)))
        for step in self.work:
            step()

    def destroy(self) -> None:
        self.work = []


class FakeKernels:
    """The *_cuda entry points of unetrt._tiling, run on the fake driver's memory by a module with the CPU
    entry points' signatures (the emulated CUDA kernels, or the CPU kernels)."""

    def __init__(self, driver: FakeDriver, kernels: Any) -> None:
        self.driver, self.kernels = driver, kernels

    def extract_tiles_cuda(self, image_ptr: int, image_hw: tuple[int, int], channels: int,
                           image_strides: tuple[int, int, int], image_dtype: str, out_ptr: int,
                           out_shape: tuple[int, ...], out_dtype: str, *, stream: int, **kwargs: Any) -> None:
        image = self.driver.view(image_ptr, (*image_hw, channels), image_dtype, image_strides)
        out = self.driver.view(out_ptr, out_shape, out_dtype)
        self.driver.queue(("extract", out_shape[0]), lambda: self.kernels.extract_tiles(image, out, **kwargs), stream)

    def stitch_tiles_cuda(self, tiles_ptr: int, tiles_shape: tuple[int, ...], tiles_dtype: str, acc_ptr: int,
                          acc_shape: tuple[int, ...], weight_ptr: int, *, window_y_ptr: int, window_x_ptr: int,
                          stream: int, **kwargs: Any) -> None:
        view = self.driver.view
        tiles, acc = view(tiles_ptr, tiles_shape, tiles_dtype), view(acc_ptr, acc_shape, np.float32)
        weight = view(weight_ptr, acc_shape[1:], np.float32) if weight_ptr else None
        windows = {}
        if window_y_ptr:
            windows = {"window_y": view(window_y_ptr, (tiles_shape[2],), np.float32),
                       "window_x": view(window_x_ptr, (tiles_shape[3],), np.float32)}
        self.driver.queue(("stitch", tiles_shape[0]),
                          lambda: self.kernels.stitch_tiles(tiles, acc, weight, **kwargs, **windows), stream)

    def finish_resized_cuda(self, scores_ptr: int, scores_shape: tuple[int, ...], scores_dtype: str, mask_ptr: int,
                            mask_hw: tuple[int, int], *, rect: tuple[int, int, int, int], weight_ptr: int,
                            binary: bool, threshold: float, probabilities_ptr: int, stream: int) -> None:
        view = self.driver.view
        scores = view(scores_ptr, scores_shape, scores_dtype)
        mask = view(mask_ptr, mask_hw, np.uint8)
        weight = view(weight_ptr, scores_shape[1:], np.float32) if weight_ptr else None
        probs = view(probabilities_ptr, (scores_shape[0], *mask_hw), np.float32) if probabilities_ptr else None
        self.driver.queue(("finish",), lambda: self.kernels.finish_resized(
            scores, mask, rect=rect, weight=weight, binary=binary, threshold=threshold, probabilities=probs), stream)

    def resize_bilinear_u8_cuda(self, image_ptr: int, image_shape: tuple[int, int, int], out_ptr: int,
                                out_hw: tuple[int, int], *, stream: int) -> None:
        image = self.driver.view(image_ptr, image_shape, np.uint8)
        out = self.driver.view(out_ptr, (*out_hw, image_shape[2]), np.uint8)
        self.driver.queue(("resize",), lambda: self.kernels.resize_bilinear_u8(image, out), stream)


class FakeCudaBackend:
    """A DeviceBackend around a real CPU backend: the network reads and writes the fake device memory."""

    capturable = True
    input_dtype = np.dtype(np.float32)
    output_dtype = np.dtype(np.float32)
    name = "fake-cuda"
    device = "cuda:0 (fake)"
    max_input_hw = None
    max_batch = None

    def __init__(self, inner: Any, driver: FakeDriver) -> None:
        self.inner, self.driver, self.info = inner, driver, inner.info
        self.sessions = 0

    @contextmanager
    def device_session(self) -> Iterator[int]:
        self.sessions += 1
        yield STREAM

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return network_output_shape(self.info, input_shape)

    def enqueue(self, input_ptr: int, input_shape: tuple[int, ...], output_ptr: int, stream: int) -> None:
        images = self.driver.view(input_ptr, input_shape, np.float32)
        out = self.driver.view(output_ptr, self.output_shape(input_shape), np.float32)
        self.driver.queue(("network", input_shape), lambda: out.__setitem__(slice(None), self.inner.infer(images)),
                          stream)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.inner.infer(batch)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(params=["emulated", "cpu"])
def fake_gpu(tiny_model_files: dict[str, Path],
             request: pytest.FixtureRequest) -> Iterator[tuple[FakeCudaBackend, FakeDriver, CudaDevice]]:
    driver = FakeDriver()
    backend = FakeCudaBackend(open_backend(tiny_model_files["onnx"]), driver)
    assert isinstance(backend, DeviceBackend)
    kernels = _tiling_emu if request.param == "emulated" else _tiling
    yield backend, driver, CudaDevice(backend, driver, FakeKernels(driver, kernels))
    backend.close()


def frames(count: int, shape: tuple[int, ...], dtype: Any = np.uint8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    high = 65536 if dtype == np.uint16 else 256
    return [rng.integers(0, high, shape).astype(dtype) for _ in range(count)]


@pytest.mark.parametrize("blend", ["gaussian", "crop"])
def test_cuda_device_equals_host_device(fake_gpu: tuple[FakeCudaBackend, FakeDriver, CudaDevice],
                                        blend: str) -> None:
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


def test_frame_goes_up_once_and_only_results_come_back(
        fake_gpu: tuple[FakeCudaBackend, FakeDriver, CudaDevice]) -> None:
    backend, driver, device = fake_gpu
    path = FramePath(device, backend.info)
    frame = frames(1, (40, 56, 3))[0]
    grid = plan_whole(40, 56, "same", 3)
    path.run([frame], grid, False)
    driver.log.clear()
    result = path.run([frame], grid, True)[0]
    kinds = [entry[0] for entry in driver.log]
    assert driver.log[0] == ("upload", frame.nbytes, "|u1")  # uint8, as the camera gave it
    assert kinds.count("upload") == 1
    downloads = [entry[1] for entry in driver.log if entry[0] == "download"]
    assert downloads == [40 * 56, 3 * 40 * 56 * 4]  # the mask, then the probabilities
    assert kinds.count("sync") == 1 and kinds[-1] == "sync"  # one host wait, at the end
    assert result.mask.shape == (40, 56) and result.probabilities is not None


def test_graph_is_captured_on_the_second_call_and_replayed(
        fake_gpu: tuple[FakeCudaBackend, FakeDriver, CudaDevice]) -> None:
    backend, driver, device = fake_gpu
    path = FramePath(device, backend.info)
    grid = plan_tiles((70, 100), 32, 8, "same", 3)
    first, second = frames(1, (70, 100, 3), seed=1), frames(1, (70, 100, 3), seed=2)
    reference = [FramePath(HostDevice(backend.inner.infer), backend.info).run(f, grid, False)[0].mask
                 for f in (first, second)]
    masks = []
    for batch in (first, first, second):
        driver.log.clear()
        masks.append(path.run(batch, grid, False)[0].mask)
    kinds = [entry[0] for entry in driver.log]
    assert "graph" in kinds and "network" not in kinds  # the last call replayed the whole device part
    assert np.array_equal(masks[1], reference[0]) and np.array_equal(masks[2], reference[1])
    # A new frame size is a new graph: run plainly first, capture again on its second call.
    other = plan_tiles((64, 96), 32, 8, "same", 3)
    driver.log.clear()
    path.run(frames(1, (64, 96, 3)), other, False)
    assert "graph" not in [entry[0] for entry in driver.log]


def test_working_size_resize_runs_on_the_device_for_uint8_only(
        fake_gpu: tuple[FakeCudaBackend, FakeDriver, CudaDevice]) -> None:
    _, driver, device = fake_gpu
    shape = (48, 64)
    for dtype, on_device in ((np.uint8, True), (np.uint16, False)):
        image = frames(1, (120, 160, 3), dtype)[0]
        driver.log.clear()
        with device.session():
            prepared = device.prepare(image, shape, 0)
            device.synchronize()
        assert prepared.shape == (*shape, 3) and prepared.dtype == dtype
        assert (("resize",) in driver.log) == on_device
        uploaded = [entry[1] for entry in driver.log if entry[0] == "upload"]
        assert uploaded == [image.nbytes if on_device else 48 * 64 * 3 * 2]
        if on_device:
            expected = np.empty((*shape, 3), np.uint8)
            _tiling.resize_bilinear_u8(image, expected)
            assert np.array_equal(driver.view(prepared.ptr, prepared.shape, prepared.dtype), expected)


def test_methods_outside_a_session_refuse(fake_gpu: tuple[FakeCudaBackend, FakeDriver, CudaDevice]) -> None:
    _, _, device = fake_gpu
    with pytest.raises(RuntimeError, match="session"):
        device.prepare(np.zeros((4, 4, 3), np.uint8), None, 0)


def test_release_frees_inside_a_session_and_the_path_recovers(
        fake_gpu: tuple[FakeCudaBackend, FakeDriver, CudaDevice]) -> None:
    backend, _, device = fake_gpu
    path = FramePath(device, backend.info)
    grid = plan_whole(40, 56, "same", 3)
    frame = frames(1, (40, 56, 3))[0]
    before = path.run([frame], grid, False)[0].mask
    sessions = backend.sessions
    path.release()
    assert backend.sessions == sessions + 1 and device._cache == {} and device._graph is None
    assert np.array_equal(path.run([frame], grid, False)[0].mask, before)
