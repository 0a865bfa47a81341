"""TensorRT backend: runs a ``.plan`` built by ``unet-build`` through pycuda buffers and one CUDA stream.

TensorRT and pycuda are imported lazily, so this module imports anywhere; the
backend itself needs both and an NVIDIA GPU.

CUDA context: the backend adopts the pycuda context current on the calling
thread when there is one (the caller keeps owning it); otherwise it retains the
device's primary context, the one the CUDA runtime, PyTorch and CuPy use, so
device arrays from those libraries can be passed to :meth:`TensorRTBackend.infer_device`.
It pushes that context around every CUDA call and pops it afterwards, and
releases what it retained in :meth:`TensorRTBackend.close`. It never uses
``pycuda.autoinit``.

Thread safety: one backend owns one execution context, one stream and one set of
buffers. Its methods lock, so one backend may be shared between threads, but
calls then run one after another. To run inference concurrently, open one
backend per thread: each gets its own execution context and stream.
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..plan_metadata import (
    GpuIdentity,
    PlanMetadata,
    ShapeProfile,
    check_compatibility,
    format_shape,
    read_plan_metadata,
)
from .base import check_batch

if TYPE_CHECKING:
    import tensorrt as trt

MISSING_TENSORRT = (
    "TensorRT is not installed: on a Jetson install JetPack 6 (it ships TensorRT 10 with its Python bindings); "
    "elsewhere run `pip install tensorrt pycuda` (or `pip install 'unetrt[tensorrt]'`)"
)
MISSING_PYCUDA = (
    "pycuda is not installed: run `pip install pycuda` (it builds against the CUDA toolkit; on a Jetson use "
    "the one from JetPack) to run TensorRT engines"
)
# CUstreamCaptureMode: capture only this thread's CUDA calls, so other threads' work cannot break it.
_CAPTURE_MODE_THREAD_LOCAL = 1


def tensorrt_available() -> bool:
    """Whether the TensorRT Python bindings can be imported (typing stubs alone do not count)."""
    try:
        require_tensorrt()
    except ImportError:
        return False
    return True


def require_tensorrt() -> None:
    """Raise the one-line install hint unless ``import tensorrt`` gives the real bindings.

    ``tensorrt-stubs`` installs a ``tensorrt/`` folder of ``.pyi`` files only, which
    Python imports as an empty namespace package; that is treated as not installed.

    Raises:
        ImportError: with :data:`MISSING_TENSORRT`.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise ImportError(MISSING_TENSORRT) from exc
    if getattr(tensorrt, "__version__", None) is None:
        raise ImportError(MISSING_TENSORRT)


def require_pycuda() -> None:
    """Raise an install hint unless pycuda's driver module imports.

    Raises:
        ImportError: with :data:`MISSING_PYCUDA`.
    """
    try:
        import pycuda.driver  # noqa: F401
    except ImportError as exc:
        raise ImportError(MISSING_PYCUDA) from exc


def tensorrt_major(version: str) -> int:
    """Major version of a TensorRT version string ('10.3.0' -> 10).

    Raises:
        ValueError: when the string does not start with a number.
    """
    head = version.split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"cannot read the TensorRT version {version!r}")
    return int(head)


def parse_device(device: str) -> int:
    """'auto', 'cuda' or 'cuda:N' -> the CUDA device index.

    Raises:
        ValueError: for 'cpu' (TensorRT runs on GPUs only) or an unknown spelling.

    Example:
        >>> parse_device("cuda:1")
        1
    """
    if device in ("auto", "cuda"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    if device == "cpu":
        raise ValueError("TensorRT engines run on an NVIDIA GPU only; use the .onnx model for 'cpu'")
    raise ValueError(f"device must be 'auto', 'cuda' or 'cuda:N', got {device!r}")


def gpu_identity(index: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device ``index`` (needs pycuda; creates no context).

    Raises:
        ImportError: when pycuda is missing.
        ValueError: when there is no such device.
    """
    require_pycuda()
    import pycuda.driver as cuda

    cuda.init()
    count = cuda.Device.count()
    if not 0 <= index < count:
        raise ValueError(f"CUDA device {index} does not exist; this machine has {count} CUDA device(s)")
    device = cuda.Device(index)
    major, minor = device.compute_capability()
    return GpuIdentity(str(device.name()), (int(major), int(minor)))


def _driver_library() -> ctypes.CDLL:
    return ctypes.CDLL("libcuda.so.1")


def _release_primary_context(context: Any, ordinal: int, owner_thread: int) -> None:
    """Release a primary context retained through pycuda, leaving the thread's context stack as it was."""
    driver = _driver_library()
    context.detach()
    if threading.get_ident() == owner_thread:
        # pycuda releases a primary context by pushing it and calling cuDevicePrimaryCtxRelease, which (unlike
        # cuCtxDetach) does not pop it: pop it here, or the thread keeps a possibly destroyed context current.
        driver.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
    else:
        # pycuda only releases on the thread that retained the context; release it here through the driver.
        device = ctypes.c_int()
        if driver.cuDeviceGet(ctypes.byref(device), ctypes.c_int(ordinal)) == 0:
            driver.cuDevicePrimaryCtxRelease_v2(device)


class _DriverGraph:
    """A CUDA graph captured from one stream, through the driver library (pycuda has no graph API)."""

    def __init__(self, driver: ctypes.CDLL, graph: ctypes.c_void_p, graph_exec: ctypes.c_void_p) -> None:
        self._driver = driver
        self._graph = graph
        self._exec = graph_exec

    @classmethod
    def capture(cls, stream_handle: int, enqueue: Any) -> _DriverGraph | None:
        """Capture what ``enqueue()`` puts on the stream; None when it returns False or capture fails."""
        driver = _driver_library()
        stream = ctypes.c_void_p(stream_handle)
        if driver.cuStreamBeginCapture_v2(stream, ctypes.c_int(_CAPTURE_MODE_THREAD_LOCAL)) != 0:
            return None
        enqueued = False
        try:
            enqueued = bool(enqueue())
        finally:
            # Capture must end on the same thread even when enqueueing raised, or the stream stays unusable.
            graph = ctypes.c_void_p()
            ended = driver.cuStreamEndCapture(stream, ctypes.byref(graph)) == 0
        if not (enqueued and ended and graph.value):
            if graph.value:
                driver.cuGraphDestroy(graph)
            return None
        graph_exec = ctypes.c_void_p()
        if driver.cuGraphInstantiateWithFlags(ctypes.byref(graph_exec), graph, ctypes.c_ulonglong(0)) != 0:
            driver.cuGraphDestroy(graph)
            return None
        return cls(driver, graph, graph_exec)

    def launch(self, stream_handle: int) -> None:
        """Replay the graph on the stream.

        Raises:
            RuntimeError: when the driver refuses the launch.
        """
        status = self._driver.cuGraphLaunch(self._exec, ctypes.c_void_p(stream_handle))
        if status != 0:
            raise RuntimeError(f"cuGraphLaunch failed with CUDA error {status}")

    def destroy(self) -> None:
        """Free the graph (idempotent; the owning context must be current)."""
        if self._exec.value:
            self._driver.cuGraphExecDestroy(self._exec)
            self._exec = ctypes.c_void_p()
        if self._graph.value:
            self._driver.cuGraphDestroy(self._graph)
            self._graph = ctypes.c_void_p()


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def _cuda_array_info(array: Any, what: str) -> tuple[int, tuple[int, ...], np.dtype[Any], Any]:
    interface = getattr(array, "__cuda_array_interface__", None)
    if not isinstance(interface, dict):
        raise ValueError(
            f"{what} must be a CUDA device array with __cuda_array_interface__ (torch.Tensor on cuda, CuPy, "
            f"pycuda GPUArray), got {type(array).__name__}"
        )
    shape = tuple(int(d) for d in interface["shape"])
    dtype = np.dtype(interface["typestr"])
    strides = interface.get("strides")
    if strides is not None:
        expected = tuple(int(s) * dtype.itemsize for s in np.cumprod((1, *shape[:0:-1]))[::-1])
        if tuple(int(s) for s in strides) != expected:
            raise ValueError(f"{what} must be C-contiguous; call .contiguous() (torch) or cupy.ascontiguousarray")
    pointer, read_only = interface["data"]
    if read_only and what == "out":
        raise ValueError("out is a read-only device array; pass a writable one")
    return int(pointer), shape, dtype, interface.get("stream")


class TensorRTBackend:
    """Runs a TensorRT plan written by ``unet-build``.

    Args:
        path: the ``.plan`` file; ``PATH.json`` (written by unet-build) must lie beside it.
        device: 'auto', 'cuda' or 'cuda:N'.
        cuda_graph: replay a CUDA graph once the same input shape comes twice in a row
            (the first run of a shape is the warm-up); falls back to plain enqueueing when capture fails.

    Attributes:
        max_input_hw: largest (height, width) of the engine's optimisation profile.
        max_batch: largest batch of the profile.
        profile: the whole profile (min, opt, max shapes).
        metadata: what the plan was built from and where.

    Raises:
        FileNotFoundError: when the plan or its metadata is missing.
        ImportError: when TensorRT or pycuda is not installed.
        PlanCompatibilityError: when the plan was built with another TensorRT or for another GPU architecture.
        ValueError: when the plan does not deserialise or does not look like a unetrt U-Net.

    Example:
        >>> with TensorRTBackend("unet.plan") as backend:  # doctest: +SKIP
        ...     logits = backend.infer(batch)
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "auto", cuda_graph: bool = True) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TensorRT plan {str(path)!r} does not exist")
        index = parse_device(device)
        self.path = path
        self.metadata: PlanMetadata = read_plan_metadata(path)
        self.info = self.metadata.info
        self.precision = self.metadata.precision
        require_tensorrt()
        require_pycuda()
        import pycuda.driver as cuda
        import tensorrt as trt

        # Compare the metadata with this machine before TensorRT sees the plan: a plan from another
        # TensorRT version or GPU architecture fails to deserialise with a far less helpful message.
        gpu = gpu_identity(index)
        check_compatibility(self.metadata, trt.__version__, gpu, path)
        self.device = f"cuda:{index} ({gpu.name})"
        self.cuda_graph = cuda_graph
        self._lock = threading.Lock()
        self._closed = False
        adopted = cuda.Context.get_current()
        if adopted is not None and adopted.get_device() != cuda.Device(index):
            raise ValueError(
                f"the current pycuda context is on another device than {device!r}; "
                "open the backend with the matching device or from a thread without that context"
            )
        self._owns_cuda_context = adopted is None
        self._ordinal = index
        self._owner_thread = threading.get_ident()
        self._cuda_context = cuda.Device(index).retain_primary_context() if adopted is None else adopted
        self._graph: _DriverGraph | None = None
        self._graph_failed = False
        self._runs_of_shape = 0
        self._shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] = ()
        try:
            with self._active():
                self._open_engine()
        except BaseException:
            self._release()
            raise

    # --- setup -------------------------------------------------------------------------------------------

    def _open_engine(self) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ValueError(
                f"TensorRT could not deserialise {str(self.path)!r} (corrupt, or built by another TensorRT); "
                f"rebuild it with: {self.metadata.rebuild_command(self.path)}"
            )
        self._engine: trt.ICudaEngine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{str(self.path)!r} has inputs {inputs} and outputs {outputs}; a unetrt U-Net has one of each"
            )
        self._input, self._output = inputs[0], outputs[0]
        # tensorrt-stubs leave nptype unannotated.
        input_type = trt.nptype(engine.get_tensor_dtype(self._input))  # type: ignore[no-untyped-call]
        output_type = trt.nptype(engine.get_tensor_dtype(self._output))  # type: ignore[no-untyped-call]
        self._input_dtype: np.dtype[Any] = np.dtype(input_type)
        self._output_dtype: np.dtype[Any] = np.dtype(output_type)
        low, opt, high = (_dims(dims) for dims in engine.get_tensor_profile_shape(self._input, 0))
        self.profile = ShapeProfile.from_dict({"min": low, "opt": opt, "max": high})
        self.max_input_hw: tuple[int, int] | None = self.profile.max_input_hw
        self.max_batch: int | None = self.profile.max_batch
        context = engine.create_execution_context()
        if context is None:
            raise ValueError(f"TensorRT could not create an execution context for {str(self.path)!r} (GPU memory?)")
        self._context: trt.IExecutionContext = context
        self._stream = cuda.Stream()
        if not self._context.set_input_shape(self._input, self.profile.max):
            raise ValueError(f"the engine rejects its own largest profile shape {format_shape(self.profile.max)}")
        max_out = _dims(self._context.get_tensor_shape(self._output))
        in_size = int(np.prod(self.profile.max))
        out_size = int(np.prod(max_out))
        self._host_in: np.ndarray = cuda.pagelocked_empty(in_size, self._input_dtype)
        self._host_out: np.ndarray = cuda.pagelocked_empty(out_size, self._output_dtype)
        self._device_in = cuda.mem_alloc(max(1, self._host_in.nbytes))
        self._device_out = cuda.mem_alloc(max(1, self._host_out.nbytes))
        self._bind_own_buffers()

    def _bind_own_buffers(self) -> None:
        if not (self._context.set_tensor_address(self._input, int(self._device_in))
                and self._context.set_tensor_address(self._output, int(self._device_out))):
            raise RuntimeError("TensorRT refused the backend's own device buffers")

    @contextmanager
    def _active(self) -> Iterator[None]:
        import pycuda.driver as cuda

        self._cuda_context.push()
        try:
            yield
        finally:
            cuda.Context.pop()

    # --- inference ---------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this backend is closed; open a new one")

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        self.profile.check_shape(shape)
        if shape == self._shape:
            self._runs_of_shape += 1
            return
        if not self._context.set_input_shape(self._input, shape):
            raise ValueError(f"TensorRT rejected input shape {format_shape(shape)}")
        self._out_shape = _dims(self._context.get_tensor_shape(self._output))
        self._shape = shape
        self._runs_of_shape = 1
        self._drop_graph()

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None

    def _enqueue(self) -> bool:
        return bool(self._context.execute_async_v3(self._stream.handle))

    def _execute(self, use_graph: bool) -> None:
        if use_graph and self.cuda_graph and not self._graph_failed:
            # The first run of a shape is the warm-up TensorRT needs before capture; capture on the second.
            if self._graph is None and self._runs_of_shape >= 2:
                self._graph = _DriverGraph.capture(self._stream.handle, self._enqueue)
                if self._graph is None:
                    self._graph_failed = True
                    warnings.warn(f"CUDA graph capture failed for {self.path.name}; running without graphs",
                                  RuntimeWarning, stacklevel=3)
            if self._graph is not None:
                self._graph.launch(self._stream.handle)
                return
        if not self._enqueue():
            raise RuntimeError(f"TensorRT failed to enqueue inference for shape {format_shape(self._shape or ())}")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x C x H x W float32 (normalised, legal H and W) -> N x K x h x w float32 logits.

        Raises:
            ValueError: on a malformed batch, a shape outside the engine's profile, or after :meth:`close`.
        """
        import pycuda.driver as cuda

        batch = check_batch(batch, self.info)
        shape = tuple(int(d) for d in batch.shape)
        with self._lock:
            self._check_open()
            with self._active():
                self._set_shape(shape)
                host_in = self._host_in[: batch.size].reshape(shape)
                np.copyto(host_in, batch, casting="same_kind")
                host_out = self._host_out[: int(np.prod(self._out_shape))].reshape(self._out_shape)
                cuda.memcpy_htod_async(self._device_in, host_in, self._stream)
                self._execute(use_graph=True)
                cuda.memcpy_dtoh_async(host_out, self._device_out, self._stream)
                self._stream.synchronize()
                return host_out.astype(np.float32, copy=True)

    def infer_device(self, images: Any, out: Any = None) -> Any:
        """Run on a batch already on the GPU, without copying it through the host.

        Args:
            images: a C-contiguous N x C x H x W device array exposing ``__cuda_array_interface__``
                (a CUDA ``torch.Tensor``, a CuPy array, a pycuda ``GPUArray``) of the engine's input dtype,
                on this backend's device.
            out: optional device array of the output shape and dtype to write the logits into.

        Returns:
            ``out`` when given (filled when this returns), else the logits as a float32 numpy array.

        Raises:
            ValueError: on a non-device array, a wrong dtype, layout or shape, or after :meth:`close`.
        """
        import pycuda.driver as cuda

        pointer, shape, dtype, producer_stream = _cuda_array_info(images, "images")
        if len(shape) != 4 or shape[1] != self.info.in_channels:
            raise ValueError(f"images must be N x {self.info.in_channels} x H x W, got shape {shape}")
        if dtype != self._input_dtype:
            raise ValueError(f"images must have dtype {self._input_dtype} (the engine's input), got {dtype}")
        with self._lock:
            self._check_open()
            with self._active():
                self._set_shape(shape)
                if producer_stream not in (None, 1):
                    # The producer's stream is neither absent nor the legacy default stream (which our blocking
                    # stream already waits for): wait for all queued work so the input is complete.
                    cuda.Context.synchronize()
                out_pointer = int(self._device_out)
                if out is not None:
                    out_pointer, out_shape, out_dtype, _ = _cuda_array_info(out, "out")
                    if out_shape != self._out_shape or out_dtype != self._output_dtype:
                        raise ValueError(
                            f"out must have shape {self._out_shape} and dtype {self._output_dtype}, "
                            f"got {out_shape} {out_dtype}"
                        )
                try:
                    self._context.set_tensor_address(self._input, pointer)
                    self._context.set_tensor_address(self._output, out_pointer)
                    # The captured graph holds the backend's own buffer addresses: enqueue directly.
                    self._execute(use_graph=False)
                finally:
                    self._bind_own_buffers()
                if out is not None:
                    self._stream.synchronize()
                    return out
                host_out = self._host_out[: int(np.prod(self._out_shape))].reshape(self._out_shape)
                cuda.memcpy_dtoh_async(host_out, self._device_out, self._stream)
                self._stream.synchronize()
                return host_out.astype(np.float32, copy=True)

    # --- device entry (the GPU-resident frame path) -------------------------------------------------------

    capturable = True

    @property
    def input_dtype(self) -> np.dtype[Any]:
        """The engine's input dtype (float32, or float16 for an FP16-input engine)."""
        return self._input_dtype

    @property
    def output_dtype(self) -> np.dtype[Any]:
        """The engine's output dtype."""
        return self._output_dtype

    @contextmanager
    def device_session(self) -> Iterator[int]:
        """Hold the backend's lock with its CUDA context current; yields its stream's handle.

        Raises:
            ValueError: after :meth:`close`.
        """
        with self._lock:
            self._check_open()
            with self._active():
                yield int(self._stream.handle)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The logits' shape for an input shape (inside :meth:`device_session`).

        Raises:
            ValueError: on a shape outside the engine's profile.
        """
        self._set_shape(tuple(int(d) for d in input_shape))
        return self._out_shape

    def enqueue(self, input_ptr: int, input_shape: tuple[int, ...], output_ptr: int, stream: int) -> None:
        """Queue the engine on ``stream`` from and into device buffers (inside :meth:`device_session`); the
        frame path captures it into its own CUDA graph, so the backend's graph is not used here.

        Raises:
            ValueError: on a shape outside the engine's profile.
            RuntimeError: when TensorRT refuses the buffers or the launch.
        """
        self._set_shape(tuple(int(d) for d in input_shape))
        try:
            if not (self._context.set_tensor_address(self._input, input_ptr)
                    and self._context.set_tensor_address(self._output, output_ptr)):
                raise RuntimeError("TensorRT refused the frame path's device buffers")
            if not self._context.execute_async_v3(stream):
                raise RuntimeError(f"TensorRT failed to enqueue inference for shape {format_shape(input_shape)}")
        finally:
            self._bind_own_buffers()

    # --- teardown ----------------------------------------------------------------------------------------

    def _release(self) -> None:
        import pycuda.driver as cuda

        self._cuda_context.push()
        try:
            self._drop_graph()
            for name in ("_device_in", "_device_out"):
                allocation = self.__dict__.pop(name, None)
                if allocation is not None:
                    allocation.free()
            for name in ("_host_in", "_host_out"):
                array = self.__dict__.pop(name, None)
                if array is not None:
                    array.base.free()
            # TensorRT objects free device memory when destroyed: children before parents, context current.
            for name in ("_context", "_stream", "_engine", "_runtime"):
                self.__dict__.pop(name, None)
        finally:
            cuda.Context.pop()
            if self._owns_cuda_context:
                _release_primary_context(self._cuda_context, self._ordinal, self._owner_thread)

    def close(self) -> None:
        """Free the engine, buffers, stream and CUDA graph; release the retained context (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
