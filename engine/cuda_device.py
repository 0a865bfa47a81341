"""The GPU-resident device of the frame-to-mask path: pycuda owns the memory, everything runs on one stream.

A frame is copied once. On a discrete GPU it crosses the bus once (as it came, gray as one channel, from a
page-locked staging buffer); on an integrated GPU (a Jetson: one memory for CPU and GPU,
CU_DEVICE_ATTRIBUTE_INTEGRATED) the staging buffer is mapped into the device and the kernels read it in place, with
no device copy. The working-size resize (every frame dtype), the extract kernel, the network (the backend's device
entry), stitching and the fused finish run on the backend's stream with no host synchronisation in between; only the
mask (and probabilities when asked for) come back. With a backend that allows it (TensorRT), the device work of a
fixed frame size is captured into one CUDA graph on its second call and replayed afterwards
(:class:`unetrt.cuda.GraphCache`); each network call of a frame size runs at one batch shape (a short last chunk
runs padded), so a graph holds one input shape.

Buffers kept between calls (staging, device copies, logits, downloads) are cached per shape in a bounded
least-recently-used cache, freed on eviction: a stream of changing frame sizes does not grow memory without end.
Where the GPU has no memory left for a new buffer, the cached ones the call does not use are freed first.

The driver calls (context, allocation, copies, memset, graphs) go through :class:`CudaDriver`
(:class:`PycudaDriver` pushes the device's primary context, because pycuda allocates only in a context it pushed
itself) and the kernels through :class:`CudaKernels`, so the CPU tests drive this module with fake pycuda and
driver libraries whose "device memory" is host memory and whose kernels are the emulated CUDA kernels.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from . import cuda
from .backends.base import DeviceBackend
from .cuda import DeviceArray, Graph, GraphCache, PrimaryContext, cuda_ordinal
from .device import free_each

# CUmemorytype of device memory in CUDA_MEMCPY2D.
_MEMORY_DEVICE = 2
# Buffers kept between calls: room for a batch of frames at a few frame sizes, few enough to bound memory.
CACHED_BUFFERS = 64
# ... and at most this many bytes of them: 64 buffers of 1080p frames with their class scores come to GBs, more than
# an 8 GB Jetson can spare. The buffers of the call being made are kept whatever their size.
CACHED_BYTES = 512 << 20

# The frame path's buffers are unetrt's one device-array type.
CudaBuffer = DeviceArray
_Made = TypeVar("_Made")
MISSING_CUDA_KERNELS = (
    "unetrt._tiling was built without its CUDA kernels (no nvcc was found when it was installed): rebuild it with "
    "nvcc on PATH or CUDA_HOME set: on a Jetson, bash scripts/setup_jetson.sh --no-engine in the checkout; "
    "elsewhere, from the checkout, UNETRT_CUDA=1 pip install --no-build-isolation --force-reinstall --no-deps -e ."
)


def cuda_kernels_built() -> bool:
    """Whether :mod:`unetrt._tiling` has its CUDA kernels (it was compiled where nvcc was)."""
    from . import _tiling  # type: ignore[attr-defined,unused-ignore]  # the native extension has no stub

    return bool(getattr(_tiling, "cuda_built", False))


class CudaDriver(Protocol):
    """The driver calls of the device: context, memory, asynchronous copies on a stream, graphs.

    Attributes:
        integrated: whether the GPU shares one memory with the CPU (host memory can then be mapped).
    """

    integrated: bool

    def session(self) -> AbstractContextManager[None]:
        """Make the device's context current for pycuda for the block (every other call runs inside one)."""
        ...

    def release(self) -> None:
        """Let go of the context retained for :meth:`session` when the current session ends."""
        ...

    def allocate(self, nbytes: int) -> tuple[int, object]:
        """Device memory: (address, owner that :meth:`free` takes)."""
        ...

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
        """A page-locked host array (copies from and to it are asynchronous)."""
        ...

    def mapped(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[NDArray[Any], int]:
        """A page-locked host array mapped into the device, and its device address."""
        ...

    def free(self, memory: object) -> None:
        """Free now: an owner from :meth:`allocate`, or an array from :meth:`pinned` or :meth:`mapped`."""
        ...

    def upload(self, dst: int, src: NDArray[Any], stream: int) -> None:
        """Queue a copy of a page-locked host array to device address ``dst``."""
        ...

    def download(self, dst: NDArray[Any], src: int, stream: int) -> None:
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

    def capture(self, stream: int, enqueue: Callable[[], None]) -> Graph | None:
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

    def finish_cuda(self, acc_ptr: int, acc_shape: tuple[int, ...], weight_ptr: int, mask_ptr: int, *,
                    binary: bool, threshold: float, write_logits: bool, nonfinite_ptr: int, stream: int) -> None:
        """See ``unetrt._tiling.finish_cuda``."""
        ...

    def finish_resized_cuda(self, scores_ptr: int, scores_shape: tuple[int, ...], scores_dtype: str, mask_ptr: int,
                            mask_hw: tuple[int, int], *, rect: tuple[int, int, int, int], weight_ptr: int,
                            binary: bool, threshold: float, probabilities_ptr: int, nonfinite_ptr: int,
                            stream: int) -> None:
        """See ``unetrt._tiling.finish_resized_cuda``."""
        ...

    def resize_bilinear_cuda(self, image_ptr: int, image_shape: tuple[int, int, int], image_dtype: str,
                             out_ptr: int, out_hw: tuple[int, int], *, stream: int) -> None:
        """See ``unetrt._tiling.resize_bilinear_cuda``."""
        ...


class CudaDevice:
    """Runs the frame-to-mask path on a :class:`unetrt.backends.DeviceBackend`'s CUDA stream.

    Args:
        backend: a backend with a device entry, running on CUDA.
        driver: the driver calls (default: :class:`PycudaDriver` on the backend's GPU).
        kernels: the CUDA kernels (default: :mod:`unetrt._tiling`).
        graphs: capture the device work of a fixed frame size into a CUDA graph when the backend allows it.
        cached_buffers: how many per-shape buffers stay between calls (least recently used go first).

    Raises:
        ImportError: when pycuda is missing, or ``unetrt._tiling`` was built without its CUDA kernels (each with
            the install hint).

    Example:
        >>> device = CudaDevice(open_backend("camvid.plan"))  # doctest: +SKIP
    """

    name = "cuda"
    reuses_outputs = True

    def __init__(self, backend: DeviceBackend, driver: CudaDriver | None = None,
                 kernels: CudaKernels | None = None, graphs: bool = True,
                 cached_buffers: int = CACHED_BUFFERS, cached_bytes: int = CACHED_BYTES) -> None:
        self.backend = backend
        self.input_dtype: np.dtype[Any] = np.dtype(backend.input_dtype)
        if kernels is None:
            from . import _tiling  # type: ignore[attr-defined,unused-ignore]  # the native extension has no stub

            if not cuda_kernels_built():
                raise ImportError(MISSING_CUDA_KERNELS)
            kernels = cast(CudaKernels, _tiling)
        if driver is None:
            driver = PycudaDriver(cuda_ordinal(backend.device))
        self.driver: CudaDriver = driver
        self.kernels: CudaKernels = kernels
        self._stream: int | None = None
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._capacity = cached_buffers
        self._byte_budget = cached_bytes
        self._used_now: set[Hashable] = set()
        self._graphs = GraphCache(lambda enqueue: self.driver.capture(self.stream, enqueue), "the frame path",
                                  enabled=graphs and backend.capturable)

    @property
    def graphs(self) -> bool:
        """Whether the device work is captured into CUDA graphs."""
        return self._graphs.enabled

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
        """See :meth:`unetrt.device.Device.session`: the backend's lock and stream, the primary context pushed."""
        return self._session()

    @contextmanager
    def _session(self) -> Iterator[None]:
        with self.backend.device_session() as stream, self.driver.session():
            self._stream = stream
            self._used_now = set()
            try:
                yield
            finally:
                self._stream = None

    def _cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The buffer for ``key``, made on first use; least recently used buffers of earlier sessions are freed
        beyond the cache's capacity in buffers or in bytes (a graph that may hold one is dropped first)."""
        self._used_now.add(key)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = self._with_room(make)
        self._cache[key] = value
        excess = len(self._cache) - self._capacity
        cached_bytes = sum(int(buffer.nbytes) for buffer in self._cache.values())
        stale = []
        for old in (k for k in self._cache if k not in self._used_now):  # least recently used first
            if excess <= 0 and cached_bytes <= self._byte_budget:
                break
            stale.append(old)
            excess -= 1
            cached_bytes -= int(self._cache[old].nbytes)
        self._free_cached(stale)
        return value

    def _free_cached(self, keys: Sequence[Hashable]) -> bool:
        """Free the cached buffers of ``keys``, none of this session's; whether there were any."""
        if not keys:
            return False
        # No queued work reads them once freed (a free waits for the device's work); a graph might.
        self._graphs.invalidate()
        for key in keys:
            self._free(self._cache.pop(key))
        return True

    def _with_room(self, make: Callable[[], _Made]) -> _Made:
        """``make()``; where the GPU has no memory left for it, once more after the cached buffers no call of this
        session uses are freed: those of earlier frame sizes are kept only to spare an allocation, and a larger
        frame (a camera switched to a higher resolution on a Jetson) failed for them, naming other programs."""
        try:
            return make()
        except cuda.GpuMemoryError:
            if not self._free_cached([key for key in self._cache if key not in self._used_now]):
                raise
            return make()

    def _free(self, buffer: Any) -> None:
        self.driver.free(buffer.owner if isinstance(buffer, DeviceArray) else buffer)

    # --- buffers -------------------------------------------------------------------------------------------

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.allocate`."""
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        ptr, owner = self._with_room(lambda: self.driver.allocate(nbytes))
        return CudaBuffer(ptr, tuple(shape), dtype, owner)

    def output(self, shape: tuple[int, ...], dtype: np.dtype[Any], key: object) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.output`: one buffer per key and shape, so graphs can replay."""
        return cast(CudaBuffer, self._cached(("output", key, shape, np.dtype(dtype).str),
                                             lambda: self.allocate(shape, dtype)))

    def constant(self, array: NDArray[Any]) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.constant`."""
        staged = self._with_room(lambda: self.driver.pinned(tuple(array.shape), array.dtype))
        buffer: CudaBuffer | None = None
        try:
            np.copyto(staged, array)
            buffer = self.allocate(tuple(array.shape), array.dtype)
            self.driver.upload(buffer.ptr, staged, self.stream)
        except BaseException:
            # Now, with the context current: the error's traceback would hold them (an upload refused included).
            if buffer is not None:
                self.driver.free(buffer.owner)
            self.driver.free(staged)
            raise
        # The staging array must outlive the asynchronous copy: the buffer keeps it.
        return CudaBuffer(buffer.ptr, buffer.shape, buffer.dtype, (buffer.owner, staged))

    def free(self, buffer: CudaBuffer) -> None:
        """See :meth:`unetrt.device.Device.free`: the graph is dropped first, since it may hold the buffer's address
        (replayed after the frame path made new buffers in its place, it read and wrote freed memory)."""
        self._graphs.invalidate()
        owner = buffer.owner
        # A constant's owner is its allocation and the page-locked staging copy its upload read: both are freed
        # before an error (a Ctrl-C after the first) goes on, whose traceback would otherwise hold the second.
        free_each(self.driver.free, owner if isinstance(owner, tuple) else (owner,))

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

    def prepare(self, frame: NDArray[Any], work_hw: tuple[int, int] | None, slot: int) -> CudaBuffer:
        """See :meth:`unetrt.device.Device.prepare`: the frame goes to the device as it is (a gray frame as one
        channel, which the extract kernel replicates for a colour model; float64 as float32, converted on the way
        into page-locked memory) and is resized there by ``resize_bilinear_cuda``, the kernel whose CPU twin the host
        path runs, for every dtype. The frame is copied once into page-locked memory; an integrated GPU reads that
        memory in place, a discrete one gets one asynchronous upload."""
        stream = self.stream
        shape = tuple(frame.shape)
        dtype = np.dtype(np.float32) if frame.dtype == np.float64 else frame.dtype
        if self.driver.integrated:
            def mapped() -> CudaBuffer:
                host, ptr = self.driver.mapped(shape, dtype)
                return CudaBuffer(ptr, shape, dtype, host)

            uploaded = cast(CudaBuffer, self._cached(("mapped", slot, shape, dtype.str), mapped))
            np.copyto(cast(NDArray[Any], uploaded.owner), frame)
        else:
            staged = cast(NDArray[Any], self._cached(("staged", slot, shape, dtype.str),
                                                   lambda: self.driver.pinned(shape, dtype)))
            np.copyto(staged, frame)
            uploaded = cast(CudaBuffer, self._cached(("frame", slot, shape, dtype.str),
                                                     lambda: self.allocate(shape, dtype)))
            self.driver.upload(uploaded.ptr, staged, stream)
        if work_hw is None or shape[:2] == work_hw:
            return uploaded
        resized_shape = (*work_hw, *shape[2:])
        resized = cast(CudaBuffer, self._cached(("resized", slot, resized_shape, dtype.str),
                                                lambda: self.allocate(resized_shape, dtype)))
        channels = shape[2] if len(shape) == 3 else 1
        self.kernels.resize_bilinear_cuda(uploaded.ptr, (shape[0], shape[1], channels), dtype.name, resized.ptr,
                                          work_hw, stream=stream)
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
        """See :meth:`unetrt.device.Device.run`: the backend's device entry on this stream.

        The first rows of a batch buffer (a short last chunk) run at the buffer's whole batch, the extra rows
        holding earlier tiles whose outputs nobody reads: every network call of a frame size then has one input
        shape, which a captured CUDA graph needs (TensorRT refuses to capture the first enqueue after a shape
        change, and a graph replayed after a shape change would compute from stale state).
        """
        whole = batch.owner
        if isinstance(whole, DeviceArray) and whole.ptr == batch.ptr and whole.shape[1:] == batch.shape[1:]:
            padded = whole
        else:
            padded = batch
        shape = self.backend.output_shape(padded.shape)
        dtype = np.dtype(self.backend.output_dtype)
        outputs = cast(CudaBuffer, self._cached(("logits", shape, dtype.str), lambda: self.allocate(shape, dtype)))
        self.backend.enqueue(padded.ptr, padded.shape, outputs.ptr, self.stream)
        return self.part(outputs, 0, batch.shape[0])

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

    def finish(self, scores: CudaBuffer, mask: CudaBuffer | None, probabilities: CudaBuffer | None, *,
               rect: tuple[int, int, int, int], weight: CudaBuffer | None, binary: bool,
               nonfinite: CudaBuffer | None = None) -> None:
        """See :meth:`unetrt.device.Device.finish`: a weight divides the accumulator in place first, once per
        source pixel (``finish_cuda`` with ``write_logits``); the resized finish adds its count of non-finite pixels
        to ``nonfinite`` on the device (an atomicAdd by each thread that meets one)."""
        if weight is not None:
            self.kernels.finish_cuda(scores.ptr, scores.shape, weight.ptr, 0, binary=binary, threshold=0.0,
                                     write_logits=True, nonfinite_ptr=0, stream=self.stream)
        out = mask if mask is not None else probabilities
        assert out is not None  # the frame path asks for a mask, probabilities or both
        self.kernels.finish_resized_cuda(scores.ptr, scores.shape, scores.dtype_name, 0 if mask is None else mask.ptr,
                                         (out.shape[-2], out.shape[-1]), rect=rect, weight_ptr=0, binary=binary,
                                         threshold=0.0, probabilities_ptr=0 if probabilities is None else
                                         probabilities.ptr, nonfinite_ptr=0 if nonfinite is None else nonfinite.ptr,
                                         stream=self.stream)

    def download(self, buffer: CudaBuffer) -> NDArray[Any]:
        """See :meth:`unetrt.device.Device.download`: into a page-locked array reused for this buffer."""
        host = cast(NDArray[Any], self._cached(("download", buffer.ptr, buffer.shape, buffer.dtype.str),
                                             lambda: self.driver.pinned(buffer.shape, buffer.dtype)))
        self.driver.download(host, buffer.ptr, self.stream)
        return host

    def launch(self, key: object, enqueue: Callable[[], None]) -> None:
        """See :meth:`unetrt.device.Device.launch`: the first call of a key runs ``enqueue`` (the warm-up the
        backend needs), the second captures it into a CUDA graph, later ones replay the graph; when capture
        fails, that key runs without graphs (one warning) and the frame is still segmented."""
        self._graphs.run(cast(Hashable, key), self.stream, enqueue)

    def synchronize(self) -> None:
        """See :meth:`unetrt.device.Device.synchronize`."""
        self.driver.synchronize(self.stream)

    def release(self) -> None:
        """See :meth:`unetrt.device.Device.release`: waits for the stream, then drops the graph and frees every
        cached buffer (the context is current here); the retained context goes when the session ends."""
        self.driver.synchronize(self.stream)
        self._graphs.clear()
        while self._cache:
            self._free(self._cache.popitem()[1])
        self.driver.release()


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
    """:class:`CudaDriver` on pycuda (memory, in the device's primary context) and the driver library (copies
    on a raw stream handle, graphs).

    Args:
        ordinal: the CUDA device index.

    Raises:
        ImportError: when pycuda is missing (with the install hint).
    """

    def __init__(self, ordinal: int = 0) -> None:
        cuda.require_pycuda()
        self.ordinal = ordinal
        self._context: PrimaryContext | None = None
        self._release_after_session = False
        self.integrated = self._primary().integrated

    def _primary(self) -> PrimaryContext:
        if self._context is None:
            self._context = PrimaryContext(self.ordinal)
        return self._context

    @contextmanager
    def _active(self) -> Iterator[None]:
        with self._primary().active():
            yield
        if self._release_after_session and self._context is not None:
            self._context.release()
            self._context = None
            self._release_after_session = False

    def session(self) -> AbstractContextManager[None]:
        """See :meth:`CudaDriver.session`: the device's primary context, retained through pycuda and pushed."""
        return self._active()

    def release(self) -> None:
        """See :meth:`CudaDriver.release`."""
        self._release_after_session = True

    def _check(self, status: int, what: str) -> None:
        cuda.check(status, what)

    def allocate(self, nbytes: int) -> tuple[int, object]:
        """See :meth:`CudaDriver.allocate`."""
        import pycuda.driver as pycuda

        with cuda.gpu_resources(f"{nbytes / 2**20:.1f} MiB of the frame path's device buffers"):
            allocation = pycuda.mem_alloc(nbytes)
        return int(allocation), allocation

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
        """See :meth:`CudaDriver.pinned`."""
        import pycuda.driver as pycuda

        with cuda.gpu_resources("the frame path's page-locked host buffers"):
            return cast(NDArray[Any], pycuda.pagelocked_empty(shape, dtype))

    def mapped(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[NDArray[Any], int]:
        """See :meth:`CudaDriver.mapped`: page-locked memory allocated with CU_MEMHOSTALLOC_DEVICEMAP."""
        import pycuda.driver as pycuda

        with cuda.gpu_resources("the frame path's mapped host buffers"):
            host = pycuda.pagelocked_empty(shape, dtype, mem_flags=pycuda.host_alloc_flags.DEVICEMAP)
            return cast(NDArray[Any], host), int(host.base.get_device_pointer())

    def free(self, memory: object) -> None:
        """See :meth:`CudaDriver.free`."""
        if isinstance(memory, np.ndarray):
            cast(Any, memory.base).free()
        else:
            cast(Any, memory).free()

    def _lib(self) -> Any:
        return cuda.driver_library()

    def upload(self, dst: int, src: NDArray[Any], stream: int) -> None:
        """See :meth:`CudaDriver.upload`."""
        self._check(self._lib().cuMemcpyHtoDAsync_v2(ctypes.c_uint64(dst), ctypes.c_void_p(src.ctypes.data),
                                                     ctypes.c_size_t(src.nbytes), ctypes.c_void_p(stream)),
                    "cuMemcpyHtoDAsync")

    def download(self, dst: NDArray[Any], src: int, stream: int) -> None:
        """See :meth:`CudaDriver.download`."""
        self._check(self._lib().cuMemcpyDtoHAsync_v2(ctypes.c_void_p(dst.ctypes.data), ctypes.c_uint64(src),
                                                     ctypes.c_size_t(dst.nbytes), ctypes.c_void_p(stream)),
                    "cuMemcpyDtoHAsync")

    def copy_2d(self, dst: int, dst_pitch: int, src: int, src_pitch: int, width_bytes: int, height: int,
                stream: int) -> None:
        """See :meth:`CudaDriver.copy_2d`."""
        copy = _Memcpy2D(srcMemoryType=_MEMORY_DEVICE, srcDevice=src, srcPitch=src_pitch,
                         dstMemoryType=_MEMORY_DEVICE, dstDevice=dst, dstPitch=dst_pitch,
                         WidthInBytes=width_bytes, Height=height)
        self._check(self._lib().cuMemcpy2DAsync_v2(ctypes.byref(copy), ctypes.c_void_p(stream)), "cuMemcpy2DAsync")

    def zero(self, dst: int, nbytes: int, stream: int) -> None:
        """See :meth:`CudaDriver.zero`."""
        self._check(self._lib().cuMemsetD8Async(ctypes.c_uint64(dst), ctypes.c_ubyte(0), ctypes.c_size_t(nbytes),
                                                ctypes.c_void_p(stream)), "cuMemsetD8Async")

    def synchronize(self, stream: int) -> None:
        """See :meth:`CudaDriver.synchronize`."""
        self._check(self._lib().cuStreamSynchronize(ctypes.c_void_p(stream)), "cuStreamSynchronize")

    def capture(self, stream: int, enqueue: Callable[[], None]) -> Graph | None:
        """See :meth:`CudaDriver.capture`."""
        return cuda.DriverGraph.capture(stream, enqueue)
