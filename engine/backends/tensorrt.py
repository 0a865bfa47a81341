"""TensorRT backend: runs a ``.plan`` built by ``unet-build`` through pycuda buffers and one CUDA stream.

TensorRT and pycuda are imported lazily, so this module imports anywhere; the
backend itself needs both and an NVIDIA GPU.

CUDA context: the backend retains the device's primary context (the one the CUDA
runtime, PyTorch and CuPy use, so their device arrays can be passed to
:meth:`TensorRTBackend.infer_device`), pushes it around every CUDA call and
releases it in :meth:`TensorRTBackend.close` (:class:`unetrt.cuda.PrimaryContext`).
A context another library made current (``pycuda.autoinit``) is never adopted.

Execution contexts: one runs :meth:`TensorRTBackend.infer` and
:meth:`TensorRTBackend.infer_device`, another the device entry of the
GPU-resident frame path, so that neither changes the input shape a CUDA graph of
the other was captured with. Each holds the engine's activation memory, so the
one made at open goes to whichever is used first and the other is made only
when it is used too: a Segmenter on either path holds one.

Thread safety: one backend owns its execution contexts, one stream and one set of
buffers. Its methods lock, so one backend may be shared between threads, but
calls then run one after another. To run inference concurrently, open one
backend per thread: each gets its own execution contexts and stream.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import re
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..cuda import (
    MISSING_PYCUDA,
    STREAM_LEGACY,
    STREAM_NON_BLOCKING,
    DriverGraph,
    GpuResourceError,
    GraphCache,
    PrimaryContext,
    allocation_refused,
    check_device_exists,
    cuda_ordinal,
    gpu_resources,
    read_cuda_array,
    require_pycuda,
    start_cuda,
    synchronize_stream,
)
from ..dropped import release_when_dropped
from ..paths import check_file
from ..plan_metadata import (
    GpuIdentity,
    PlanCompatibilityError,
    PlanMetadata,
    ShapeProfile,
    check_compatibility,
    format_shape,
    read_plan_metadata,
    warn_if_model_changed,
)
from .base import check_batch, check_precision, network_output_shape

if TYPE_CHECKING:
    import tensorrt as trt

    from .registry import OpenRequest

MISSING_TENSORRT = (
    "TensorRT is not installed: on a Jetson install JetPack 6.1 or newer (it ships TensorRT with its Python "
    "bindings); elsewhere run `pip install tensorrt pycuda` (or `pip install 'unetrt[tensorrt]'`)"
)
# A plan that fails to load while less memory is free than its size plus this is taken for a GPU short of memory,
# not a damaged plan (TensorRT gives no figure for what loading takes besides the weights).
DESERIALIZE_HEADROOM = 256 << 20
# The NVIDIA driver each CUDA major version of TensorRT's wheels needs: "r580+ on Linux and Windows for the CUDA 13.x
# packages and wheels. The lower r535+ on Linux ... applies to the CUDA 12.x packages and wheels" (TensorRT 11.5.0
# installation guide, "Prerequisites").
DRIVER_FOR_CUDA = {13: "r580", 12: "r535"}
# NVIDIA's TensorRT wheels (TensorRT installation guide, "Python Package Index"): `tensorrt` installs the CUDA 13
# variant, `tensorrt-cu13-libs` (the libraries) and `tensorrt-cu13-bindings` (the `tensorrt` module); `tensorrt-lean`
# and `tensorrt-dispatch` install runtimes that only load prebuilt engines, as the modules `tensorrt_lean` and
# `tensorrt_dispatch`. The group `cuda` is the CUDA major version a wheel is built for.
_TENSORRT_WHEEL = re.compile(r"tensorrt(?:-(?P<runtime>lean|dispatch))?(?:-cu(?P<cuda>\d+))?(?:-(?:bindings|libs))?")
__all__ = ["MISSING_PYCUDA", "MISSING_TENSORRT", "EngineResourceError", "TensorRTBackend", "TensorRTResidentBatch",
           "gpu_identity", "parse_device", "require_pycuda", "require_tensorrt", "start_tensorrt",
           "tensorrt_available", "tensorrt_installed", "tensorrt_logger", "tensorrt_major", "tensorrt_wheels"]
T = TypeVar("T")


class EngineResourceError(GpuResourceError):
    """The plan is fine but the GPU cannot run it now: no device memory left for its weights, execution context or
    buffers, or CUDA would not start under TensorRT. A cached engine must not be discarded and rebuilt for it."""


def tensorrt_available() -> bool:
    """Whether the TensorRT Python bindings can be imported (typing stubs alone do not count)."""
    try:
        import tensorrt
    except ImportError:
        return False
    return getattr(tensorrt, "__version__", None) is not None


def tensorrt_installed() -> bool:
    """Whether a TensorRT package is installed, whether or not ``import tensorrt`` works: ``tensorrt`` (typing stubs
    alone do not count: their folder has no ``__init__.py`` and imports as a namespace package, whose spec has no
    origin), or only the lean or dispatch runtime (``tensorrt_lean``, ``tensorrt_dispatch``)."""
    for module in ("tensorrt", "tensorrt_lean", "tensorrt_dispatch"):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec (the test fakes)
            continue
        if spec is not None and spec.origin is not None:
            return True
    return False


def tensorrt_wheels() -> dict[str, str]:
    """The installed distributions of NVIDIA's TensorRT pip wheels, by normalised name, with their versions:
    ``tensorrt``, ``tensorrt-cu13`` and its ``-bindings`` and ``-libs`` (``tensorrt-libs``, ``tensorrt-bindings``
    in older releases), ``tensorrt-lean`` and ``tensorrt-dispatch`` and theirs. Empty where TensorRT came otherwise
    (JetPack's Debian packages, a tar file).

    Example:
        >>> tensorrt_wheels()  # doctest: +SKIP
        {'tensorrt': '11.0.0', 'tensorrt-cu13': '11.0.0', 'tensorrt-cu13-bindings': '11.0.0', ...}
    """
    found = {}
    for distribution in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", str(distribution.metadata["Name"] or "")).lower()
        if _TENSORRT_WHEEL.fullmatch(name):
            found[name] = str(distribution.version)
    return found


def _full_wheels(wheels: dict[str, str]) -> dict[str, str]:
    """The wheels of ``wheels`` (:func:`tensorrt_wheels`) that make the full TensorRT, the ``tensorrt`` module unetrt
    imports and builds with: not the lean or dispatch runtimes, whose libraries it never loads."""
    return {name: version for name, version in wheels.items()
            if (match := _TENSORRT_WHEEL.fullmatch(name)) is not None and not match["runtime"]}


def _cuda_majors(wheels: dict[str, str]) -> set[int]:
    """The CUDA major versions named by ``wheels`` (``tensorrt-cu13-libs``: 13); the bare ``tensorrt`` names none."""
    return {int(match["cuda"]) for name in wheels
            if (match := _TENSORRT_WHEEL.fullmatch(name)) is not None and match["cuda"]}


def _not_importing(reason: ImportError | None) -> str:
    """The line for an ``import tensorrt`` that failed: the install hint where none is installed, else what is
    installed, why it does not import and the reinstall (``pip install tensorrt-cu13-bindings`` alone, or a
    ``tensorrt-cu13-libs`` removed or of another version, leaves bindings that cannot load ``libnvinfer``; "not
    installed" sent the user to a pip that answered "Requirement already satisfied")."""
    if not tensorrt_installed():
        return MISSING_TENSORRT
    wheels = tensorrt_wheels()
    full = _full_wheels(wheels)
    # The full wheels' CUDA is the one to reinstall (a lean runtime of another CUDA beside them is not what fails);
    # with the runtime alone, the full package of the CUDA it was installed for.
    majors = _cuda_majors(full or wheels)
    package = f"tensorrt-cu{majors.pop()}" if len(majors) == 1 else "tensorrt"
    versions = set(full.values())
    pinned = f"{package}=={versions.pop()}" if len(versions) == 1 else package
    if not full:
        # `pip install tensorrt-lean` (NVIDIA: "Install only the lean runtime for running pre-built engines") gives
        # no `tensorrt` module: it loads only engines built version-compatible, and builds none.
        found = ", ".join(f"{name} {version}" for name, version in sorted(wheels.items()))
        return (f"TensorRT's full package is not installed, only its runtime for prebuilt engines ({found}), which "
                f"builds no engine and loads only version-compatible ones; install the full one: pip install {pinned}")
    found = ", ".join(f"{name} {version}" for name, version in sorted(full.items()))
    why = "typing stubs in its place" if reason is None else " ".join(str(reason).split())
    return (f"TensorRT is installed ({found}) but does not import ({why}): its libraries "
            f"are missing or of another version; reinstall them together: pip install --force-reinstall {pinned}")


def require_tensorrt() -> None:
    """Raise the one-line install hint unless ``import tensorrt`` gives the real bindings.

    ``tensorrt-stubs`` installs a ``tensorrt/`` folder of ``.pyi`` files only, which
    Python imports as an empty namespace package; that is treated as not installed.

    Raises:
        ImportError: with :data:`MISSING_TENSORRT`, or, for a TensorRT that is installed but does not import, why
            and the reinstall.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise ImportError(_not_importing(exc)) from exc
    if getattr(tensorrt, "__version__", None) is None:
        raise ImportError(_not_importing(None))


def tensorrt_major(version: str) -> int:
    """Major version of a TensorRT version string ('10.3.0' -> 10).

    Raises:
        ValueError: when the string does not start with a number.
    """
    head = version.split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"cannot read the TensorRT version {version!r}")
    return int(head)


def tensorrt_release(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a TensorRT version string, for comparing releases; missing parts are 0.

    Example:
        >>> tensorrt_release("10.3.0.26"), tensorrt_release("11.4")
        ((10, 3, 0), (11, 4, 0))
    """
    numbers = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits) if digits else 0)
    major, minor, patch = (*numbers, 0, 0, 0)[:3]
    return major, minor, patch


def parse_device(device: str) -> int:
    """'auto', 'cuda' or 'cuda:N' -> the CUDA device index.

    Raises:
        ValueError: for 'cpu' (TensorRT runs on GPUs only) or an unknown spelling.

    Example:
        >>> parse_device("cuda:1")
        1
    """
    if device == "cpu":
        raise ValueError("TensorRT engines run on an NVIDIA GPU only; use the .onnx model for 'cpu'")
    if device != "auto" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"device must be 'auto', 'cuda' or 'cuda:N', got {device!r}")
    return cuda_ordinal(device)


_LOGGERS: weakref.WeakKeyDictionary[ModuleType, Any] = weakref.WeakKeyDictionary()
_LOGGERS_LOCK = threading.Lock()


def tensorrt_logger() -> Any:
    """The process's one TensorRT logger (WARNING and above), which every Runtime and Builder shares.

    TensorRT's Logger documentation: "the logger is internally considered a singleton, and thus multiple instances
    of Runtime and/or Builder must all use the same logger"; the Developer Guide's "Thread Safety" says the same
    for threads that each build or run engines.

    Example:
        >>> runtime = trt.Runtime(tensorrt_logger())  # doctest: +SKIP
    """
    import tensorrt as trt

    with _LOGGERS_LOCK:
        logger = _LOGGERS.get(trt)
        if logger is None:
            logger = _LOGGERS[trt] = trt.Logger(trt.Logger.WARNING)
        return logger


def start_tensorrt(factory: Callable[[Any], T]) -> T:
    """``trt.Runtime`` or ``trt.Builder`` on :func:`tensorrt_logger`, with TensorRT's failure to start turned into
    a ValueError.

    When TensorRT cannot initialise CUDA (a driver older than the CUDA it was built for, a container without the
    GPU's libraries, no memory for a context) its constructors return null, which the Python bindings raise as
    ``TypeError: pybind11::init(): factory function returned nullptr``.

    Raises:
        ValueError: naming the failure and how to see why.

    Example:
        >>> runtime = start_tensorrt(trt.Runtime)  # doctest: +SKIP
    """
    try:
        return factory(tensorrt_logger())
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise  # a wrong call, not TensorRT failing to start
        older = _driver_older_than_the_wheels()
        if older is not None:
            raise ValueError(older) from exc
        raise ValueError(f"TensorRT could not start on this GPU ({exc}): CUDA failed to initialise under it; "
                         "`python -m unetrt.doctor` shows the driver, CUDA and TensorRT versions") from exc


def _driver_older_than_the_wheels() -> str | None:
    """Why TensorRT did not start, where its pip wheels are built for a newer CUDA major version than the NVIDIA driver
    supports (TensorRT logs only "CUDA initialization failure with error: 35", cudaErrorInsufficientDriver, which
    names neither the versions nor the fix); None otherwise."""
    import tensorrt as trt

    from ..cuda import cuda_driver_version

    driver = cuda_driver_version()
    needed = _cuda_majors(_full_wheels(tensorrt_wheels()))
    if driver is None or len(needed) != 1 or driver[0] >= min(needed):
        return None
    cuda = needed.pop()
    minimum = DRIVER_FOR_CUDA.get(cuda)
    other = (f", or put TensorRT's wheels for CUDA {driver[0]} in their place (uninstall tensorrt-cu{cuda}, "
             f"tensorrt-cu{cuda}-bindings and tensorrt-cu{cuda}-libs, then pip install tensorrt-cu{driver[0]})"
             if driver[0] in DRIVER_FOR_CUDA else "")
    return (f"TensorRT {trt.__version__} could not start: its wheels (tensorrt-cu{cuda}) are built for CUDA {cuda} "
            f"and this NVIDIA driver supports CUDA {driver[0]}.{driver[1]}; update the NVIDIA driver"
            f"{f' to {minimum} or newer' if minimum else ''}{other}")


def gpu_identity(index: int = 0) -> GpuIdentity:
    """Name, compute capability and multiprocessor count of CUDA device ``index`` (needs pycuda; creates no
    context).

    Raises:
        ImportError: when pycuda is missing.
        ValueError: when there is no such device, or CUDA does not start.
    """
    count = start_cuda()
    import pycuda.driver as cuda

    check_device_exists(index, count)
    device = cuda.Device(index)
    major, minor = device.compute_capability()
    multiprocessors = int(device.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT))
    return GpuIdentity(str(device.name()), (int(major), int(minor)), multiprocessors)


def machine_gpus() -> list[GpuIdentity]:
    """:func:`gpu_identity` of every CUDA device this process sees, in device order (``CUDA_VISIBLE_DEVICES``
    hides and renumbers them).

    Raises:
        ImportError: when pycuda is missing.
        ValueError: when CUDA does not start.
    """
    return [gpu_identity(index) for index in range(start_cuda())]


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


class _Execution:
    """One TensorRT execution context and the input shape it is set to; a shape change calls ``on_change`` (set
    by whoever claims the context: it drops the CUDA graph captured with the old shape)."""

    def __init__(self, context: trt.IExecutionContext, input_name: str, output_name: str,
                 profile: ShapeProfile) -> None:
        self.context = context
        self._input, self._output = input_name, output_name
        self._profile = profile
        self.on_change: Callable[[], None] = lambda: None
        self.shape: tuple[int, ...] | None = None
        self.out_shape: tuple[int, ...] = ()

    def set_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Set the input shape (when it differs); the output shape.

        Raises:
            ValueError: on a shape outside the profile.
        """
        self._profile.check_shape(shape)
        if shape != self.shape:
            self.on_change()
            if not self.context.set_input_shape(self._input, shape):
                raise ValueError(f"TensorRT rejected input shape {format_shape(shape)}")
            self.shape = shape
            self.out_shape = _dims(self.context.get_tensor_shape(self._output))
        return self.out_shape

    def bind(self, input_ptr: int, output_ptr: int, what: str) -> None:
        """Point the input and output at device buffers.

        Raises:
            ValueError: when TensorRT refuses an address (it takes 256-byte aligned ones only).
        """
        for name, pointer in ((self._input, input_ptr), (self._output, output_ptr)):
            if not self.context.set_tensor_address(name, pointer):
                raise ValueError(f"TensorRT refused {what} for {name!r} at {pointer:#x}: device buffers must start "
                                 "at a 256-byte aligned address (a fresh allocation, not an offset view)")

    def enqueue(self, stream: int) -> None:
        """Queue the engine on ``stream``.

        Raises:
            RuntimeError: when TensorRT refuses (e.g. the first enqueue after a shape change under capture).
        """
        if not self.context.execute_async_v3(stream):
            raise RuntimeError(f"TensorRT failed to enqueue inference for shape {format_shape(self.shape or ())}")


class _EngineResources:
    """What a :class:`TensorRTBackend` holds on the GPU, kept apart from the backend so that one dropped without
    ``close()`` is released on :mod:`unetrt.dropped`'s thread (a finalizer must not refer to its owner), with its
    CUDA context current and TensorRT's objects destroyed children first."""

    runtime: Any
    engine: trt.ICudaEngine
    stream: Any
    host_in: NDArray[Any]
    host_out: NDArray[Any]
    device_in: Any
    device_out: Any

    def __init__(self, cuda_context: PrimaryContext, what: str, graphs: bool) -> None:
        self.cuda_context = cuda_context
        self.graphs = GraphCache(lambda enqueue: DriverGraph.capture(self.stream.handle, enqueue), what,
                                 enabled=graphs)
        # infer's and the frame path's contexts, and the one made at open until either claims it.
        self.execution: _Execution | None = None
        self.device_execution: _Execution | None = None
        self.unclaimed: _Execution | None = None
        # The device buffers of each resident batch not yet dropped (TensorRTBackend.resident), by its key.
        self.resident: dict[int, list[Any]] = {}
        self.resident_keys = itertools.count()

    def release(self) -> None:
        """Free the buffers, the graph and the TensorRT objects, and release the retained context (idempotent; one
        interrupted by Ctrl-C keeps the context, and the next call frees what is left and releases it)."""
        if self.cuda_context.released:
            return
        try:
            with self.cuda_context.active():
                self.graphs.clear()
                for allocations in self.resident.values():
                    self._free_all(allocations)
                self.resident.clear()
                for name in ("device_in", "device_out"):
                    allocation = self.__dict__.pop(name, None)
                    if allocation is not None:
                        allocation.free()
                for name in ("host_in", "host_out"):
                    array = self.__dict__.pop(name, None)
                    if array is not None:
                        array.base.free()
                # TensorRT objects free device memory when destroyed: children before parents, context current.
                self.execution = self.device_execution = self.unclaimed = None
                for name in ("stream", "engine", "runtime"):
                    self.__dict__.pop(name, None)
        except Exception:
            self.cuda_context.release()  # a failed free must not keep the context retained as well
            raise
        self.cuda_context.release()

    def free_resident(self, key: int, lock: threading.Lock) -> None:
        """Free the buffers of the resident batch ``key``, under the backend's ``lock`` with the context current
        (nothing once :meth:`release` freed them all): the release of a batch dropped while its backend lives."""
        with lock:
            if self.cuda_context.released or key not in self.resident:
                return
            with self.cuda_context.active():
                self._free_all(self.resident[key])
            del self.resident[key]

    @staticmethod
    def _free_all(allocations: list[Any]) -> None:
        """Free pycuda allocations (with their context current); the list keeps those not freed yet, so a free
        interrupted by Ctrl-C is finished by the next call."""
        while allocations:
            allocations[-1].free()
            allocations.pop()


class TensorRTBackend:
    """Runs a TensorRT plan written by ``unet-build``.

    Args:
        path: the ``.plan`` file; ``PATH.json`` (written by unet-build) must lie beside it.
        device: 'auto', 'cuda' or 'cuda:N'.
        cuda_graph: replay a CUDA graph of :meth:`infer` once the same input shape comes twice in a row
            (the first run of a shape is the warm-up); falls back to plain enqueueing when capture fails.
        precision: the precision :func:`unetrt.backends.choose_model` chose ('auto': the plan's own, from its
            metadata); another one is refused.

    Attributes:
        max_input_hw: largest (height, width) of the engine's optimisation profile.
        min_input_hw: smallest (height, width) of the profile (the Segmenter mirror-pads smaller images up to it).
        max_batch: largest batch of the profile.
        profile: the whole profile (min, opt, max shapes).
        metadata: what the plan was built from and where.

    Raises:
        FileNotFoundError: when the plan or its metadata is missing.
        ImportError: when TensorRT or pycuda is not installed.
        PlanCompatibilityError: when the plan was built with another TensorRT, for another GPU architecture, or
            for a DLA core this device does not have.
        EngineResourceError, GpuResourceError: (ValueErrors) when the GPU has no memory left for the engine's
            weights, execution context, buffers or CUDA context, or TensorRT cannot start CUDA.
        ValueError: when the plan does not deserialise or does not look like a unetrt U-Net.

    Example:
        >>> with TensorRTBackend("unet.plan") as backend:  # doctest: +SKIP
        ...     logits = backend.infer(batch)
    """

    name = "tensorrt"
    threads: int | None = None  # the GPU runs it: no CPU threads to set

    def __init__(self, path: str | Path, device: str = "auto", cuda_graph: bool = True,
                 precision: str = "auto") -> None:
        path = Path(path)
        check_file(path, "TensorRT plan")
        index = parse_device(device)
        self.path = path
        self.metadata: PlanMetadata = read_plan_metadata(path)
        self.info = self.metadata.info
        self.precision = check_precision(precision, self.metadata.precision, self.name, path)
        require_tensorrt()
        require_pycuda()
        import tensorrt as trt

        # Compare the metadata with this machine before TensorRT sees the plan: a plan from another
        # TensorRT version or GPU architecture fails to deserialise with a far less helpful message.
        gpu = gpu_identity(index)
        check_compatibility(self.metadata, trt.__version__, gpu, path)
        dla = "" if self.metadata.dla_core is None else f", DLA core {self.metadata.dla_core}"
        self.device = f"cuda:{index} ({gpu.name}{dla})"
        self.cuda_graph = cuda_graph
        self._lock = threading.Lock()
        self._session_thread: threading.Thread | None = None  # the thread inside device_session, if any
        self._closed = False
        held = self._held = _EngineResources(PrimaryContext(index), f"TensorRT inference of {path.name}", cuda_graph)
        try:
            # Registered before the engine is opened: an interrupt once it is open leaves nothing unowned.
            self._release_if_dropped = release_when_dropped(self, held.release, f"the TensorRT engine {path.name}")
            with gpu_resources(f"opening the TensorRT engine {path.name}"), held.cuda_context.active():
                try:
                    self._open_engine()
                except BaseException as exc:
                    # The traceback's frames hold _open_engine's locals (the engine among them): cleared here, the
                    # TensorRT objects go in held.release(), with this context current, not when the caller drops the
                    # exception, after the context's release, on whatever thread that is.
                    traceback.clear_frames(exc.__traceback__)
                    raise
        except BaseException:
            held.release()
            raise

    # --- setup -------------------------------------------------------------------------------------------

    def _open_engine(self) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        try:
            self._held.runtime = start_tensorrt(trt.Runtime)
        except ValueError as exc:
            raise EngineResourceError(str(exc)) from exc  # the machine's CUDA, not the plan
        if self.metadata.dla_core is not None:
            # Orin modules with and without DLAs share a GPU name, compute capability and SM count.
            available = int(self._held.runtime.num_DLA_cores)
            if self.metadata.dla_core >= available:
                for_gpu = dataclasses.replace(self.metadata, dla_core=None)
                raise PlanCompatibilityError(
                    f"{str(self.path)!r} runs on DLA core {self.metadata.dla_core}; this device has {available} DLA "
                    f"core(s): build it for the GPU alone with: {for_gpu.rebuild_command(self.path)}")
            # IRuntime::setDLACore: the DLA core a DLA engine runs on, set before deserialising (as trtexec does).
            self._held.runtime.DLA_core = self.metadata.dla_core
        plan = self.path.read_bytes()
        engine = self._held.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            # deserializeCudaEngine returns null on any failure, the weights' allocation included: a plan that may
            # not fit in what is free is kept, not taken for a damaged one (and rebuilt at every start while memory
            # stays short). Loading takes more than the plan's bytes by an amount no document gives.
            free, _ = cuda.mem_get_info()
            if free < len(plan) + DESERIALIZE_HEADROOM:
                raise EngineResourceError(
                    f"TensorRT could not load {str(self.path)!r}: the GPU has {free / 2**20:.0f} MiB free for a "
                    f"{len(plan) / 2**20:.0f} MiB engine; close other GPU programs or build the engine for a "
                    "smaller working size")
            refused = allocation_refused()
            if refused is not None:
                # TensorRT's allocator is cudaMalloc, which a CUDA graph capture refuses: the plan is not at fault,
                # and the engine cache must not delete and rebuild it (the build would be refused alike).
                raise EngineResourceError(f"TensorRT could not load {str(self.path)!r}: {refused}")
            raise ValueError(
                f"TensorRT could not deserialise {str(self.path)!r} (corrupt, or built by another TensorRT); "
                f"rebuild it with: {self.metadata.rebuild_command(self.path)}"
            )
        self._held.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{str(self.path)!r} has inputs {inputs} and outputs {outputs}; a unetrt U-Net has one of each"
            )
        self._input, self._output = inputs[0], outputs[0]
        for name in (self._input, self._output):
            # infer and the frame path write the input and read the logits as linear NCHW; an engine built with a
            # vectorized I/O format (kHWC8, kCHW2: TensorRT allows every format at network I/O unless the build pins
            # one) would compute from scrambled input, with no error.
            layout = engine.get_tensor_format(name)
            if layout != trt.TensorFormat.LINEAR:
                raise ValueError(
                    f"{str(self.path)!r} takes {name!r} in the TensorRT format {getattr(layout, 'name', layout)}, not "
                    f"the linear NCHW layout unetrt reads and writes; rebuild it with: "
                    f"{self.metadata.rebuild_command(self.path)}")
        # tensorrt-stubs leave nptype unannotated.
        input_type = trt.nptype(engine.get_tensor_dtype(self._input))  # type: ignore[no-untyped-call]
        output_type = trt.nptype(engine.get_tensor_dtype(self._output))  # type: ignore[no-untyped-call]
        self._input_dtype: np.dtype[Any] = np.dtype(input_type)
        self._output_dtype: np.dtype[Any] = np.dtype(output_type)
        low, opt, high = (_dims(dims) for dims in engine.get_tensor_profile_shape(self._input, 0))
        self.profile = ShapeProfile.from_dict({"min": low, "opt": opt, "max": high})
        self.max_input_hw: tuple[int, int] | None = self.profile.max_input_hw
        self.min_input_hw: tuple[int, int] | None = self.profile.min_input_hw
        self.max_batch: int | None = self.profile.max_batch
        # Made here, so that a GPU without room for the activations fails the open; the first user claims it.
        self._held.unclaimed = self._new_execution()
        # Non-blocking: the graphs captured on it must not make other threads' legacy-stream work invalid.
        self._held.stream = cuda.Stream(flags=STREAM_NON_BLOCKING)
        try:
            max_out = self._held.unclaimed.set_shape(self.profile.max)
        except ValueError as exc:
            raise ValueError(f"the engine rejects its own largest profile shape {format_shape(self.profile.max)}") \
                from exc
        described = network_output_shape(self.info, self.profile.max)
        if max_out != described:
            # output_shape answers from the model's description, not the engine: they must agree.
            raise ValueError(f"{str(self.path)!r} returns logits of shape {format_shape(max_out)} for input "
                             f"{format_shape(self.profile.max)}, where its model description says "
                             f"{format_shape(described)}; rebuild the plan from the model's ONNX file with unet-build")
        in_size = int(np.prod(self.profile.max))
        out_size = int(np.prod(max_out))
        try:
            self._held.host_in = cuda.pagelocked_empty(in_size, self._input_dtype)
            self._held.host_out = cuda.pagelocked_empty(out_size, self._output_dtype)
            self._held.device_in = cuda.mem_alloc(max(1, self._held.host_in.nbytes))
            self._held.device_out = cuda.mem_alloc(max(1, self._held.host_out.nbytes))
        except cuda.MemoryError as exc:
            total = in_size * self._input_dtype.itemsize + out_size * self._output_dtype.itemsize
            raise EngineResourceError(
                f"the GPU has no memory left for the buffers of {str(self.path)!r} ({total / 2**20:.1f} MiB at its "
                f"largest shape {format_shape(self.profile.max)}): {exc}; close other GPU programs or build the "
                "engine for a smaller working size") from exc
        # The stream no longer waits for legacy-stream work implicitly: whatever TensorRT queued there while loading
        # (a synchronous copy may return before its DMA ends: CUDA Runtime API, "API synchronization behavior")
        # ends before the first enqueue. Legal while another unetrt backend captures: its stream is non-blocking.
        synchronize_stream(STREAM_LEGACY, "TensorRT's loading of the engine")

    def _new_execution(self) -> _Execution:
        context = self._held.engine.create_execution_context()
        if context is None:
            refused = allocation_refused()
            if refused is not None:
                raise EngineResourceError(
                    f"TensorRT could not create an execution context for {str(self.path)!r}: {refused}")
            raise EngineResourceError(
                f"TensorRT could not create an execution context for {str(self.path)!r} (most often: too little GPU "
                "memory left for its activations); close other GPU programs or build the engine for a smaller "
                "working size")
        return _Execution(context, self._input, self._output, self.profile)

    def _claim(self) -> _Execution:
        """The context made at open, else a new one (with the backend's lock held).

        Raises:
            EngineResourceError: when the GPU has no memory left for another context's activations.
        """
        unclaimed, self._held.unclaimed = self._held.unclaimed, None
        return unclaimed if unclaimed is not None else self._new_execution()

    def _host(self) -> _Execution:
        """The context of :meth:`infer` and :meth:`infer_device`, bound to the backend's own buffers (with the
        backend's lock held and its CUDA context current)."""
        if self._held.execution is None:
            execution = self._claim()
            execution.on_change = self._held.graphs.invalidate
            self._bind_own_buffers(execution)
            self._held.execution = execution
        return self._held.execution

    def _bind_own_buffers(self, execution: _Execution) -> None:
        execution.bind(int(self._held.device_in), int(self._held.device_out), "the backend's own buffers")

    # --- inference ---------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this backend is closed; open a new one")

    def infer(self, batch: NDArray[Any]) -> NDArray[Any]:
        """N x C x H x W float32 (normalised, legal H and W) -> N x K x h x w float32 logits.

        Raises:
            ValueError: on a malformed batch, a shape outside the engine's profile, or after :meth:`close`.
        """
        import pycuda.driver as cuda

        batch = check_batch(batch, self.info)
        shape = tuple(int(d) for d in batch.shape)
        with self._lock:
            self._check_open()
            held = self._held
            with held.cuda_context.active():
                execution = self._host()
                out_shape = execution.set_shape(shape)
                host_in = held.host_in[: batch.size].reshape(shape)
                np.copyto(host_in, batch, casting="same_kind")
                host_out = held.host_out[: int(np.prod(out_shape))].reshape(out_shape)
                cuda.memcpy_htod_async(held.device_in, host_in, held.stream)
                held.graphs.run(shape, held.stream.handle, lambda: execution.enqueue(held.stream.handle))
                cuda.memcpy_dtoh_async(host_out, held.device_out, held.stream)
                held.stream.synchronize()
                return host_out.astype(np.float32, copy=True)

    def infer_device(self, images: Any, out: Any = None) -> Any:
        """Run on a batch already on the GPU, without copying it through the host.

        Args:
            images: a C-contiguous N x C x H x W device array exposing ``__cuda_array_interface__``
                (a CUDA ``torch.Tensor``, a CuPy array, a pycuda ``GPUArray``) of the engine's input dtype,
                on this backend's device, starting at a 256-byte aligned address.
            out: optional device array of the output shape and dtype to write the logits into (aligned alike).

        Returns:
            ``out`` when given (filled when this returns), else the logits as a float32 numpy array.

        Raises:
            ValueError: on a non-device array, a wrong dtype, layout or shape, an address TensorRT refuses, or
                after :meth:`close`.
        """
        import pycuda.driver as cuda

        source, producer_stream = read_cuda_array(images, "images")
        shape = source.shape
        if len(shape) != 4 or shape[1] != self.info.in_channels:
            raise ValueError(f"images must be N x {self.info.in_channels} x H x W, got shape {shape}")
        if source.dtype != self._input_dtype:
            raise ValueError(f"images must have dtype {self._input_dtype} (the engine's input), got {source.dtype}")
        with self._lock:
            self._check_open()
            with self._held.cuda_context.active():
                execution = self._host()
                out_shape = execution.set_shape(shape)
                out_pointer = int(self._held.device_out)
                streams = [producer_stream]
                if out is not None:
                    target, out_stream = read_cuda_array(out, "out", writable=True)
                    if target.shape != out_shape or target.dtype != self._output_dtype:
                        raise ValueError(
                            f"out must have shape {out_shape} and dtype {self._output_dtype}, "
                            f"got {target.shape} {target.dtype}"
                        )
                    out_pointer = target.ptr
                    streams.append(out_stream)
                for stream in streams:
                    if stream is not None:
                        # A producer's stream, the legacy default stream (1) included (the backend's stream is
                        # non-blocking, so it does not wait for it): its queued work must end first, so that the
                        # input is complete and nothing still writes into ``out`` (CUDA Array Interface v3,
                        # "stream"). That stream alone: a context-wide synchronize is invalid while another thread
                        # captures a CUDA graph in this context, and breaks that capture.
                        synchronize_stream(stream, "a caller's CUDA array")
                self._enqueue_from(execution, source.ptr, out_pointer, "the caller's device arrays")
                if out is not None:
                    self._held.stream.synchronize()
                    return out
                host_out = self._held.host_out[: int(np.prod(out_shape))].reshape(out_shape)
                cuda.memcpy_dtoh_async(host_out, self._held.device_out, self._held.stream)
                self._held.stream.synchronize()
                return host_out.astype(np.float32, copy=True)

    def _enqueue_from(self, execution: _Execution, input_ptr: int, output_ptr: int, what: str) -> None:
        """Queue :meth:`infer`'s context on the backend's stream from and into device buffers other than its own
        (with the lock held and the context current, ``execution`` set to the shape): the captured graph holds the
        backend's own buffer addresses, so this enqueues directly, and the context is bound to its own buffers
        again afterwards.

        Raises:
            ValueError: on an address TensorRT refuses.
            RuntimeError: when TensorRT refuses the launch.
        """
        try:
            execution.bind(input_ptr, output_ptr, what)
            execution.enqueue(self._held.stream.handle)
        finally:
            self._bind_own_buffers(execution)

    def resident(self, batch: NDArray[Any]) -> TensorRTResidentBatch:
        """``batch`` copied once into device memory this backend allocates, with an output buffer beside it, to be
        run there again and again with its logits left there: what unet-bench's device mode times
        (``--no-data-transfers``, trtexec's ``--noDataTransfers``), with pycuda alone (no torch or CuPy arrays).

        Both buffers are the backend's: freed by :meth:`close`, or when the returned batch is dropped.

        Args:
            batch: N x C x H x W, as :meth:`infer` takes it (cast to the engine's input dtype).

        Returns:
            The batch on the device; its :meth:`~TensorRTResidentBatch.run` runs the engine,
            :meth:`~TensorRTResidentBatch.logits` copies the last run's output to the host.

        Raises:
            ValueError: as :meth:`infer` for a malformed batch or a shape outside the engine's profile, or after
                :meth:`close`.
            EngineResourceError: (a ValueError) when the GPU has no memory left for the two buffers.

        Example:
            >>> resident = backend.resident(np.zeros((1, 3, 192, 256), np.float32))  # doctest: +SKIP
            >>> resident.run(); resident.logits().shape  # doctest: +SKIP
            (1, 12, 192, 256)
        """
        import pycuda.driver as cuda

        batch = check_batch(batch, self.info)
        shape = tuple(int(d) for d in batch.shape)
        self.profile.check_shape(shape)
        out_shape = network_output_shape(self.info, shape)
        with self._lock:
            self._check_open()
            held = self._held
            with held.cuda_context.active():
                key = next(held.resident_keys)
                # Owned by the backend from their allocation on: an interrupt before the batch exists leaves them
                # to close().
                buffers = held.resident[key] = []
                sizes = (batch.size * self._input_dtype.itemsize,
                         int(np.prod(out_shape)) * self._output_dtype.itemsize)
                try:
                    # cuMemAlloc's addresses are aligned to at least 256 bytes (CUDA C Programming Guide, "Device
                    # Memory Accesses"), as setTensorAddress requires.
                    for size in sizes:
                        buffers.append(cuda.mem_alloc(max(1, size)))
                except cuda.MemoryError as exc:
                    held._free_all(buffers)
                    del held.resident[key]
                    raise EngineResourceError(
                        f"the GPU has no memory left for a resident batch of {format_shape(shape)} on "
                        f"{str(self.path)!r} ({sum(sizes) / 2**20:.1f} MiB): {exc}; close other GPU programs or "
                        "time a smaller batch") from exc
                host_in = held.host_in[: batch.size].reshape(shape)
                np.copyto(host_in, batch, casting="same_kind")
                cuda.memcpy_htod_async(buffers[0], host_in, held.stream)
                held.stream.synchronize()
                device_in, device_out = buffers
        return TensorRTResidentBatch(self, key, shape, out_shape, int(device_in), int(device_out))

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
            with self._held.cuda_context.active():
                self._session_thread = threading.current_thread()
                try:
                    yield int(self._held.stream.handle)
                finally:
                    self._session_thread = None

    def _device(self) -> _Execution:
        if self._held.device_execution is None:
            # The frame path captures this context's enqueues into its own graphs, which hold the shape it had.
            self._held.device_execution = self._claim()
        return self._held.device_execution

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The logits' shape for an input shape, from any thread: computed, so that it never changes the shape of
        the execution context the frame path's CUDA graphs were captured with (a graph replayed after a shape
        change computes from stale state).

        Raises:
            ValueError: on a shape outside the engine's profile.
        """
        shape = tuple(int(d) for d in input_shape)
        self.profile.check_shape(shape)
        return network_output_shape(self.info, shape)

    def enqueue(self, input_ptr: int, input_shape: tuple[int, ...], output_ptr: int, stream: int) -> None:
        """Queue the engine on ``stream`` from and into device buffers (inside :meth:`device_session`); the
        frame path captures it into its own CUDA graph, so the backend's graph is not used here.

        Raises:
            ValueError: on a shape outside the engine's profile or an address TensorRT refuses.
            RuntimeError: when TensorRT refuses the launch (e.g. under capture right after a shape change).
        """
        if self._session_thread is not threading.current_thread():
            # TensorRT: "Do not call the APIs of the same IExecutionContext from multiple threads at any given time"
            # (IExecutionContext); the session's lock is what keeps other threads out.
            raise RuntimeError("TensorRTBackend.enqueue runs inside 'with backend.device_session():' on the calling "
                               "thread")
        execution = self._device()
        execution.set_shape(tuple(int(d) for d in input_shape))
        execution.bind(input_ptr, output_ptr, "the frame path's device buffers")
        execution.enqueue(stream)

    # --- teardown ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the engine, buffers, stream and CUDA graph; release the retained context (idempotent)."""
        with self._lock:
            self._closed = True
            # Resumable: a close() interrupted by Ctrl-C is finished by the next one, or by the release when the
            # backend is dropped, which stays registered until the release is done.
            self._held.release()
            self._release_if_dropped.detach()

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class TensorRTResidentBatch:
    """A batch in a :class:`TensorRTBackend`'s device memory (:meth:`TensorRTBackend.resident`; a
    :class:`~unetrt.backends.base.ResidentBatch`), with its output buffer beside it. Safe from any thread: its runs
    and copies take the backend's lock in turn, as :meth:`TensorRTBackend.infer` does.

    Attributes:
        shape: the batch's N x C x H x W shape.
    """

    def __init__(self, backend: TensorRTBackend, key: int, shape: tuple[int, ...], out_shape: tuple[int, ...],
                 input_ptr: int, output_ptr: int) -> None:
        self._backend, self.shape, self._out_shape = backend, shape, out_shape
        self._input, self._output = input_ptr, output_ptr
        self._ran = False
        # The release refers to the backend's resources and lock, not to this object (or it never becomes garbage).
        self._release_if_dropped = release_when_dropped(
            self, functools.partial(backend._held.free_resident, key, backend._lock),
            f"a resident batch of {backend.path.name}")

    def run(self) -> None:
        """One run of the engine from the batch into the output buffer, on the backend's stream; returns when it is
        done (a host clock times it).

        Raises:
            ValueError: on a shape or an address TensorRT refuses, or after the backend's
                :meth:`~TensorRTBackend.close`.
            RuntimeError: when TensorRT refuses the launch.
        """
        backend = self._backend
        with backend._lock:
            backend._check_open()
            held = backend._held
            with held.cuda_context.active():
                execution = backend._host()
                execution.set_shape(self.shape)
                backend._enqueue_from(execution, self._input, self._output, "the resident batch's buffers")
                held.stream.synchronize()
            self._ran = True

    def logits(self) -> NDArray[np.float32]:
        """The last run's logits, copied to the host as float32 (as :meth:`TensorRTBackend.infer` returns them).

        Raises:
            ValueError: before the first :meth:`run`, or after the backend's :meth:`~TensorRTBackend.close`.
        """
        import pycuda.driver as cuda

        backend = self._backend
        with backend._lock:
            backend._check_open()
            if not self._ran:
                raise ValueError("this batch has not run yet; call run() before logits()")
            held = backend._held
            with held.cuda_context.active():
                host_out = held.host_out[: int(np.prod(self._out_shape))].reshape(self._out_shape)
                cuda.memcpy_dtoh_async(host_out, self._output, held.stream)
                held.stream.synchronize()
                return host_out.astype(np.float32, copy=True)


def open_model(request: OpenRequest) -> TensorRTBackend:
    """The registry's opener (:mod:`unetrt.backends.registry`): a plan runs as it is; an ONNX model runs as the
    engine :mod:`unetrt.plan_cache` builds from it on first use (at the request's precision and working size) and
    caches.

    The option ``threads`` (every backend's) is dropped: the GPU runs the network, there are no CPU threads to set.

    Raises:
        ImportError, FileNotFoundError, ValueError: as :class:`TensorRTBackend`.
        LookupError: (``unetrt.plan_cache.PlanNotCachedError``) with ``build=False`` and no cached engine.
    """
    options = {key: value for key, value in request.options.items() if key != "threads"}
    if request.path.suffix == ".onnx":
        from ..plan_cache import open_cached_engine

        return open_cached_engine(request.path, request.precision, request.device,
                                  working_size=request.working_size, build=request.build, **options)
    built_options = sorted(set(options) - {"cuda_graph"})
    if built_options:
        raise ValueError(f"{', '.join(built_options)}: options of an engine built here from an .onnx model; the plan "
                         f"{request.path.name} runs as it was built (rebuild it with unet-build to change them)")
    backend = TensorRTBackend(request.path, device=request.device, precision=request.precision, **options)
    warn_if_model_changed(backend.metadata, request.path)
    return backend
