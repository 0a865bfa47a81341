"""The GPU-resident device of the frame-to-mask path: pycuda owns the memory, everything runs on one stream.

A frame crosses the bus once (uint8 as it came, through a page-locked staging buffer); the working-size resize,
the extract kernel, the network (the backend's device entry), stitching and the fused finish run on the
backend's stream with no host synchronisation in between; only the mask (and probabilities when asked for)
come back. With a backend that allows it (TensorRT), the device work of a fixed frame size is captured into
one CUDA graph on its second call and replayed afterwards.

The driver calls (allocation, copies, memset, graphs) go through :class:`CudaDriver` and the kernels through
:class:`CudaKernels`, so the CPU tests drive this module with a fake driver whose "device memory" is host
memory and whose kernels are the CPU kernels.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from .backends.base import DeviceBackend
from .device import resize_frame

_DTYPE_NAMES = {np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16", np.dtype(np.float16): "float16",
                np.dtype(np.float32): "float32"}
# CUmemorytype of device memory in CUDA_MEMCPY2D.
_MEMORY_DEVICE = 2


@dataclass(frozen=True)
class CudaBuffer:
    """A C-contiguous array in device memory.

    Attributes:
        ptr: device address.
        shape: the array's shape.
        dtype: its element type.
        owner: what keeps the memory alive (a pycuda allocation, or the buffer this one is part of).
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    owner: object

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def strides(self) -> tuple[int, ...]:
        """C-contiguous strides in bytes."""
        strides = [self.dtype.itemsize]
        for side in reversed(self.shape[1:]):
            strides.insert(0, strides[0] * side)
        return tuple(strides)

    @property
    def dtype_name(self) -> str:
        """The kernels' name of the dtype ('uint8', 'uint16', 'float16', 'float32')."""
        return _DTYPE_NAMES[self.dtype]


class CudaGraph(Protocol):
    """A captured sequence of device work."""

    def launch(self, stream_handle: int) -> None:
        """Replay on the stream."""
        ...

    def destroy(self) -> None:
        """Free the graph."""
        ...


class CudaDriver(Protocol):
    """The driver calls of the device: memory, asynchronous copies on a stream, graphs."""

    def allocate(self, nbytes: int) -> tuple[int, object]:
        """Device memory: (address, owner that frees it when dropped)."""
        ...

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """A page-locked host array (copies from and to it are asynchronous)."""
        ...

    def upload(self, dst: int, src: np.ndarray, stream: int) -> None:
        """Queue a copy of a page-locked host array to device address ``dst``."""
        ...

    def download(self, dst: np.ndarray, src: int, stream: int) -> None:
        """Queue a copy from device address ``src`` into a page-locked host array."""
        ...

    def copy_2d(self, dst: int, dst_pitch: int, src: int, src_pitch: int, width_bytes: int, height: int,
                stream: int) -> None:
        """Queue a device-to-device copy of ``height`` rows of ``width_bytes`` (regions must not overlap)."""
        ...

    def zero(self, dst: int, nbytes: int, stream: int) -> None:
        """Queue setting ``nbytes`` at ``dst`` to 0."""
        ...

    def synchronize(self, stream: int) -> None:
        """Wait for the stream."""
        ...

    def capture(self, stream: int, enqueue: Callable[[], bool]) -> CudaGraph | None:
        """Capture what ``enqueue()`` queues on the stream (without running it); None when capture fails."""
        ...


class CudaKernels(Protocol):
    """The ``*_cuda`` entry points of :mod:`unetrt._tiling` the device calls."""

    def extract_tiles_cuda(self, image_ptr: int, image_hw: tuple[int, int], channels: int,
                           image_strides: tuple[int, int, int], image_dtype: str, out_ptr: int,
                           out_shape: tuple[int, ...], out_dtype: str, *, origin: tuple[int, int],
                           step: tuple[int, int], grid: tuple[int, int], first: int, swap_rb: bool, scale: float,
                           mean: list[float], std: list[float], stream: int) -> None:
        """See ``unetrt._tiling.extract_tiles_cuda``."""
        ...

    def stitch_tiles_cuda(self, tiles_ptr: int, tiles_shape: tuple[int, ...], tiles_dtype: str, acc_ptr: int,
                          acc_shape: tuple[int, ...], weight_ptr: int, *, origin: tuple[int, int],
                          step: tuple[int, int], grid: tuple[int, int], first: int, mode: str, window_y_ptr: int,
                          window_x_ptr: int, stream: int) -> None:
        """See ``unetrt._tiling.stitch_tiles_cuda``."""
        ...

    def finish_resized_cuda(self, scores_ptr: int, scores_shape: tuple[int, ...], scores_dtype: str, mask_ptr: int,
                            mask_hw: tuple[int, int], *, rect: tuple[int, int, int, int], weight_ptr: int,
                            binary: bool, threshold: float, probabilities_ptr: int, stream: int) -> None:
        """See ``unetrt._tiling.finish_resized_cuda``."""
        ...

    def resize_bilinear_u8_cuda(self, image_ptr: int, image_shape: tuple[int, int, int], out_ptr: int,
                                out_hw: tuple[int, int], *, stream: int) -> None:
        """See ``unetrt._tiling.resize_bilinear_u8_cuda``."""
        ...


class CudaDevice:
    """Runs the frame-to-mask path on a :class:`unetrt.backends.DeviceBackend`'s CUDA stream.

    Args:
        backend: a backend with a device entry, running on CUDA.
        driver: the driver calls (default: :class:`PycudaDriver`).
        kernels: the CUDA kernels (default: :mod:`unetrt._tiling`).
        graphs: capture the device work of a fixed frame size into a CUDA graph when the backend allows it.

    Example:
        >>> device = CudaDevice(open_backend("camvid.plan"))  # doctest: +SKIP
    """

    name = "cuda"
    reuses_outputs = True

    def __init__(self, backend: DeviceBackend, driver: CudaDriver | None = None,
                 kernels: CudaKernels | None = None, graphs: bool = True) -> None:
        self.backend = backend
        self.input_dtype: np.dtype[Any] = np.dtype(backend.input_dtype)
        if driver is None:
            driver = PycudaDriver()
        if kernels is None:
            from . import _tiling  # type: ignore[attr-defined,unused-ignore]  # the native extension has no stub

            kernels = cast(CudaKernels, _tiling)
        self.driver: CudaDriver = driver
        self.kernels: CudaKernels = kernels
        self.graphs = graphs and backend.capturable
        self._stream: int | None = None
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._graph_key: object = None
        self._graph_runs = 0
        self._graph: CudaGraph | None = None

    @property
    def stream(self) -> int:
        """The stream handle of the current session.

        Raises:
            RuntimeError: outside :meth:`session`.
        """
        if self._stream is None:
            raise RuntimeError("CudaDevice methods run inside `with device.session():`")
        return self._stream

    def session(self) -> AbstractContextManager[None]:
        """See :meth:`unetrt.device.Device.session`: the backend's context, lock and stream."""
        return self._session()

    @contextmanager
    def _session(self) -> Iterator[None]:
        with self.backend.device_session() as stream:
            self._stream = stream
            try:
                yield
            finally:
                self._stream = None

    def _cached(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # --- buffers -------------------------------------------------------------------------------------------

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.allocate`."""
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        ptr, owner = self.driver.allocate(nbytes)
        return CudaBuffer(ptr, tuple(shape), dtype, owner)

    def output(self, shape: tuple[int, ...], dtype: np.dtype[Any], key: object) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.output`: one buffer per key and shape, so graphs can replay."""
        return cast(CudaBuffer, self._cached(("output", key, shape, np.dtype(dtype).str),
                                             lambda: self.allocate(shape, dtype)))

    def constant(self, array: np.ndarray) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.constant`."""
        staged = self.driver.pinned(tuple(array.shape), array.dtype)
        np.copyto(staged, array)
        buffer = self.allocate(tuple(array.shape), array.dtype)
        self.driver.upload(buffer.ptr, staged, self.stream)
        # The staging array must outlive the asynchronous copy: the buffer keeps it.
        return CudaBuffer(buffer.ptr, buffer.shape, buffer.dtype, (buffer.owner, staged))

    def shape(self, buffer: CudaBuffer) -> tuple[int, ...]:
        """See :meth:`unetrt.device.Device.shape`."""
        return buffer.shape

    def part(self, buffer: CudaBuffer, start: int, stop: int) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.part`."""
        row = buffer.strides[0]
        return CudaBuffer(buffer.ptr + start * row, (stop - start, *buffer.shape[1:]), buffer.dtype, buffer)

    def item(self, buffer: CudaBuffer, index: int) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.item`."""
        return CudaBuffer(buffer.ptr + index * buffer.strides[0], buffer.shape[1:], buffer.dtype, buffer)

    def zero(self, buffer: CudaBuffer) -> None:
        """See :meth:`unetrt.device.Device.zero`."""
        self.driver.zero(buffer.ptr, buffer.nbytes, self.stream)

    # --- the path ------------------------------------------------------------------------------------------

    def prepare(self, frame: np.ndarray, work_hw: tuple[int, int] | None, slot: int) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.prepare`: a uint8 frame goes up as it is and is resized on the GPU
        (bilinear, as the host path); other dtypes are resized on the host and go up at the working size."""
        on_device_resize = work_hw is not None and frame.dtype == np.uint8 and frame.shape[:2] != work_hw
        if work_hw is not None and not on_device_resize:
            frame = resize_frame(frame, work_hw)
        if frame.dtype == np.float64:
            frame = frame.astype(np.float32)
        shape, dtype = tuple(frame.shape), frame.dtype
        staged = cast(np.ndarray, self._cached(("staged", slot, shape, dtype.str),
                                               lambda: self.driver.pinned(shape, dtype)))
        np.copyto(staged, frame)
        uploaded = cast(CudaBuffer, self._cached(("frame", slot, shape, dtype.str),
                                                 lambda: self.allocate(shape, dtype)))
        self.driver.upload(uploaded.ptr, staged, self.stream)
        if not on_device_resize:
            return uploaded
        assert work_hw is not None  # on_device_resize implies it
        resized_shape = (*work_hw, *shape[2:])
        resized = cast(CudaBuffer, self._cached(("resized", slot, resized_shape),
                                                lambda: self.allocate(resized_shape, dtype)))
        height, width = shape[0], shape[1]
        channels = shape[2] if len(shape) == 3 else 1
        self.kernels.resize_bilinear_u8_cuda(uploaded.ptr, (height, width, channels), resized.ptr, work_hw,
                                             stream=self.stream)
        return resized

    def extract(self, image: CudaBuffer, out: CudaBuffer, *, origin: tuple[int, int], step: tuple[int, int],
                grid: tuple[int, int], first: int, swap_rb: bool, scale: float, mean: Sequence[float],
                std: Sequence[float]) -> None:
        """See :meth:`unetrt.device.Device.extract`."""
        strides = image.strides
        channels = image.shape[2] if len(image.shape) == 3 else 1
        pixel = strides[1] if len(strides) > 1 else image.dtype.itemsize
        image_strides = (strides[0], pixel, image.dtype.itemsize)
        self.kernels.extract_tiles_cuda(image.ptr, (image.shape[0], image.shape[1]), channels, image_strides,
                                        image.dtype_name, out.ptr, out.shape, out.dtype_name, origin=origin,
                                        step=step, grid=grid, first=first, swap_rb=swap_rb, scale=scale,
                                        mean=list(mean), std=list(std), stream=self.stream)

    def run(self, batch: CudaBuffer) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.run`: the backend's device entry on this stream."""
        shape = self.backend.output_shape(batch.shape)
        dtype = np.dtype(self.backend.output_dtype)
        outputs = cast(CudaBuffer, self._cached(("logits", shape, dtype.str), lambda: self.allocate(shape, dtype)))
        self.backend.enqueue(batch.ptr, batch.shape, outputs.ptr, self.stream)
        return outputs

    def shift(self, tiles: CudaBuffer, index: int, axis: int, pixels: int) -> None:
        """See :meth:`unetrt.device.Device.shift`: two 2-D copies through a scratch buffer (the source and
        destination overlap)."""
        classes, height, width = tiles.shape[1:]
        item = tiles.dtype.itemsize
        base = tiles.ptr + index * tiles.strides[0]
        scratch = cast(CudaBuffer, self._cached(("scratch", tiles.shape[1:], tiles.dtype.str),
                                                lambda: self.allocate(tiles.shape[1:], tiles.dtype)))
        if axis == 2:
            # Per class plane, rows pixels..height-1 move to rows 0..height-pixels-1: one contiguous run each.
            width_bytes, rows, pitch, offset = (height - pixels) * width * item, classes, height * width * item, \
                pixels * width * item
        else:
            width_bytes, rows, pitch, offset = (width - pixels) * item, classes * height, width * item, pixels * item
        self.driver.copy_2d(scratch.ptr, width_bytes, base + offset, pitch, width_bytes, rows, self.stream)
        self.driver.copy_2d(base, pitch, scratch.ptr, width_bytes, width_bytes, rows, self.stream)

    def stitch(self, tiles: CudaBuffer, acc: CudaBuffer, weight: CudaBuffer | None, *, origin: tuple[int, int],
               step: tuple[int, int], grid: tuple[int, int], first: int, mode: str,
               window_y: CudaBuffer | None, window_x: CudaBuffer | None) -> None:
        """See :meth:`unetrt.device.Device.stitch`."""
        self.kernels.stitch_tiles_cuda(tiles.ptr, tiles.shape, tiles.dtype_name, acc.ptr, acc.shape,
                                       0 if weight is None else weight.ptr, origin=origin, step=step, grid=grid,
                                       first=first, mode=mode, window_y_ptr=0 if window_y is None else window_y.ptr,
                                       window_x_ptr=0 if window_x is None else window_x.ptr, stream=self.stream)

    def finish(self, scores: CudaBuffer, mask: CudaBuffer, probabilities: CudaBuffer | None, *,
               rect: tuple[int, int, int, int], weight: CudaBuffer | None, binary: bool) -> None:
        """See :meth:`unetrt.device.Device.finish`."""
        self.kernels.finish_resized_cuda(scores.ptr, scores.shape, scores.dtype_name, mask.ptr,
                                         (mask.shape[0], mask.shape[1]), rect=rect,
                                         weight_ptr=0 if weight is None else weight.ptr, binary=binary,
                                         threshold=0.0, probabilities_ptr=0 if probabilities is None else
                                         probabilities.ptr, stream=self.stream)

    def download(self, buffer: CudaBuffer) -> np.ndarray:
        """See :meth:`unetrt.device.Device.download`: into a page-locked array reused for this buffer."""
        host = cast(np.ndarray, self._cached(("download", buffer.ptr, buffer.shape, buffer.dtype.str),
                                             lambda: self.driver.pinned(buffer.shape, buffer.dtype)))
        self.driver.download(host, buffer.ptr, self.stream)
        return host

    def launch(self, key: object, enqueue: Callable[[], None]) -> None:
        """See :meth:`unetrt.device.Device.launch`: the first call of a key runs ``enqueue`` (the warm-up the
        backend needs), the second captures it into a CUDA graph, later ones replay the graph."""
        if not self.graphs:
            enqueue()
            return
        if key != self._graph_key:
            self._drop_graph()
            self._graph_key = key
        self._graph_runs += 1
        if self._graph is None and self._graph_runs == 2:
            def record() -> bool:
                enqueue()
                return True

            self._graph = self.driver.capture(self.stream, record)
            if self._graph is None:
                self.graphs = False
                warnings.warn("CUDA graph capture of the frame path failed; running without graphs",
                              RuntimeWarning, stacklevel=2)
        if self._graph is not None:
            self._graph.launch(self.stream)
        else:
            enqueue()

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None
        self._graph_runs = 0

    def synchronize(self) -> None:
        """See :meth:`unetrt.device.Device.synchronize`."""
        self.driver.synchronize(self.stream)

    def release(self) -> None:
        """See :meth:`unetrt.device.Device.release`: waits for the stream, then drops the graph and every cached
        buffer (pycuda frees an allocation when its last reference goes, with the context current here)."""
        self.driver.synchronize(self.stream)
        self._drop_graph()
        self._graph_key = None
        self._cache.clear()


class _Memcpy2D(ctypes.Structure):
    """The driver's CUDA_MEMCPY2D."""

    _fields_ = [
        ("srcXInBytes", ctypes.c_size_t), ("srcY", ctypes.c_size_t), ("srcMemoryType", ctypes.c_int),
        ("srcHost", ctypes.c_void_p), ("srcDevice", ctypes.c_uint64), ("srcArray", ctypes.c_void_p),
        ("srcPitch", ctypes.c_size_t),
        ("dstXInBytes", ctypes.c_size_t), ("dstY", ctypes.c_size_t), ("dstMemoryType", ctypes.c_int),
        ("dstHost", ctypes.c_void_p), ("dstDevice", ctypes.c_uint64), ("dstArray", ctypes.c_void_p),
        ("dstPitch", ctypes.c_size_t),
        ("WidthInBytes", ctypes.c_size_t), ("Height", ctypes.c_size_t),
    ]


class PycudaDriver:
    """:class:`CudaDriver` on pycuda (memory) and the driver library (copies on a raw stream handle, graphs).

    Needs the caller's CUDA context current (``DeviceBackend.device_session``).

    Raises:
        ImportError: when pycuda is missing (with the install hint).
    """

    def __init__(self) -> None:
        from .backends.tensorrt import _driver_library, require_pycuda

        require_pycuda()
        import pycuda.driver as cuda

        cuda.init()
        self._lib = _driver_library()

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed with CUDA error {status}")

    def allocate(self, nbytes: int) -> tuple[int, object]:
        """See :meth:`CudaDriver.allocate`."""
        import pycuda.driver as cuda

        allocation = cuda.mem_alloc(nbytes)
        return int(allocation), allocation

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """See :meth:`CudaDriver.pinned`."""
        import pycuda.driver as cuda

        return cast(np.ndarray, cuda.pagelocked_empty(shape, dtype))

    def upload(self, dst: int, src: np.ndarray, stream: int) -> None:
        """See :meth:`CudaDriver.upload`."""
        self._check(self._lib.cuMemcpyHtoDAsync_v2(ctypes.c_uint64(dst), ctypes.c_void_p(src.ctypes.data),
                                                   ctypes.c_size_t(src.nbytes), ctypes.c_void_p(stream)),
                    "cuMemcpyHtoDAsync")

    def download(self, dst: np.ndarray, src: int, stream: int) -> None:
        """See :meth:`CudaDriver.download`."""
        self._check(self._lib.cuMemcpyDtoHAsync_v2(ctypes.c_void_p(dst.ctypes.data), ctypes.c_uint64(src),
                                                   ctypes.c_size_t(dst.nbytes), ctypes.c_void_p(stream)),
                    "cuMemcpyDtoHAsync")

    def copy_2d(self, dst: int, dst_pitch: int, src: int, src_pitch: int, width_bytes: int, height: int,
                stream: int) -> None:
        """See :meth:`CudaDriver.copy_2d`."""
        copy = _Memcpy2D(srcMemoryType=_MEMORY_DEVICE, srcDevice=src, srcPitch=src_pitch,
                         dstMemoryType=_MEMORY_DEVICE, dstDevice=dst, dstPitch=dst_pitch,
                         WidthInBytes=width_bytes, Height=height)
        self._check(self._lib.cuMemcpy2DAsync_v2(ctypes.byref(copy), ctypes.c_void_p(stream)), "cuMemcpy2DAsync")

    def zero(self, dst: int, nbytes: int, stream: int) -> None:
        """See :meth:`CudaDriver.zero`."""
        self._check(self._lib.cuMemsetD8Async(ctypes.c_uint64(dst), ctypes.c_ubyte(0), ctypes.c_size_t(nbytes),
                                              ctypes.c_void_p(stream)), "cuMemsetD8Async")

    def synchronize(self, stream: int) -> None:
        """See :meth:`CudaDriver.synchronize`."""
        self._check(self._lib.cuStreamSynchronize(ctypes.c_void_p(stream)), "cuStreamSynchronize")

    def capture(self, stream: int, enqueue: Callable[[], bool]) -> CudaGraph | None:
        """See :meth:`CudaDriver.capture`."""
        from .backends.tensorrt import _DriverGraph

        return _DriverGraph.capture(stream, enqueue)
