"""A fake GPU for the CPU tests: pycuda's driver module and the CUDA driver library, over one shared state.

"Device memory" is real host memory addressed by its real integer address, so the emulated kernels
(``unetrt._tiling_emu``) and numpy views can read and write it. Work queued on a stream waits on that stream until
something waits for it (the stream, its context, or a free), and runs then, in the order it was queued; a stream
that is capturing a graph records it instead, to run when the graph is launched (itself queued on a stream).
``FakeGpu(deferred=False)`` runs queued work at once instead.

Install it with :func:`install_fake_gpu` (monkeypatch puts ``pycuda`` and ``pycuda.driver`` into ``sys.modules``
and makes :func:`unetrt.cuda.driver_library` return the fake driver library).

The fakes refuse what the real libraries refuse; each rule names its document:

* pycuda allocates (``mem_alloc``, ``pagelocked_empty``, ``Stream``, ``register_host_memory``) only inside a
  context that pycuda itself made current (push, make_context): pycuda ``src/cpp/cuda.hpp``,
  ``explicit_context_dependent::acquire_context`` raises "no currently active context?" when pycuda's own
  context stack is empty; a context the CUDA runtime (torch, ONNX Runtime) made current does not count.
* Driver calls need a current context: CUDA Driver API, "Context Management" (``CUDA_ERROR_INVALID_CONTEXT``).
* [INIT] ``cuInit`` comes before any other driver call, and its flags must be 0 (CUDA Driver API, "Initialization":
  ``cuInit`` "must be called before any other function from the driver API", else
  ``CUDA_ERROR_NOT_INITIALIZED``; "Flags: Initialization flag for CUDA. Currently must be 0"): every call of the
  fake driver library but ``cuInit`` and ``cuDriverGetVersion`` returns ``CUDA_ERROR_NOT_INITIALIZED`` before it.
  pycuda alike: ``pycuda.driver.init()`` "must be called before any other function in this module" (pycuda
  documentation, ``pycuda.driver.init``), and a ``Device`` or ``Device.count()`` before it raises ``LogicError``
  ("Example: CUDA was used before it was initialized", ``pycuda.driver.LogicError``). The CUDA runtime (torch, ONNX
  Runtime: ``FakeGpu.runtime_set_device``) initialises the driver itself.
* A device pointer from ``cuMemAlloc`` is aligned to at least 256 bytes (CUDA C Programming Guide, "Device
  Memory Accesses": "any address of a variable residing in global memory or returned by one of the memory
  allocation routines from the driver or runtime API is always aligned to at least 256 bytes").
* [CAPTURE-THREAD] A capture begun in a mode other than relaxed must end on the thread that began it:
  ``cuStreamEndCapture`` from another thread returns ``CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD`` and the capture goes
  on ("If the mode argument to cudaStreamBeginCapture was not cudaStreamCaptureModeRelaxed, this call must be from
  the same thread as cudaStreamBeginCapture", CUDA Runtime API, ``cudaStreamEndCapture``; error 908, "A stream capture
  sequence not initiated with the cudaStreamCaptureModeRelaxed argument to cudaStreamBeginCapture was passed to
  cudaStreamEndCapture in a different thread", ``cudaErrorStreamCaptureWrongThread``).
* Stream capture: synchronising a capturing stream is not allowed and invalidates the capture, which then ends
  with ``CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`` and no graph (CUDA Driver API, ``cuStreamBeginCapture``,
  ``cuStreamEndCapture``; CUDA Programming Guide, "CUDA Graphs: Prohibited and Unhandled Operations").
* Stream capture: a thread with a capture of its own in progress (thread-local or global mode), and every thread
  while any global-mode capture is in progress, may not allocate or free memory; the call fails and invalidates
  the capture (CUDA Driver API, ``cuThreadExchangeStreamCaptureMode``: "During stream capture ... some actions,
  such as a call to cudaMalloc, may be unsafe"; ``CU_STREAM_CAPTURE_MODE_THREAD_LOCAL``: "If the local thread has
  an ongoing capture sequence ... it is prohibited from potentially unsafe API calls. Concurrent capture sequences
  in other threads are ignored"; ``CU_STREAM_CAPTURE_MODE_GLOBAL``: also "if any other thread has a concurrent
  capture sequence initiated with CU_STREAM_CAPTURE_MODE_GLOBAL"). pycuda's ``DeviceAllocation.__del__`` frees
  too: one collected on such a thread leaks and invalidates the capture (pycuda reports the failed cuMemFree as a
  warning).
* The legacy default stream (``CU_STREAM_LEGACY``, handle 0 or 1; pycuda's ``stream=None``, and every synchronous
  call such as pycuda's ``memcpy_htod``) is refused, with ``CUDA_ERROR_STREAM_CAPTURE_IMPLICIT``, while a stream of
  the same context that was not created with ``CU_STREAM_NON_BLOCKING`` captures a graph, on any thread and in any
  capture mode, and that capture is invalidated: "When any stream in the same context is being captured, and it was
  not created with cudaStreamNonBlocking, any attempted use of the legacy stream is invalid ... It is therefore
  also invalid to call synchronous APIs in this case" (CUDA C++ Programming Guide, CUDA Graphs, "Prohibited and
  Unhandled Operations"). Otherwise the legacy stream orders with the context's blocking streams, never with
  non-blocking ones: "The legacy default stream ... synchronizes with all other streams in the same CUcontext
  except for non-blocking streams" (CUDA Driver API, "Stream synchronization behavior"; ``cuStreamCreate``:
  ``CU_STREAM_NON_BLOCKING`` "the created stream should perform no implicit synchronization with stream 0").
* Work queued on a stream is asynchronous: a kernel, a TensorRT enqueue, a copy into device memory, a copy into
  host memory, or a graph launch has not happened when the call returns, only once the stream (or its context) is
  synchronised (CUDA Runtime API, "API synchronization behavior", Asynchronous: "For transfers from device memory to
  pageable host memory, the function will return only once the copy has completed" is the one exception the driver
  makes, and "might be synchronous" for other pageable transfers, which code may therefore not rely on; CUDA C++
  Programming Guide, "Asynchronous Concurrent Execution": the host must synchronise before it reads what a stream
  writes). So a result read before its stream is synchronised is stale, and work on one stream that consumes
  another's output sees it only after that other stream was waited for. A copy from pageable host memory reads it
  when queued (the driver stages it), one from pinned or registered memory when it runs (DMA from that memory: the
  host must not rewrite it before the stream is synchronised). Freeing memory or destroying a context waits for
  the work queued before it (``cudaFree`` synchronises the device: CUDA C++ Programming Guide, "Implicit
  Synchronization").
* What a kernel may take for a pointer (``FakeGpu.pointer_attributes``, the stand-in for ``cudaPointerGetAttributes``
  that ``unetrt._tiling_emu`` consults as the CUDA build consults the real one): device memory is
  ``cudaMemoryTypeDevice``; page-locked host memory (pinned, mapped or registered) is ``cudaMemoryTypeHost``
  ("cudaMemoryTypeHost for registered host memory", CUDA Runtime API, ``cudaPointerGetAttributes``) whose device
  pointer is the host pointer itself ("The pointer value through which allocated host memory may be accessed in
  kernels on all devices that support unified addressing is the same as the pointer value through which that
  memory is accessed on the host", CUDA Runtime API, "Unified Addressing"); any other (pageable) address is
  ``cudaMemoryTypeUnregistered`` ("for unregistered host memory") with no device pointer.
* Device memory runs out: with ``FakeGpu.memory_bytes`` set, an allocation beyond it raises pycuda's
  ``MemoryError`` (pycuda documentation, ``pycuda.driver.MemoryError``: "Thrown when mem_alloc() or related
  functionality fails"; the driver's ``cuMemAlloc`` returns ``CUDA_ERROR_OUT_OF_MEMORY``).
* ``cuDevicePrimaryCtxRelease`` after the last retain destroys the primary context; a context must not be used
  after that (CUDA Driver API, "Primary Context Management").
* pycuda's ``Context.detach`` from a thread other than the one that made the context releases nothing; of a
  primary context that is not current, it pushes it to release it and leaves it on the thread's context stack
  (pycuda ``src/cpp/cuda.hpp``, ``context::detach`` with ``scoped_context_activation`` around
  ``cuDevicePrimaryCtxRelease``; the reason unetrt pops it itself).
* pycuda destroys a ``Stream`` when it is garbage only where it can make the stream's context current: that context
  (the one pycuda made current when the stream was created) is pycuda's current one, or the thread is the one that
  made (retained) it; on any other thread, or once the context was detached, the stream is leaked without a word
  (pycuda ``src/cpp/cuda.hpp``: ``stream::~stream`` destroys it inside ``scoped_context_activation``, which throws
  ``cannot_activate_out_of_thread_context`` ("cannot activate out-of-thread context") or
  ``cannot_activate_dead_context``, and ``CUDAPP_CATCH_CLEANUP_ON_DEAD_CONTEXT`` swallows both). The fake logs
  ``("stream leaked", handle)`` (a stream of a destroyed context went with it); a destroyed stream's queued work
  still runs ("the resources associated with hStream will be released automatically once the device has completed
  all work", CUDA Driver API, ``cuStreamDestroy``) and its handle is then invalid.
* [FREE-REACH] pycuda frees a ``DeviceAllocation`` (``free()``, or when it is garbage) in the context that was
  current when it was allocated, activating that context itself only on the thread that made it: with the context
  neither current nor of the freeing thread, or its context object detached, the memory is leaked without a word
  (pycuda ``src/cpp/cuda.hpp``: ``device_allocation::free`` frees inside ``scoped_context_activation``, whose
  ``cannot_activate_out_of_thread_context`` and ``cannot_activate_dead_context``
  ``CUDAPP_CATCH_CLEANUP_ON_DEAD_CONTEXT`` swallows, as for streams above). The fake logs
  ``("device memory leaked", address)`` and keeps the memory allocated; memory of a destroyed context went with it.
  A second ``free()`` raises, as pycuda's does (``device_allocation::free`` of an allocation no longer valid:
  ``CUDA_ERROR_INVALID_HANDLE``).
* [PINNED-GC] Page-locked host memory from ``pagelocked_empty`` is freed when its ``HostAllocation`` (the array's
  ``base``) is garbage, as a ``DeviceAllocation`` is, and in its context as [FREE-REACH] says (pycuda documentation,
  "Pagelocked Host Memory", ``PagelockedHostAllocation``: "Once this object is deleted, its associated device memory
  is freed"; ``free()``: "Release the held memory now instead of when this object becomes unreachable"); until
  2026-12-07 the fake kept it allocated for good, so a page-locked buffer dropped by the frame path counted as live.
* [MEM-INFO] ``cuMemGetInfo`` (pycuda's ``mem_get_info``) needs a current context (``CUDA_ERROR_INVALID_CONTEXT``
  without one; CUDA Driver API, ``cuMemGetInfo``) and answers (free, total): "Returns in *total the total amount of
  memory available to the the current context. Returns in *free the amount of memory on the device that is free
  according to the OS" (CUDA Driver API, ``cuMemGetInfo_v2``). So free shrinks by every allocation in the device's
  memory, a library's (an engine's weights, ONNX Runtime's initializers) as well as ``cuMemAlloc``'s, with or without
  ``FakeGpu.memory_bytes`` (without it the total is :data:`UNLIMITED_TOTAL_BYTES`); until 2026-12-07 it stayed at
  the total without a limit. On an integrated GPU the real figure is the shared system memory and moves with every
  process's allocations ("The integrated GPU on Tegra shares memory with CPU and other component of the SoC", the
  same page; CUDA for Tegra, "Estimating Total Allocatable Device Memory on an Integrated GPU Device"); the fake
  counts its own device memory alone.
* [INIT-FAILS] ``cuInit`` fails where the installed driver has no usable GPU (``FakeGpu.init_error``: a laptop's
  hybrid graphics set to the integrated GPU only, a driver left broken by a suspend): it returns that error
  (``CUDA_ERROR_NO_DEVICE``, 100: "This indicates that no CUDA-capable devices were detected by the installed CUDA
  driver", CUDA Driver API, "Error Handling", ``CUresult``), every later driver call answers
  ``CUDA_ERROR_NOT_INITIALIZED``, and pycuda's ``init`` raises ``pycuda.driver.RuntimeError`` ("cuInit failed:
  no CUDA-capable device is detected"; pycuda ``src/wrapper/wrap_cudadrv.cpp``, ``translate_cuda_error`` maps
  ``CUDA_ERROR_NO_DEVICE`` to ``RuntimeError``, which derives from ``pycuda.driver.Error`` alone).
"""

from __future__ import annotations

import bisect
import ctypes
import itertools
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

CUDA_SUCCESS = 0
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_NOT_INITIALIZED = 3
CUDA_ERROR_NO_DEVICE = 100
CUDA_ERROR_INVALID_DEVICE = 101
CUDA_ERROR_UNKNOWN = 999
# cuGetErrorString's text of the errors cuInit may return here (pycuda puts it after "cuInit failed: ").
ERROR_STRINGS = {CUDA_ERROR_NO_DEVICE: "no CUDA-capable device is detected", CUDA_ERROR_UNKNOWN: "unknown error"}
CUDA_ERROR_INVALID_CONTEXT = 201
CUDA_ERROR_INVALID_HANDLE = 400
CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900
CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901
CUDA_ERROR_STREAM_CAPTURE_IMPLICIT = 906
CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD = 908
CAPTURE_MODE_RELAXED = 2
# cuda.h: CU_STREAM_NON_BLOCKING (a cuStreamCreate flag); CU_STREAM_LEGACY is the handle 0x1 (0 means it too).
STREAM_NON_BLOCKING = 1
LEGACY_HANDLES = (0, 1)
# CUdevice_attribute values (cuda.h).
ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
ATTRIBUTE_INTEGRATED = 18
ATTRIBUTE_CAN_MAP_HOST_MEMORY = 19
# cudaMemoryType (driver_types.h).
MEMORY_TYPE_UNREGISTERED, MEMORY_TYPE_HOST, MEMORY_TYPE_DEVICE = 0, 1, 2
ALIGNMENT = 256
UNLIMITED_TOTAL_BYTES = 8 << 30  # what mem_get_info reports as total for a GPU without ``memory_bytes``


class FakeCudaError(Exception):
    """pycuda.driver.Error: derived from Exception alone (inducer/pycuda src/wrapper/wrap_cudadrv.cpp,
    ``DECLARE_EXC(Error, NULL)``), so neither ``except RuntimeError`` nor ``except ValueError`` catches it."""


class FakeLogicError(FakeCudaError):
    """pycuda.driver.LogicError."""


class FakeMemoryError(FakeCudaError):
    """pycuda.driver.MemoryError (a pycuda error, not Python's MemoryError)."""


class FakeRuntimeError(FakeCudaError):
    """pycuda.driver.RuntimeError (a pycuda error, not Python's RuntimeError)."""


@dataclass(eq=False)
class FakeOp:
    """One piece of queued work: ``check`` returns why it cannot run now (or None), ``run`` does it."""

    run: Callable[[], None]
    check: Callable[[], str | None] = lambda: None
    kind: str = "op"
    entry: tuple[Any, ...] | None = None  # what the log records when it runs (default: (kind,))


@dataclass(eq=False)
class FakeContext:
    """A CUDA context."""

    gpu: FakeGpu
    ordinal: int
    primary: bool
    handle: int
    alive: bool = True
    retains: int = 0


@dataclass(eq=False)
class FakeStream:
    handle: int
    context: FakeContext
    capture: list[FakeOp] | None = None
    capture_invalidated: bool = False
    capture_thread: int | None = None
    capture_mode: int = 0  # CUstreamCaptureMode: 0 global, 1 thread-local, 2 relaxed
    flags: int = 0  # cuStreamCreate flags (STREAM_NON_BLOCKING)
    legacy: bool = False  # the context's legacy default stream
    pending: list[tuple[int, FakeOp]] = field(default_factory=list)  # (queue order, op) not yet run


@dataclass
class FakeGpu:
    """The state of the fake machine: devices, contexts per thread, memory, streams and graphs.

    Attributes:
        name: the device name pycuda reports.
        compute_capability: (major, minor).
        multiprocessors: CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT (an AGX Orin: 16).
        integrated: whether CPU and GPU share one memory (Jetson), CU_DEVICE_ATTRIBUTE_INTEGRATED.
        count: how many devices there are (alike, but for those ``kinds`` names).
        kinds: ordinal -> (name, compute capability, multiprocessors) of each device unlike device 0 (an x86
            workstation with two kinds of GPU: device 0 sm_89, device 1 sm_86); pycuda's ``Device`` reports each
            device's own, and the TensorRT fakes build and deserialise for the device of the current context.
        log: (kind, details) of every operation that ran on a stream.
        initialized: whether the driver was initialised (``cuInit``, or pycuda's ``init``).
        memory_bytes: the device memory allocations may take in all (None: no limit).
        driver_version: what ``cuDriverGetVersion`` reports (1000 * major + 10 * minor: JetPack 6.1's CUDA 12.6).
        init_error: what ``cuInit`` returns (0: it starts; [INIT-FAILS]).
        deferred: queued work runs when its stream is waited for, as on a GPU (False: at once).
    """

    name: str = "Orin (fake)"
    compute_capability: tuple[int, int] = (8, 7)
    multiprocessors: int = 16
    integrated: bool = True
    count: int = 1
    kinds: dict[int, tuple[str, tuple[int, int], int]] = field(default_factory=dict)
    log: list[tuple[Any, ...]] = field(default_factory=list)
    initialized: bool = False
    memory_bytes: int | None = None
    driver_version: int = 12060
    init_error: int = CUDA_SUCCESS
    deferred: bool = True

    def __post_init__(self) -> None:
        self._handles = itertools.count(0x1000)
        self._primary: dict[int, FakeContext] = {}
        self._threads = threading.local()
        self._starts: list[int] = []
        self._blocks: dict[int, tuple[np.ndarray, FakeContext | None, str]] = {}
        self._keep: dict[int, Any] = {}
        self.streams: dict[int, FakeStream] = {}
        self._legacy: dict[int, FakeStream] = {}  # context handle -> its legacy default stream
        self.graphs: dict[int, list[FakeOp]] = {}
        self.execs: dict[int, list[FakeOp]] = {}
        self.lock = threading.RLock()
        self._queue_order = itertools.count()

    def identity(self, ordinal: int) -> tuple[str, tuple[int, int], int]:
        """(name, compute capability, multiprocessors) of device ``ordinal``."""
        return self.kinds.get(ordinal, (self.name, self.compute_capability, self.multiprocessors))

    def current_identity(self) -> tuple[str, tuple[int, int], int]:
        """:meth:`identity` of the device of the current context (device 0 with none, as the CUDA runtime)."""
        current = self.current()
        return self.identity(0 if current is None else current.ordinal)

    # --- contexts ----------------------------------------------------------------------------------------

    def driver_stack(self) -> list[FakeContext]:
        """This thread's driver context stack (last = current)."""
        if not hasattr(self._threads, "driver"):
            self._threads.driver = []
            self._threads.pycuda = []
        return self._threads.driver  # type: ignore[no-any-return]

    def pycuda_stack(self) -> list[FakeContext]:
        """The contexts pycuda made current on this thread (pycuda's own bookkeeping)."""
        self.driver_stack()
        return self._threads.pycuda  # type: ignore[no-any-return]

    def current(self) -> FakeContext | None:
        stack = self.driver_stack()
        return stack[-1] if stack else None

    def primary(self, ordinal: int) -> FakeContext:
        context = self._primary.get(ordinal)
        if context is None or not context.alive:
            context = FakeContext(self, ordinal, True, next(self._handles))
            self._primary[ordinal] = context
        return context

    def runtime_set_device(self, ordinal: int) -> None:
        """What ``cudaSetDevice`` (torch.cuda.device, ONNX Runtime) does: the primary context becomes current
        in the driver, which pycuda does not see (the runtime calls cuInit itself) [INIT]."""
        self.initialized = True
        context = self.primary(ordinal)
        context.retains += 1
        stack = self.driver_stack()
        if stack:
            stack[-1] = context
        else:
            stack.append(context)

    def release_primary(self, ordinal: int) -> int:
        context = self._primary.get(ordinal)
        if context is None or context.retains <= 0:
            return CUDA_ERROR_INVALID_CONTEXT
        context.retains -= 1
        if context.retains == 0:
            self.destroy(context)
        return CUDA_SUCCESS

    def destroy(self, context: FakeContext) -> None:
        """A context ends: the work queued in it runs first (a context's destruction waits for its device work)."""
        for stream in list(self.streams.values()):
            if stream.context is context:
                self.run_pending(stream.handle)
        context.alive = False

    def require_context(self) -> FakeContext:
        context = self.current()
        if context is None or not context.alive:
            raise FakeLogicError("cuCtxGetCurrent failed: invalid device context")
        return context

    # --- memory ------------------------------------------------------------------------------------------

    def allocate(self, nbytes: int, kind: str = "device") -> tuple[int, np.ndarray]:
        """Host memory at a 256-byte aligned address: (address, the bytes).

        Raises:
            FakeMemoryError: when a device allocation would pass ``memory_bytes``.
        """
        free = self.free_device_bytes()
        if kind == "device" and free is not None and max(1, nbytes) > free:
            raise FakeMemoryError("cuMemAlloc failed: out of memory")
        raw = np.zeros(max(1, nbytes) + ALIGNMENT, np.uint8)
        offset = (-raw.ctypes.data) % ALIGNMENT
        block = raw[offset : offset + max(1, nbytes)]
        ptr = int(block.ctypes.data)
        with self.lock:
            bisect.insort(self._starts, ptr)
            self._blocks[ptr] = (block, self.current(), kind)
        return ptr, block

    def register(self, array: np.ndarray, kind: str) -> int:
        """Make a host array's memory known (pinned or registered host memory): its address."""
        ptr = int(array.ctypes.data)
        flat = array.reshape(-1).view(np.uint8)
        with self.lock:
            if ptr not in self._blocks:
                bisect.insort(self._starts, ptr)
            self._blocks[ptr] = (flat, self.current(), kind)
        return ptr

    def free(self, ptr: int) -> None:
        self.run_pending()
        with self.lock:
            if ptr in self._blocks:
                del self._blocks[ptr]
                self._starts.remove(ptr)

    def device_bytes_in_use(self) -> int:
        """Device memory allocated now: ``cuMemAlloc``'s and what libraries hold (:meth:`hold`)."""
        with self.lock:
            return sum(block.nbytes for block, _, kind in self._blocks.values() if kind in ("device", "library"))

    def free_device_bytes(self) -> int | None:
        """Device memory left to allocate (None: no limit)."""
        if self.memory_bytes is None:
            return None
        return self.memory_bytes - self.device_bytes_in_use()

    def memory_info(self) -> tuple[int, int]:
        """(free, total) as ``cuMemGetInfo`` reports them [MEM-INFO]: free shrinks as allocations grow, with or
        without a limit (``memory_bytes``; without one the total is :data:`UNLIMITED_TOTAL_BYTES`)."""
        total = self.memory_bytes if self.memory_bytes is not None else UNLIMITED_TOTAL_BYTES
        return total - self.device_bytes_in_use(), total

    def hold(self, owner: object, nbytes: int) -> bool:
        """Device memory a library object keeps while it lives (an engine's weights, a context's activations):
        False when it does not fit; freed when ``owner`` is garbage."""
        free = self.free_device_bytes()
        if free is not None and max(1, nbytes) > free:
            return False
        ptr, _ = self.allocate(nbytes, "library")
        weakref.finalize(owner, self.free, ptr)
        return True

    def live(self, kind: str | None = None) -> int:
        """How many allocations (of a kind: 'device', 'pinned', 'registered') are alive."""
        return sum(1 for _, _, k in self._blocks.values() if kind is None or k == kind)

    def pinned(self, array: np.ndarray) -> bool:
        """Whether a host array lies in pinned or registered memory (else it is pageable)."""
        try:
            kind = self._find(int(array.ctypes.data), array.nbytes)[3]
        except FakeCudaError:
            return False
        return kind in ("pinned", "registered")

    def pointer_attributes(self, ptr: int) -> tuple[int, int]:
        """(cudaMemoryType, devicePointer) of an address, as cudaPointerGetAttributes reports them."""
        try:
            kind = self._find(ptr, 1)[3]
        except FakeCudaError:
            return MEMORY_TYPE_UNREGISTERED, 0
        return (MEMORY_TYPE_HOST if kind in ("pinned", "registered") else MEMORY_TYPE_DEVICE), ptr

    def context_of(self, ptr: int) -> FakeContext | None:
        """The context current when the memory at ``ptr`` was allocated."""
        return self._find(ptr, 1)[1]

    def _find(self, ptr: int, nbytes: int) -> tuple[np.ndarray, FakeContext | None, int, str]:
        """(the allocation's bytes, its context, ``ptr``'s offset in it, its kind) of ``nbytes`` at ``ptr``."""
        with self.lock:
            index = bisect.bisect_right(self._starts, ptr) - 1
            if index < 0:
                raise FakeCudaError(f"address {ptr:#x} is not in any allocation")
            start = self._starts[index]
            block, context, kind = self._blocks[start]
        offset = ptr - start
        if offset + nbytes > block.size:
            raise FakeCudaError(f"access of {nbytes} bytes at {ptr:#x} runs past its allocation")
        return block, context, offset, kind

    def bytes_at(self, ptr: int, nbytes: int) -> np.ndarray:
        """The ``nbytes`` bytes at ``ptr`` (a view)."""
        block, _, offset, _ = self._find(ptr, nbytes)
        return block[offset : offset + nbytes]

    def view(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A C-contiguous numpy view of device memory."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self.bytes_at(ptr, nbytes).view(dtype).reshape(shape)

    # --- streams and graphs ------------------------------------------------------------------------------

    def new_stream(self, flags: int = 0) -> FakeStream:
        stream = FakeStream(next(self._handles), self.require_context(), flags=flags)
        self.streams[stream.handle] = stream
        return stream

    def stream(self, handle: int) -> FakeStream:
        if handle in LEGACY_HANDLES:
            return self.legacy_stream()
        stream = self.streams.get(handle)
        if stream is None:
            raise FakeCudaError(f"unknown stream {handle:#x}")
        return stream

    def legacy_stream(self) -> FakeStream:
        """The current context's legacy default stream (what handles 0 and 1 name)."""
        context = self.require_context()
        with self.lock:
            stream = self._legacy.get(context.handle)
            if stream is None:
                stream = FakeStream(next(self._handles), context, legacy=True)
                self._legacy[context.handle] = self.streams[stream.handle] = stream
        return stream

    def blocking(self, stream: FakeStream) -> bool:
        """Whether a stream orders with its context's legacy stream (created without CU_STREAM_NON_BLOCKING)."""
        return not stream.legacy and not stream.flags & STREAM_NON_BLOCKING

    def refuse_legacy_during_capture(self, what: str) -> str | None:
        """Why using the current context's legacy stream is refused now (a blocking stream of the context is
        capturing), invalidating those captures; None when it is allowed."""
        context = self.require_context()
        with self.lock:
            refusing = [stream for stream in self.streams.values() if stream.context is context
                        and stream.capture is not None and self.blocking(stream)]
            for stream in refusing:
                stream.capture_invalidated = True
        if not refusing:
            return None
        self.log.append(("refused during capture", what))
        return f"{what} failed: operation would make the legacy stream depend on a capturing blocking stream"

    def synchronize_legacy(self) -> None:
        """Wait for the current context's legacy stream, and with it for every blocking stream of the context."""
        legacy = self.legacy_stream()
        with self.lock:
            handles = [stream.handle for stream in self.streams.values()
                       if stream.context is legacy.context and (stream is legacy or self.blocking(stream))]
        self._run(handles)

    def capturing(self, handle: int) -> bool:
        stream = self.streams.get(handle)
        return stream is not None and stream.capture is not None

    def invalidate_capture(self, handle: int) -> None:
        self.stream(handle).capture_invalidated = True

    def refuse_unsafe_during_capture(self, what: str) -> str | None:
        """Why a potentially unsafe call (allocate, free) on this thread is refused now, invalidating the captures
        that refuse it; None when it is allowed."""
        thread = threading.get_ident()
        with self.lock:
            refusing = [stream for stream in self.streams.values() if stream.capture is not None and (
                stream.capture_mode == 0 or (stream.capture_mode == 1 and stream.capture_thread == thread))]
            for stream in refusing:
                stream.capture_invalidated = True
        if not refusing:
            return None
        self.log.append(("refused during capture", what))
        return f"{what} failed: operation not permitted when stream is capturing"

    def enqueue(self, handle: int, op: FakeOp) -> None:
        """Queue ``op`` on a stream: record it while capturing, else queue it (``deferred``) or run it now."""
        self.require_context()
        stream = self.stream(handle)
        if stream.legacy:
            reason = self.refuse_legacy_during_capture("work on the legacy stream")
            if reason is not None:
                raise FakeCudaError(reason)
        if stream.capture is not None:
            stream.capture.append(op)
            return
        reason = op.check()
        if reason is not None:
            raise FakeCudaError(reason)
        if self.deferred:
            with self.lock:
                stream.pending.append((next(self._queue_order), op))
            return
        self.log.append(op.entry or (op.kind,))
        op.run()

    def run_pending(self, handle: int | None = None) -> None:
        """Run the work queued on one stream (a stream synchronise), or on every stream (``handle`` None: a context
        synchronise, a free), in the order it was queued."""
        self._run(None if handle is None else [self.stream(handle).handle])

    def _run(self, handles: list[int] | None) -> None:
        with self.lock:
            streams = list(self.streams.values()) if handles is None else [self.streams[h] for h in handles]
            for stream in list(streams):
                if self.blocking(stream) and stream.pending:
                    # A blocking stream's work waits for the legacy-stream work queued before it.
                    legacy = self._legacy.get(stream.context.handle)
                    if legacy is not None and legacy not in streams:
                        last = stream.pending[-1][0]
                        earlier = [entry for entry in legacy.pending if entry[0] < last]
                        legacy.pending = [entry for entry in legacy.pending if entry[0] >= last]
                        streams.append(FakeStream(0, legacy.context, pending=earlier))
            queued = sorted((entry for stream in streams for entry in stream.pending), key=lambda entry: entry[0])
            for stream in streams:
                stream.pending = []
            for _, op in queued:
                self.log.append(op.entry or (op.kind,))
                op.run()

    def destroy_stream(self, handle: int) -> None:
        """cuStreamDestroy: the stream's queued work runs, then its handle names no stream."""
        self.run_pending(handle)
        with self.lock:
            self.streams.pop(handle, None)

    def pending(self) -> int:
        """How many queued operations have not run yet."""
        return sum(len(stream.pending) for stream in self.streams.values())

    def launch_graph(self, ops: list[FakeOp], handle: int) -> int:
        """Launch a graph's operations on a stream: checked now, run as one queued operation."""
        for op in ops:
            reason = op.check()
            if reason is not None:
                self.log.append(("graph refused", reason))
                return CUDA_ERROR_INVALID_VALUE

        def run() -> None:
            for op in ops:
                op.run()

        self.enqueue(handle, FakeOp(run, kind="graph", entry=("graph", len(ops))))
        return CUDA_SUCCESS


# --- pycuda.driver -------------------------------------------------------------------------------------------


def make_pycuda(gpu: FakeGpu) -> tuple[types.ModuleType, types.ModuleType]:
    """Fake ``pycuda`` and ``pycuda.driver`` modules over ``gpu``."""
    driver = types.ModuleType("pycuda.driver")
    driver.Error = FakeCudaError  # type: ignore[attr-defined]
    driver.LogicError = FakeLogicError  # type: ignore[attr-defined]
    driver.MemoryError = FakeMemoryError  # type: ignore[attr-defined]
    driver.RuntimeError = FakeRuntimeError  # type: ignore[attr-defined]

    def pycuda_context() -> FakeContext:
        stack = gpu.pycuda_stack()
        if not stack or not stack[-1].alive:
            # pycuda src/cpp/cuda.hpp, explicit_context_dependent::acquire_context.
            raise FakeLogicError("explicit_context_dependent failed: invalid device context - "
                                 "no currently active context?")
        return stack[-1]

    def init(flags: int = 0) -> None:
        if gpu.init_error != CUDA_SUCCESS:  # [INIT-FAILS]
            raise FakeRuntimeError(f"cuInit failed: {ERROR_STRINGS.get(gpu.init_error, 'unknown error')}")
        gpu.initialized = True

    def mem_get_info() -> tuple[int, int]:
        # [MEM-INFO]; pycuda documentation: "Return a tuple (free, total) indicating the free and total memory in the
        # current context, in bytes".
        gpu.require_context()
        return gpu.memory_info()

    class device_attribute:  # noqa: N801 - pycuda's name
        MULTIPROCESSOR_COUNT = ATTRIBUTE_MULTIPROCESSOR_COUNT
        INTEGRATED = ATTRIBUTE_INTEGRATED
        CAN_MAP_HOST_MEMORY = ATTRIBUTE_CAN_MAP_HOST_MEMORY

    class mem_host_register_flags:  # noqa: N801 - pycuda's name
        PORTABLE = 1
        DEVICEMAP = 2

    class host_alloc_flags:  # noqa: N801 - pycuda's name
        PORTABLE = 1
        DEVICEMAP = 2
        WRITECOMBINED = 4

    def wrappers() -> list[Any]:
        """The pycuda context objects this thread pushed, beside :meth:`FakeGpu.pycuda_stack`."""
        gpu.driver_stack()
        if not hasattr(gpu._threads, "wrappers"):
            gpu._threads.wrappers = []
        return gpu._threads.wrappers  # type: ignore[no-any-return]

    class Context:
        def __init__(self, context: FakeContext) -> None:
            self._context = context
            self._owner = threading.get_ident()
            self.valid = True  # pycuda's context::m_valid, cleared by detach

        @property
        def handle(self) -> int:
            return self._context.handle

        def push(self) -> None:
            if not self._context.alive:
                raise FakeLogicError("cuCtxPushCurrent failed: invalid device context")
            gpu.driver_stack().append(self._context)
            gpu.pycuda_stack().append(self._context)
            wrappers().append(self)

        @staticmethod
        def pop() -> None:
            stack = gpu.pycuda_stack()
            if not stack:
                raise FakeLogicError("context::pop failed: cannot pop non-current context")
            stack.pop()
            gpu.driver_stack().pop()
            if wrappers():
                wrappers().pop()

        @staticmethod
        def get_current() -> Context | None:
            stack = gpu.pycuda_stack()
            return Context(stack[-1]) if stack else None

        @staticmethod
        def get_device() -> Device:
            return Device(pycuda_context().ordinal)

        @staticmethod
        def synchronize() -> None:
            pycuda_context()
            # CUDA C++ Programming Guide, CUDA Graphs, "Prohibited and Unhandled Operations": "It is also invalid to
            # query the execution status of or synchronize a broader handle which encompasses an active stream
            # capture, such as a device or context handle when any associated stream is in capture mode"; the
            # capture is invalidated.
            capturing = [stream for stream in gpu.streams.values() if stream.capture is not None]
            for stream in capturing:
                stream.capture_invalidated = True
            if capturing:
                raise FakeLogicError("cuCtxSynchronize failed: operation not permitted when stream is capturing")
            gpu.run_pending()
            gpu.log.append(("context sync",))

        def detach(self) -> None:
            context = self._context
            self.valid = False
            if threading.get_ident() != self._owner:
                # context::detach on another thread cannot release: pycuda leaves the context to leak (with a
                # warning); whoever retained it must release it through the driver.
                return
            if context.primary:
                pushed = wrappers()
                # pycuda src/cpp/cuda.hpp, context::detach: "active_before_destruction = current_context().get() ==
                # this" compares pycuda's context *objects*; each retain_primary_context() makes its own, so
                # another object of the same primary context on top does not count as this one being active.
                if not pushed or pushed[-1] is not self:
                    # context::detach activates the context to release it and leaves it pushed.
                    gpu.driver_stack().append(context)
                    gpu.pycuda_stack().append(context)
                    pushed.append(self)
                gpu.release_primary(context.ordinal)
            else:
                gpu.destroy(context)
                stack = gpu.driver_stack()
                if stack and stack[-1] is context:
                    stack.pop()
                    gpu.pycuda_stack().pop()

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Context) and other._context is self._context

        def __hash__(self) -> int:
            return hash(self._context.handle)

    def require_init(what: str) -> None:
        if not gpu.initialized:
            # [INIT]: pycuda raises the driver's CUDA_ERROR_NOT_INITIALIZED as a LogicError.
            raise FakeLogicError(f"{what} failed: initialization error")

    class Device:
        def __init__(self, ordinal: int) -> None:
            require_init("cuDeviceGet")
            if not 0 <= ordinal < gpu.count:
                raise FakeLogicError(f"cuDeviceGet failed: invalid device ordinal {ordinal}")
            self.ordinal = ordinal

        @staticmethod
        def count() -> int:
            require_init("cuDeviceGetCount")
            return gpu.count

        def name(self) -> str:
            return gpu.identity(self.ordinal)[0]

        def compute_capability(self) -> tuple[int, int]:
            return gpu.identity(self.ordinal)[1]

        def get_attribute(self, attribute: int) -> int:
            if attribute == ATTRIBUTE_INTEGRATED:
                return int(gpu.integrated)
            if attribute == ATTRIBUTE_CAN_MAP_HOST_MEMORY:
                return 1
            if attribute == ATTRIBUTE_MULTIPROCESSOR_COUNT:
                return gpu.identity(self.ordinal)[2]
            raise FakeLogicError(f"attribute {attribute} is not faked")

        def retain_primary_context(self) -> Context:
            context = gpu.primary(self.ordinal)
            context.retains += 1
            return Context(context)

        def make_context(self, flags: int = 0) -> Context:
            context = Context(FakeContext(gpu, self.ordinal, False, next(gpu._handles)))
            context.push()
            return context

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Device) and other.ordinal == self.ordinal

        def __hash__(self) -> int:
            return self.ordinal

    def refuse_during_capture(what: str) -> None:
        reason = gpu.refuse_unsafe_during_capture(what)
        if reason is not None:
            raise FakeLogicError(reason)

    def out_of_reach(ward: Context | None) -> bool:
        """Whether pycuda cannot make ``ward`` (its context object current when a stream or an allocation was made)
        current to destroy or free what was made in it: it was detached, or it is neither current nor of this
        thread (pycuda's ``scoped_context_activation``)."""
        pushed = wrappers()
        current = pushed[-1] if pushed and gpu.pycuda_stack() else None
        return ward is None or not ward.valid or (current is not ward and threading.get_ident() != ward._owner)

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            pycuda_context()
            refuse_during_capture("cuMemAlloc")
            self.ptr, _ = gpu.allocate(nbytes)
            pushed = wrappers()
            self._ward: Context | None = pushed[-1] if pushed else None
            self._valid = True  # pycuda's device_allocation::m_valid, cleared by the first free

        def __int__(self) -> int:
            return self.ptr

        def __index__(self) -> int:
            return self.ptr

        def free(self) -> None:
            if not self._valid:
                raise FakeCudaError("device_allocation::free failed: invalid resource handle")
            refuse_during_capture("cuMemFree")
            self._release()

        def _release(self) -> None:
            self._valid = False
            ward = self._ward
            if ward is not None and not ward._context.alive:
                gpu.free(self.ptr)  # a destroyed context took its memory with it
            elif out_of_reach(ward):
                gpu.log.append(("device memory leaked", self.ptr))
            else:
                gpu.free(self.ptr)

        def __del__(self) -> None:
            # not when the allocation itself failed or was freed; pycuda only warns when cuMemFree fails here
            if getattr(self, "_valid", False) and gpu.refuse_unsafe_during_capture("cuMemFree") is None:
                self._release()

    class HostAllocation(bytearray):
        """The base of a page-locked array (pycuda's HostAllocation): freed with free(), or when it is garbage
        ([PINNED-GC])."""

        def free(self) -> None:
            refuse_during_capture("cuMemFreeHost")
            self.freed_when_garbage.detach()  # type: ignore[attr-defined]
            gpu.free(self.ptr)  # type: ignore[attr-defined]

        def get_device_pointer(self) -> int:
            # cuMemHostGetDevicePointer: only for memory allocated with CU_MEMHOSTALLOC_DEVICEMAP (CUDA Driver API).
            if not self.flags & host_alloc_flags.DEVICEMAP:
                raise FakeLogicError("cuMemHostGetDevicePointer failed: memory was not allocated with DEVICEMAP")
            pycuda_context()
            return self.ptr

    class RegisteredHostMemory:
        """The base of a registered array (pycuda's RegisteredHostMemory): it keeps the host array alive."""

        def __init__(self, array: np.ndarray) -> None:
            self.array = array
            self.ptr = gpu.register(array, "registered")
            self.__array_interface__ = array.__array_interface__

        def get_device_pointer(self) -> int:
            pycuda_context()
            return self.ptr

        def unregister(self) -> None:
            gpu.free(self.ptr)

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        return DeviceAllocation(nbytes)

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        pycuda_context()
        refuse_during_capture("cuMemHostAlloc")
        dtype = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        base = HostAllocation(max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize) + ALIGNMENT)
        address = ctypes.addressof(ctypes.c_char.from_buffer(base))
        offset = (-address) % ALIGNMENT
        array = np.ndarray(shape, dtype, buffer=base, offset=offset)
        # [PINNED-GC]: the fake's record of the memory must not keep the allocation alive, so that it can be garbage.
        unowned = (ctypes.c_uint8 * array.nbytes).from_address(int(array.ctypes.data))
        base.ptr = gpu.register(np.frombuffer(unowned, np.uint8), "pinned")  # type: ignore[attr-defined]
        base.flags = mem_flags  # type: ignore[attr-defined]
        pushed = wrappers()
        base.freed_when_garbage = weakref.finalize(  # type: ignore[attr-defined]
            base, free_pinned_garbage, base.ptr, pushed[-1] if pushed else None)  # type: ignore[attr-defined]
        return array

    def free_pinned_garbage(ptr: int, ward: Context | None) -> None:
        # pycuda's pagelocked_host_allocation frees in its context as device_allocation does ([FREE-REACH]).
        if gpu.refuse_unsafe_during_capture("cuMemFreeHost") is not None:
            return
        if ward is not None and not ward._context.alive:
            gpu.free(ptr)
        elif out_of_reach(ward):
            gpu.log.append(("pinned memory leaked", ptr))
        else:
            gpu.free(ptr)

    def register_host_memory(array: np.ndarray, flags: int = 0) -> np.ndarray:
        pycuda_context()
        if not array.flags.c_contiguous:
            raise FakeLogicError("register_host_memory needs a contiguous array")
        # Like pycuda, the returned array's base is the registration (with get_device_pointer and unregister).
        return np.asarray(RegisteredHostMemory(array))

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            pycuda_context()
            self._stream = gpu.new_stream(flags)
            self.handle = self._stream.handle
            # pycuda's context_dependent: the context object current now is the one the destructor activates.
            pushed = wrappers()
            self._ward: Context | None = pushed[-1] if pushed else None

        def __del__(self) -> None:
            ward = getattr(self, "_ward", None)
            if ward is None or not ward._context.alive:
                return  # a destroyed context took its streams with it
            if out_of_reach(ward):
                gpu.log.append(("stream leaked", self.handle))
                return
            gpu.destroy_stream(self.handle)

        def synchronize(self) -> None:
            if self._stream.capture is not None:
                self._stream.capture_invalidated = True
                raise FakeLogicError("cuStreamSynchronize failed: operation not permitted when stream is capturing")
            gpu.run_pending(self.handle)

    def _pointer(value: Any) -> int:
        return int(value)

    def _stream_handle(stream: Stream | None) -> int:
        # pycuda passes stream None to the driver as 0: the legacy default stream.
        return LEGACY_HANDLES[0] if stream is None else stream.handle

    def _synchronous(what: str) -> None:
        """A synchronous copy queues on the legacy stream and waits for it (CUDA Runtime API, "API synchronization
        behavior"; pycuda's memcpy_htod and memcpy_dtoh call cuMemcpyHtoD and cuMemcpyDtoH)."""
        gpu.require_context()
        reason = gpu.refuse_legacy_during_capture(what)
        if reason is not None:
            raise FakeLogicError(reason)
        gpu.synchronize_legacy()

    def memcpy_htod(dest: Any, src: np.ndarray) -> None:
        _synchronous("cuMemcpyHtoD")
        data = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        gpu.bytes_at(_pointer(dest), data.size)[:] = data

    def memcpy_dtoh(dest: np.ndarray, src: Any) -> None:
        _synchronous("cuMemcpyDtoH")
        target = dest.reshape(-1).view(np.uint8)
        target[:] = gpu.bytes_at(_pointer(src), target.size)

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Stream | None = None) -> None:
        pycuda_context()
        dst = _pointer(dest)
        data = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        if not gpu.pinned(data):
            data = data.copy()  # staged through pinned memory by the driver: the caller may reuse its array now

        def run() -> None:
            gpu.bytes_at(dst, data.size)[:] = data

        gpu.enqueue(_stream_handle(stream), FakeOp(run, kind="htod"))

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Stream | None = None) -> None:
        pycuda_context()
        source = _pointer(src)
        target = dest.reshape(-1).view(np.uint8)

        def run() -> None:
            target[:] = gpu.bytes_at(source, target.size)

        gpu.enqueue(_stream_handle(stream), FakeOp(run, kind="dtoh"))
        if not gpu.pinned(target) and not gpu.capturing(_stream_handle(stream)):
            gpu.run_pending(_stream_handle(stream))  # into pageable memory: complete when the call returns

    for name, value in dict(locals()).items():
        if not name.startswith("_") and name not in ("driver", "gpu", "pycuda_context"):
            setattr(driver, name, value)
    package = types.ModuleType("pycuda")
    package.__path__ = []  # type: ignore[attr-defined]
    package.driver = driver  # type: ignore[attr-defined]
    return package, driver


# --- the driver library (ctypes) -----------------------------------------------------------------------------


def _value(argument: Any) -> int:
    """An integer from what the project passes through ctypes (c_void_p, c_uint64, c_int, int)."""
    value = getattr(argument, "value", argument)
    return int(value or 0)


def _target(reference: Any) -> Any:
    """The ctypes object behind ``ctypes.byref(x)``."""
    return reference._obj


class FakeDriverLibrary:
    """The ``libcuda.so.1`` calls the project makes, on :class:`FakeGpu` (names as in cuda.h).

    Attributes:
        calls: the name of every driver function called, in order (what a test counts).
    """

    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu = gpu
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the fake driver has no {name}; fake it in tests/fakes/cuda.py")

    def __getattribute__(self, name: str) -> Any:
        attribute = object.__getattribute__(self, name)
        if not name.startswith("cu"):
            return attribute
        gpu = object.__getattribute__(self, "gpu")
        calls = object.__getattribute__(self, "calls")

        def call(*args: Any) -> int:
            calls.append(name)
            if name in ("cuInit", "cuDriverGetVersion"):
                return int(attribute(*args))
            # [INIT]: "If cuInit() has not been called, any function from the driver API will return
            # CUDA_ERROR_NOT_INITIALIZED".
            return CUDA_ERROR_NOT_INITIALIZED if not gpu.initialized else int(attribute(*args))

        return call

    def _context(self) -> int:
        context = self.gpu.current()
        return CUDA_SUCCESS if context is not None and context.alive else CUDA_ERROR_INVALID_CONTEXT

    def cuInit(self, flags: Any) -> int:  # noqa: N802 - the driver's names
        if _value(flags) != 0:
            return CUDA_ERROR_INVALID_VALUE
        if self.gpu.init_error != CUDA_SUCCESS:  # [INIT-FAILS]
            return self.gpu.init_error
        self.gpu.initialized = True
        return CUDA_SUCCESS

    def cuDriverGetVersion(self, version: Any) -> int:  # noqa: N802
        # CUDA Driver API: "Returns in *driverVersion the version of CUDA supported by the driver"; no cuInit needed.
        _target(version).value = self.gpu.driver_version
        return CUDA_SUCCESS

    def cuDeviceGetCount(self, count: Any) -> int:  # noqa: N802
        _target(count).value = self.gpu.count
        return CUDA_SUCCESS

    def cuDeviceGet(self, device: Any, ordinal: Any) -> int:  # noqa: N802
        index = _value(ordinal)
        if not 0 <= index < self.gpu.count:
            return CUDA_ERROR_INVALID_VALUE
        _target(device).value = index
        return CUDA_SUCCESS

    def cuDeviceGetName(self, name: Any, length: Any, device: Any) -> int:  # noqa: N802
        # CUDA Driver API: "Returns an ASCII string identifying the device dev in the NULL-terminated string pointed
        # to by name. len specifies the maximum length of the string that may be returned."
        index = _value(device)
        if not 0 <= index < self.gpu.count:
            return CUDA_ERROR_INVALID_DEVICE
        text = self.gpu.identity(index)[0].encode()[:_value(length) - 1]
        ctypes.memmove(name, text + b"\0", len(text) + 1)
        return CUDA_SUCCESS

    def cuDeviceGetAttribute(self, value: Any, attribute: Any, device: Any) -> int:  # noqa: N802
        if _value(attribute) == ATTRIBUTE_INTEGRATED:
            _target(value).value = int(self.gpu.integrated)
            return CUDA_SUCCESS
        return CUDA_ERROR_INVALID_VALUE

    def cuDevicePrimaryCtxRetain(self, context: Any, device: Any) -> int:  # noqa: N802
        # CUDA Driver API: "Retains the primary context on the device ... Unlike cuCtxCreate() the newly retained
        # context is not pushed onto the stack."
        index = _value(device)
        if not 0 <= index < self.gpu.count:
            return CUDA_ERROR_INVALID_DEVICE
        primary = self.gpu.primary(index)
        primary.retains += 1
        _target(context).value = primary.handle
        return CUDA_SUCCESS

    def cuDevicePrimaryCtxRelease_v2(self, device: Any) -> int:  # noqa: N802
        return self.gpu.release_primary(_value(device))

    def cuCtxPushCurrent_v2(self, context: Any) -> int:  # noqa: N802
        # A context the driver knows, alive: only primary contexts are handed out through this library.
        handle = _value(context)
        known = [fake for fake in self.gpu._primary.values() if fake.handle == handle and fake.alive]
        if not known:
            return CUDA_ERROR_INVALID_CONTEXT
        self.gpu.driver_stack().append(known[0])
        return CUDA_SUCCESS

    def cuMemGetInfo_v2(self, free: Any, total: Any) -> int:  # noqa: N802
        if self._context():  # [MEM-INFO]: a context must be current
            return CUDA_ERROR_INVALID_CONTEXT
        _target(free).value, _target(total).value = self.gpu.memory_info()
        return CUDA_SUCCESS

    def cuCtxPopCurrent_v2(self, previous: Any) -> int:  # noqa: N802
        stack = self.gpu.driver_stack()
        if not stack:
            return CUDA_ERROR_INVALID_CONTEXT
        popped = stack.pop()
        pycuda = self.gpu.pycuda_stack()
        if pycuda and pycuda[-1] is popped:
            pycuda.pop()
        _target(previous).value = popped.handle
        return CUDA_SUCCESS

    def cuStreamBeginCapture_v2(self, stream: Any, mode: Any) -> int:  # noqa: N802
        if self._context():
            return CUDA_ERROR_INVALID_CONTEXT
        fake = self.gpu.streams.get(_value(stream))
        if fake is None:
            return CUDA_ERROR_INVALID_HANDLE
        if fake.capture is not None:
            return CUDA_ERROR_INVALID_VALUE
        fake.capture, fake.capture_invalidated = [], False
        fake.capture_thread, fake.capture_mode = threading.get_ident(), _value(mode)
        return CUDA_SUCCESS

    def cuStreamIsCapturing(self, stream: Any, status: Any) -> int:  # noqa: N802
        _target(status).value = int(self.gpu.capturing(_value(stream)))
        return CUDA_SUCCESS

    def cuStreamEndCapture(self, stream: Any, graph: Any) -> int:  # noqa: N802
        fake = self.gpu.streams.get(_value(stream))
        if fake is None or fake.capture is None:
            return CUDA_ERROR_INVALID_VALUE
        if fake.capture_mode != CAPTURE_MODE_RELAXED and fake.capture_thread != threading.get_ident():
            return CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD  # [CAPTURE-THREAD]: the capture goes on
        ops, invalidated = fake.capture, fake.capture_invalidated
        fake.capture, fake.capture_invalidated = None, False
        if invalidated:
            _target(graph).value = None
            return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        handle = next(self.gpu._handles)
        self.gpu.graphs[handle] = ops
        _target(graph).value = handle
        return CUDA_SUCCESS

    def cuGraphInstantiateWithFlags(self, graph_exec: Any, graph: Any, flags: Any) -> int:  # noqa: N802
        ops = self.gpu.graphs.get(_value(graph))
        if ops is None:
            return CUDA_ERROR_INVALID_VALUE
        handle = next(self.gpu._handles)
        self.gpu.execs[handle] = list(ops)
        _target(graph_exec).value = handle
        return CUDA_SUCCESS

    def cuGraphLaunch(self, graph_exec: Any, stream: Any) -> int:  # noqa: N802
        if self._context():
            return CUDA_ERROR_INVALID_CONTEXT
        ops = self.gpu.execs.get(_value(graph_exec))
        if ops is None or _value(stream) not in self.gpu.streams:
            return CUDA_ERROR_INVALID_HANDLE
        return self.gpu.launch_graph(ops, _value(stream))

    def cuGraphExecDestroy(self, graph_exec: Any) -> int:  # noqa: N802
        return CUDA_SUCCESS if self.gpu.execs.pop(_value(graph_exec), None) is not None else CUDA_ERROR_INVALID_VALUE

    def cuGraphDestroy(self, graph: Any) -> int:  # noqa: N802
        return CUDA_SUCCESS if self.gpu.graphs.pop(_value(graph), None) is not None else CUDA_ERROR_INVALID_VALUE

    def _queue(self, stream: Any, run: Callable[[], None], kind: str) -> int:
        if self._context():
            return CUDA_ERROR_INVALID_CONTEXT
        if _value(stream) in LEGACY_HANDLES and self.gpu.refuse_legacy_during_capture(kind) is not None:
            return CUDA_ERROR_STREAM_CAPTURE_IMPLICIT
        if _value(stream) not in self.gpu.streams and _value(stream) not in LEGACY_HANDLES:
            return CUDA_ERROR_INVALID_HANDLE
        self.gpu.enqueue(_value(stream), FakeOp(run, kind=kind))
        return CUDA_SUCCESS

    def cuMemcpyHtoDAsync_v2(self, dst: Any, src: Any, nbytes: Any, stream: Any) -> int:  # noqa: N802
        return self._copy(dst, src, nbytes, stream, "htod")

    def cuMemcpyDtoHAsync_v2(self, dst: Any, src: Any, nbytes: Any, stream: Any) -> int:  # noqa: N802
        return self._copy(dst, src, nbytes, stream, "dtoh")

    def cuMemcpyDtoDAsync_v2(self, dst: Any, src: Any, nbytes: Any, stream: Any) -> int:  # noqa: N802
        return self._copy(dst, src, nbytes, stream, "dtod")

    def _copy(self, dst: Any, src: Any, nbytes: Any, stream: Any, kind: str) -> int:
        target, source, size = _value(dst), _value(src), _value(nbytes)

        def run() -> None:
            self.gpu.bytes_at(target, size)[:] = self.gpu.bytes_at(source, size)

        return self._queue(stream, run, kind)

    def cuMemcpy2DAsync_v2(self, copy: Any, stream: Any) -> int:  # noqa: N802
        c = _target(copy)
        src, dst = int(c.srcDevice), int(c.dstDevice)
        src_pitch, dst_pitch, width, height = int(c.srcPitch), int(c.dstPitch), int(c.WidthInBytes), int(c.Height)
        if (dst + (height - 1) * dst_pitch + width > src and src + (height - 1) * src_pitch + width > dst):
            # cuMemcpy2D: "the source and destination regions must not overlap" (undefined otherwise).
            return CUDA_ERROR_INVALID_VALUE

        def run() -> None:
            for row in range(height):
                data = self.gpu.bytes_at(src + row * src_pitch, width).copy()
                self.gpu.bytes_at(dst + row * dst_pitch, width)[:] = data

        return self._queue(stream, run, "copy_2d")

    def cuMemsetD8Async(self, dst: Any, value: Any, nbytes: Any, stream: Any) -> int:  # noqa: N802
        target, byte, size = _value(dst), _value(value), _value(nbytes)
        return self._queue(stream, lambda: self.gpu.bytes_at(target, size).fill(byte), "zero")

    def cuStreamSynchronize(self, stream: Any) -> int:  # noqa: N802
        if self._context():
            return CUDA_ERROR_INVALID_CONTEXT
        if _value(stream) in LEGACY_HANDLES:
            if self.gpu.refuse_legacy_during_capture("cuStreamSynchronize") is not None:
                return CUDA_ERROR_STREAM_CAPTURE_IMPLICIT
            self.gpu.synchronize_legacy()
            self.gpu.log.append(("sync",))
            return CUDA_SUCCESS
        fake = self.gpu.streams.get(_value(stream))
        if fake is None:
            return CUDA_ERROR_INVALID_HANDLE
        if fake.capture is not None:
            fake.capture_invalidated = True
            return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
        self.gpu.run_pending(fake.handle)
        self.gpu.log.append(("sync",))
        return CUDA_SUCCESS


class ArrayOnStream:
    """Another library's float32 device array (torch's, CuPy's) whose producer queued it on ``stream``: CUDA Array
    Interface v3, where ``stream`` None means no synchronisation is needed and 1 is the legacy default stream."""

    def __init__(self, ptr: int, shape: tuple[int, ...], stream: int | None) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4", "strides": None, "data": (ptr, False),
                                         "version": 3, "stream": stream}


def install_fake_gpu(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu | None = None) -> FakeGpu:
    """Put the fake pycuda into ``sys.modules`` and the fake driver library behind :func:`unetrt.cuda.driver_library`.

    Example:
        >>> gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))  # doctest: +SKIP
    """
    import unetrt.cuda

    gpu = gpu or FakeGpu()
    # The fake's devices are the ones this process sees: the variable of the machine running the tests does not apply
    # to them (a test that sets it sets it afterwards, for what unetrt says about it).
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    package, driver = make_pycuda(gpu)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    library = FakeDriverLibrary(gpu)
    monkeypatch.setattr(unetrt.cuda, "driver_library", lambda: library)
    return gpu


@contextmanager
def primary_context_pushed(ordinal: int = 0) -> Iterator[Any]:
    """The device's primary context retained and current for the block, as a test's own allocations need it;
    yields the installed (fake) ``pycuda.driver``.

    Example:
        >>> with primary_context_pushed() as cuda:  # doctest: +SKIP
        ...     buffer = cuda.mem_alloc(1024)
    """
    import pycuda.driver as cuda

    cuda.init()  # [INIT]: as every pycuda program starts
    context = cuda.Device(ordinal).retain_primary_context()
    context.push()
    try:
        yield cuda
    finally:
        cuda.Context.pop()
        context.detach()


@contextmanager
def capturing_on_another_thread(mode: int = 0, ordinal: int = 0) -> Iterator[None]:
    """Another thread captures a CUDA graph on a non-blocking stream of the device's primary context for the block,
    in ``mode`` (0, global: PyTorch's torch.cuda.graph default; 1, thread-local), through the fake driver library.

    Example:
        >>> with capturing_on_another_thread():  # doctest: +SKIP
        ...     backend = TensorRTBackend(plan)
    """
    import unetrt.cuda

    library = unetrt.cuda.driver_library()
    begun, finish, failed = threading.Event(), threading.Event(), []

    def capture() -> None:
        with primary_context_pushed(ordinal) as cuda:
            stream = cuda.Stream(flags=STREAM_NON_BLOCKING)
            handle = ctypes.c_void_p(stream.handle)
            status = library.cuStreamBeginCapture_v2(handle, ctypes.c_int(mode))
            failed.append(status)
            begun.set()
            if status == CUDA_SUCCESS:
                finish.wait()
                library.cuStreamEndCapture(handle, ctypes.byref(ctypes.c_void_p()))

    thread = threading.Thread(target=capture, name="another-library-capturing")
    thread.start()
    try:
        if not begun.wait(30) or failed != [CUDA_SUCCESS]:
            raise FakeCudaError(f"the other thread's capture did not begin: {failed}")
        yield
    finally:
        finish.set()
        thread.join()
