"""The generic CUDA plumbing of the GPU path: pycuda, the driver library, the primary context, device arrays and
CUDA graphs. The TensorRT backend, :class:`unetrt.cuda_device.CudaDevice`, ONNX Runtime's IO binding and the
benchmarks all use these, so each rule below is kept in one place.

* Context: every component works in the device's *primary* context (the one the CUDA runtime, PyTorch, CuPy and
  ONNX Runtime use), retained through pycuda and pushed around every call that allocates or queues work, popped
  afterwards. pycuda allocates only in a context it pushed itself, so a context the runtime made current is not
  enough. A context some other code created (``pycuda.autoinit``, ``make_context``) is never adopted: device
  arrays from it would not be valid in the runtime's context. No device ordinal is assumed.
* Device arrays: :class:`DeviceArray` is the one device-array type; :func:`read_cuda_array` is the one reader of
  ``__cuda_array_interface__``.
* Memory in use: :class:`DeviceMemoryGauge` is the one reader of ``cuMemGetInfo``; it retains the primary context
  through the driver library, not pycuda, since it must read where only onnxruntime-gpu runs the GPU.
* Graphs: :class:`GraphCache` is the one CUDA-graph policy: the first call of a key runs plainly (the warm-up
  TensorRT and cuDNN need), the second is captured and replayed, later calls replay; a new key drops the graph;
  a failed capture turns graphs off for that key with a warning and runs the work plainly.

pycuda is imported lazily; this module imports anywhere.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from .caller_warning import warn_caller
from .dropped import release_when_dropped

MISSING_PYCUDA = (
    "pycuda is not installed: run `pip install pycuda` (it builds against the CUDA toolkit; on a Jetson use "
    "the one from JetPack) to run TensorRT engines"
)
# CUstreamCaptureMode: capture only this thread's CUDA calls, so other threads' work cannot break it.
CAPTURE_MODE_THREAD_LOCAL = 1
# cuStreamCreate's CU_STREAM_NON_BLOCKING (pycuda's Stream(flags=...) takes the raw flags). A stream that captures
# CUDA graphs must be non-blocking: "When any stream in the same context is being captured, and it was not created
# with cudaStreamNonBlocking, any attempted use of the legacy stream is invalid ... It is therefore also invalid to
# call synchronous APIs in this case" (CUDA C++ Programming Guide, CUDA Graphs, "Prohibited and Unhandled
# Operations"): with a blocking one, every other thread's legacy-stream work in the primary context (torch's
# default stream, a synchronous copy) would fail while unetrt captures, and break the capture.
STREAM_NON_BLOCKING = 1
# CU_STREAM_LEGACY, the legacy default stream's handle (CUDA Array Interface v3: stream 1).
STREAM_LEGACY = 1
# CUdevice_attribute CU_DEVICE_ATTRIBUTE_INTEGRATED (cuda.h): the GPU shares one memory with the CPU (a Jetson).
ATTRIBUTE_INTEGRATED = 18
_DTYPE_NAMES = {np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16", np.dtype(np.float16): "float16",
                np.dtype(np.float32): "float32"}


# Whether this process took a CUDA context, and whether it is a fork() child of one that had. "CUDA does not
# duplicate any of its internal data structures or threads to other processes upon a call to fork. Any use of CUDA
# after a call to fork and before a subsequent call to exec has undefined behavior" (the CUDA C++ coding rules,
# "A call to fork must be immediately followed to a call to exec"): a GPU model opened there failed on pycuda's
# "cuInit failed: initialization error" at best, naming neither the fork nor the fix.
_cuda_used = False
_forked_after_cuda = False


def _note_fork() -> None:
    global _forked_after_cuda
    _forked_after_cuda = _forked_after_cuda or _cuda_used


os.register_at_fork(after_in_child=_note_fork)


def check_not_forked() -> None:
    """Refuse in a fork() child of a process that used CUDA, before any CUDA call (undefined there, ``cuInit`` too:
    a driver that failed it would read as no GPU, and ``backend='auto'`` would run on the CPU without a word).

    Raises:
        ValueError: naming 'spawn' and 'forkserver'.

    Example:
        >>> check_not_forked()  # the interpreter running this example was not forked
    """
    if _forked_after_cuda:
        raise ValueError("this process is a fork of one that used CUDA, and CUDA does not survive fork(): open "
                         "GPU models in processes started with multiprocessing's 'spawn' or 'forkserver' method "
                         "(or fork before the first GPU model opens)")


def require_pycuda() -> None:
    """Raise an install hint unless pycuda's driver module imports.

    Raises:
        ImportError: with :data:`MISSING_PYCUDA`, or, for a pycuda that is installed but does not import, why and
            the rebuild.

    Example:
        >>> require_pycuda()  # doctest: +SKIP
    """
    try:
        import pycuda.driver  # noqa: F401
    except ImportError as exc:
        try:
            installed = metadata.version("pycuda")
        except metadata.PackageNotFoundError:
            raise ImportError(MISSING_PYCUDA) from exc
        # Built against another CUDA (a newer toolkit than the driver: an undefined cu* symbol) or Python: "not
        # installed" sent the user to a pip that answered "Requirement already satisfied".
        raise ImportError(f"pycuda {installed} is installed but does not import ({' '.join(str(exc).split())}); "
                          "rebuild it here: pip install --force-reinstall --no-binary pycuda pycuda") from exc


def pycuda_available() -> bool:
    """Whether pycuda imports."""
    try:
        require_pycuda()
    except ImportError:
        return False
    return True


def driver_library() -> Any:
    """The CUDA driver library (``libcuda.so.1``) through ctypes; the tests replace this function with a fake."""
    return ctypes.CDLL("libcuda.so.1")


# The answer of cuda_device_count inside one_device_count's block, once asked (a list: empty until then).
_device_count_asked: ContextVar[list[int] | None] = ContextVar("unetrt_device_count_asked", default=None)


@contextmanager
def one_device_count() -> Iterator[None]:
    """Within the block (on this thread, nested blocks included), :func:`cuda_device_count` asks the driver once.

    Opening a model asks it at each step (whether TensorRT has a GPU, whether ONNX Runtime's CUDA provider has one,
    whether the device asked for exists): one question per open is enough, since the driver enumerates its devices
    once, in ``cuInit``.

    Example:
        >>> with one_device_count():  # doctest: +SKIP
        ...     backend = open_backend("camvid")
    """
    token = _device_count_asked.set([]) if _device_count_asked.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _device_count_asked.reset(token)


def cuda_device_count() -> int:
    """How many CUDA GPUs the driver sees, asked of ``libcuda.so.1`` itself (0 without a driver); inside
    :func:`one_device_count`, the first answer there.

    Needs neither pycuda nor a context, so a machine with a GPU and TensorRT but no pycuda is still told apart
    from one without a GPU (and told to install pycuda).

    Raises:
        ValueError: in a fork() child of a process that used CUDA (:func:`check_not_forked`).

    Example:
        >>> cuda_device_count()  # doctest: +SKIP
        1
    """
    check_not_forked()
    asked = _device_count_asked.get()
    if asked:
        return asked[0]
    count = _ask_device_count()
    if asked is not None:
        asked.append(count)
    return count


def _ask_device_count() -> int:
    """How many CUDA GPUs ``libcuda.so.1`` sees (0 without a driver, or where CUDA does not start)."""
    try:
        library = driver_library()
    except OSError:  # no NVIDIA driver on this machine
        return 0
    if library.cuInit(0) != 0:  # cuda_init_error says why
        return 0
    count = ctypes.c_int(0)
    if library.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def cuda_device_name(ordinal: int = 0) -> str:
    """The name the driver gives CUDA device ``ordinal`` (``cuDeviceGetName``), asked of ``libcuda.so.1`` itself:
    without pycuda, torch or a context (a machine whose GPU only onnxruntime-gpu runs).

    Raises:
        ValueError: when the driver cannot name it (none installed, CUDA not started, no such device), or in a fork()
            child of a process that used CUDA (:func:`check_not_forked`).

    Example:
        >>> cuda_device_name(0)  # doctest: +SKIP
        'NVIDIA GeForce RTX 4070 Laptop GPU'
    """
    check_not_forked()
    try:
        library = driver_library()
    except OSError as exc:
        raise ValueError(f"no NVIDIA driver names CUDA device {ordinal} ({exc})") from exc
    device, name = ctypes.c_int(0), ctypes.create_string_buffer(256)
    status = int(library.cuInit(0))
    if status == 0:
        status = int(library.cuDeviceGet(ctypes.byref(device), ordinal))
    if status == 0:
        status = int(library.cuDeviceGetName(name, len(name), device))
    if status != 0:
        raise ValueError(f"the NVIDIA driver cannot name CUDA device {ordinal} (CUDA error {status})")
    return name.value.decode(errors="replace")


def cuda_init_error() -> int | None:
    """The error ``cuInit`` returns where the NVIDIA driver is installed but CUDA does not start on it (a laptop's
    hybrid graphics set to the integrated GPU only: ``CUDA_ERROR_NO_DEVICE``, 100; a driver a suspend left broken);
    None without a driver, or where it starts.

    Raises:
        ValueError: in a fork() child of a process that used CUDA (:func:`check_not_forked`).

    Example:
        >>> cuda_init_error()  # doctest: +SKIP
        100
    """
    check_not_forked()
    try:
        library = driver_library()
    except OSError:  # no NVIDIA driver on this machine
        return None
    status = int(library.cuInit(0))
    return None if status == 0 else status


def start_cuda() -> int:
    """Initialise CUDA through pycuda; the number of CUDA devices.

    Raises:
        ImportError: when pycuda is missing.
        ValueError: in a fork() child of a process that used CUDA, or when the driver cannot start CUDA, naming
            what to check. pycuda's ``init`` raises its own error there, which derives from Exception alone: no
            fallback and no command's one-line report caught it, so a laptop whose GPU was switched off ended
            ``Segmenter("model.plan")`` in a traceback.
    """
    global _cuda_used
    require_pycuda()
    import pycuda.driver as cuda

    check_not_forked()
    try:
        cuda.init()
    except cuda.Error as exc:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            # One naming no GPU of the machine (empty, -1, an index past the last) makes cuInit fail as on a machine
            # without any, while nvidia-smi, which does not read it, lists them all: the advice below misled.
            raise ValueError(f"CUDA did not start ({' '.join(str(exc).split())}): CUDA_VISIBLE_DEVICES={visible!r} "
                             "may name no GPU of this machine (empty, -1 or an index `nvidia-smi` does not list make "
                             "CUDA see none): unset it or name a GPU `nvidia-smi` lists, or run on the CPU "
                             "(device='cpu', --device cpu)") from exc
        raise ValueError(f"CUDA did not start ({' '.join(str(exc).split())}): the NVIDIA driver has no usable GPU; "
                         "`nvidia-smi` shows what it sees (a laptop's hybrid graphics set to the integrated GPU "
                         "only needs `sudo prime-select on-demand` and a new login; a driver left broken by a "
                         "suspend, a reboot), or run on the CPU (device='cpu', --device cpu)") from exc
    _cuda_used = True
    return int(cuda.Device.count())


def cuda_driver_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed driver supports, as (major, minor); None without a driver.

    Example:
        >>> cuda_driver_version()  # doctest: +SKIP
        (12, 6)
    """
    try:
        library = driver_library()
    except OSError:  # no NVIDIA driver on this machine
        return None
    version = ctypes.c_int(0)
    if library.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, version.value % 1000 // 10


def check(status: int, what: str) -> None:
    """Raise when a driver call did not return CUDA_SUCCESS.

    Raises:
        RuntimeError: naming the call and the CUDA error number.
    """
    if status != 0:
        raise RuntimeError(f"{what} failed with CUDA error {status}")


class NoSuchDeviceError(ValueError):
    """A CUDA device index this machine does not have (``cuda:1`` on a one-GPU Jetson): the caller's mistake, which
    no other backend answers, so an automatic choice stops on it rather than fall back."""


def check_device_exists(ordinal: int, count: int) -> None:
    """Refuse a device index outside ``0 .. count - 1``.

    Raises:
        NoSuchDeviceError: naming the index and how many devices there are; where ``CUDA_VISIBLE_DEVICES`` is set, how
            many it shows this process, numbered from 0 (the machine may have more: "this machine has 1" sent a user
            of a two-GPU desktop with ``CUDA_VISIBLE_DEVICES=1`` in the shell looking for a missing GPU).

    Example:
        >>> check_device_exists(0, 1)
    """
    if 0 <= ordinal < count:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        raise NoSuchDeviceError(f"CUDA device {ordinal} does not exist; this machine has {count} CUDA device(s)")
    # The variable "controls which GPU devices are visible to a CUDA application and in what order they are
    # enumerated" (CUDA Programming Guide, "CUDA Environment Variables", CUDA_VISIBLE_DEVICES): numbered from 0.
    raise NoSuchDeviceError(f"CUDA device {ordinal} does not exist for this process: CUDA_VISIBLE_DEVICES={visible} "
                            f"shows it {count} CUDA device(s), numbered from 0 (cuda:0 is the first it lists); ask for "
                            "one of those, or unset CUDA_VISIBLE_DEVICES to see every GPU of the machine")


def no_gpu_seen() -> str:
    """Where :func:`cuda_device_count` found no GPU, that and why, in words for an error line: where
    ``CUDA_VISIBLE_DEVICES`` is set, that this process sees none and the variable (empty, -1 or an index the machine
    lacks hides every GPU, while ``nvidia-smi``, which does not read it, still lists them: "this machine has no CUDA
    GPU" was untrue to the owner of two); else that the machine has none no NVIDIA driver sees.

    Returns:
        The words, e.g. 'this machine has no CUDA GPU (no NVIDIA driver sees one)'.

    Example:
        >>> no_gpu_seen()  # doctest: +SKIP
        'this machine has no CUDA GPU (no NVIDIA driver sees one)'
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return "this machine has no CUDA GPU (no NVIDIA driver sees one)"
    return (f"this process sees no CUDA GPU (CUDA_VISIBLE_DEVICES={visible!r} shows this process none: unset it or "
            "name a GPU `nvidia-smi` lists)")


class GpuResourceError(ValueError):
    """The GPU cannot give what was asked for now (memory, a context, a stream): nothing is wrong with the model or
    the input, and fewer programs on the GPU may let it succeed. A cached TensorRT engine is kept for it."""


class GpuMemoryError(GpuResourceError):
    """The GPU has no memory left for what was asked (pycuda's ``MemoryError``, ``CUDA_ERROR_OUT_OF_MEMORY``): freeing
    memory, unetrt's own cached buffers included, may let it succeed."""


@contextmanager
def gpu_resources(what: str) -> Iterator[None]:
    """Report pycuda's errors during the block as one-line :class:`GpuResourceError` naming ``what`` was set up.

    pycuda's errors derive from Exception alone (``pycuda.driver.Error``): neither a backend's fallback nor a
    command's one-line report would catch them, and a Jetson short of memory would end in a traceback.

    Raises:
        GpuMemoryError: (a GpuResourceError) for pycuda's ``MemoryError`` in the block.
        GpuResourceError: for any other pycuda error in the block.

    Example:
        >>> with gpu_resources("the frame path's buffers"):  # doctest: +SKIP
        ...     buffer = pycuda.driver.mem_alloc(1 << 20)
    """
    import pycuda.driver as cuda

    try:
        yield
    except cuda.Error as exc:
        message = " ".join(str(exc).split())
        if isinstance(exc, cuda.MemoryError):
            raise GpuMemoryError(f"the GPU has no memory left for {what} ({message}); close other programs that "
                                 "use the GPU, or run on the CPU (device='cpu', --device cpu)") from exc
        raise GpuResourceError(f"CUDA failed on {what} ({message}); `python -m unetrt.doctor` checks the GPU "
                               "setup") from exc


def allocation_refused() -> str | None:
    """Why CUDA refuses device memory on this thread now for a reason other than a lack of it, as the end of a
    one-line error naming the fix; None when it gives some, or only lacks it. A pycuda context must be current.

    A library that allocates through cudaMalloc and reports a failure only as a null result (TensorRT: "Default:
    cudaMalloc/cudaFree", ``tensorrt.Runtime.gpu_allocator``; a null engine, execution context or plan) is refused
    by stream capture on a thread with a capture of its own, and on every thread while another captures in global
    mode, PyTorch's default (CUDA Driver API, ``cuThreadExchangeStreamCaptureMode``); a one-byte allocation tells
    that case apart from a damaged plan or a lack of memory. It fails as the library's did, so it breaks no capture
    that was not broken already.

    Example:
        >>> if engine is None and (refused := allocation_refused()) is not None:  # doctest: +SKIP
        ...     raise GpuResourceError(f"TensorRT could not load the engine: {refused}")
    """
    import pycuda.driver as cuda

    try:
        probe = cuda.mem_alloc(1)
    except cuda.MemoryError:
        return None
    except cuda.Error as exc:
        reason = " ".join(str(exc).split())
        return (f"CUDA refuses to allocate GPU memory on this thread now ({reason}), most often because another "
                "thread captures a CUDA graph in global mode (torch.cuda.graph's default); run this before or after "
                "that capture, or capture with torch.cuda.graph(..., capture_error_mode='thread_local')")
    probe.free()
    return None


def cuda_ordinal(device: str) -> int:
    """The CUDA device index of a device spelling: 'auto' and 'cuda' are 0, 'cuda:N' is N; a backend's device
    text ('cuda:1 (Orin)', 'cuda (NVIDIA A100)') works too.

    Raises:
        ValueError: when the text names no CUDA device.

    Example:
        >>> cuda_ordinal("cuda:1 (Orin)")
        1
    """
    if device == "auto":
        return 0
    match = re.fullmatch(r"cuda(?::(\d+))?(?: \(.*\))?", device)
    if match is None:
        raise ValueError(f"device must be 'auto', 'cuda' or 'cuda:N', got {device!r}")
    return int(match.group(1) or 0)


class PrimaryContext:
    """The primary context of one CUDA device, retained through pycuda until :meth:`release`.

    One dropped without :meth:`release` (its owner's construction interrupted by Ctrl-C before it took the context)
    is released on :mod:`unetrt.dropped`'s thread, through the driver: a retain nobody releases keeps the context
    alive for the rest of the process.

    Args:
        ordinal: the CUDA device index.

    Raises:
        ImportError: when pycuda is missing.
        ValueError: when there is no such device, CUDA does not start, or this process is a fork of one that used
            CUDA.
        GpuResourceError: (a ValueError) when CUDA cannot make the context (no memory left on the device).

    Example:
        >>> context = PrimaryContext(0)  # doctest: +SKIP
        >>> with context.active():  # doctest: +SKIP
        ...     buffer = pycuda.driver.mem_alloc(1024)
        >>> context.release()  # doctest: +SKIP
    """

    def __init__(self, ordinal: int = 0) -> None:
        count = start_cuda()
        import pycuda.driver as cuda

        check_device_exists(ordinal, count)
        self.ordinal = ordinal
        self.device = cuda.Device(ordinal)
        # The retain goes straight into a holder whose release is registered before it: an interrupt anywhere after
        # the retain (this constructor's last lines, or the caller's before it stores this object) cannot lose it.
        self._retained = _RetainedContext(ordinal)
        self._release_if_dropped = release_when_dropped(self, self._retained.release,
                                                        f"the context of CUDA device {ordinal}")
        try:
            with gpu_resources(f"the context of CUDA device {ordinal}"):
                self._retained.context = self.device.retain_primary_context()
        except BaseException:
            self.release()
            raise

    @property
    def integrated(self) -> bool:
        """Whether the GPU shares one memory with the CPU (a Jetson): CU_DEVICE_ATTRIBUTE_INTEGRATED."""
        import pycuda.driver as cuda

        return bool(self.device.get_attribute(cuda.device_attribute.INTEGRATED))

    @property
    def released(self) -> bool:
        """Whether the context was released (or never retained)."""
        return self._retained.context is None

    @contextmanager
    def active(self) -> Iterator[None]:
        """Push the context for the block (pycuda allocates and queues in it), pop it afterwards.

        Raises:
            ValueError: after :meth:`release`.
        """
        import pycuda.driver as cuda

        context = self._retained.context
        if context is None:
            raise ValueError("this CUDA context was released")
        context.push()
        try:
            yield
        finally:
            cuda.Context.pop()

    def release(self) -> None:
        """Release the retained context, leaving this thread's context stack as it was (idempotent)."""
        self._release_if_dropped.detach()
        self._retained.release()


class _RetainedContext:
    """The pycuda context of one retain and the thread that made it, apart from :class:`PrimaryContext` so that the
    release of one dropped unreleased does not refer to it."""

    def __init__(self, ordinal: int) -> None:
        self.ordinal = ordinal
        self.context: Any = None
        # Not threading.current_thread(): pycuda's own ownership test compares thread ids (pthread-based on Linux,
        # as get_ident() is), and release() must take the same branch as pycuda even for a thread that reuses an id.
        self.owner_thread = threading.get_ident()
        # The library the context was retained through: a release on the release thread may come at any later time.
        self.driver = driver_library()

    def release(self) -> None:
        # Forgotten before it is detached: an interrupt in between leaks the retain, where the reverse order would
        # have the next release detach it twice (pycuda refuses, or another holder's retain would be dropped).
        context, self.context = self.context, None
        if context is None:
            return
        driver = self.driver
        context.detach()
        if threading.get_ident() == self.owner_thread:
            # pycuda releases a primary context by pushing it and calling cuDevicePrimaryCtxRelease, which does not
            # pop it: pop it here, or the thread keeps a possibly destroyed context current.
            driver.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        else:
            # pycuda only releases on the thread that retained the context; release it here through the driver.
            device = ctypes.c_int()
            if driver.cuDeviceGet(ctypes.byref(device), ctypes.c_int(self.ordinal)) == 0:
                driver.cuDevicePrimaryCtxRelease_v2(device)


class DeviceMemoryGauge:
    """The device memory in use on one CUDA device, as the driver counts it: total minus free from ``cuMemGetInfo``,
    asked of the driver library alone, so that it reads wherever a GPU runs (with neither torch nor pycuda: a desktop
    whose GPU only onnxruntime-gpu runs; a Jetson, whose torch is a CPU build). The one reader of it in unetrt.

    ``cuMemGetInfo`` answers for the current context (``CUDA_ERROR_INVALID_CONTEXT`` without one), so the device's
    primary context, the one every library here works in, is retained from construction to :meth:`release` and made
    current around each reading: retained for each reading alone, it would be made and destroyed between two
    readings when nothing else holds it, its own memory counted in one and not in the other ("Unlike cuCtxCreate()
    the newly retained context is not pushed onto the stack", CUDA Driver API, ``cuDevicePrimaryCtxRetain``).

    Free is "the amount of memory on the device that is free according to the OS" (CUDA Driver API,
    ``cuMemGetInfo_v2``): on a discrete GPU every process's device memory counts, and on an integrated one
    (:attr:`integrated`, a Jetson) it is the system memory the GPU shares with the CPU and every process, swap
    left out ("The integrated GPU on Tegra shares memory with CPU and other component of the SoC", the same page;
    CUDA for Tegra, "Estimating Total Allocatable Device Memory on an Integrated GPU Device").

    Args:
        ordinal: the CUDA device index.

    Raises:
        RuntimeError: when the driver refuses (no such device, CUDA not started).
        ValueError: in a fork() child of a process that used CUDA (:func:`check_not_forked`).

    Example:
        >>> gauge = DeviceMemoryGauge(0)  # doctest: +SKIP
        >>> before = gauge.in_use()  # doctest: +SKIP
        >>> gauge.release()  # doctest: +SKIP
    """

    def __init__(self, ordinal: int = 0) -> None:
        check_not_forked()
        library = driver_library()
        device, integrated = ctypes.c_int(), ctypes.c_int()
        check(library.cuInit(0), "cuInit")
        check(library.cuDeviceGet(ctypes.byref(device), ctypes.c_int(ordinal)), "cuDeviceGet")
        check(library.cuDeviceGetAttribute(ctypes.byref(integrated), ctypes.c_int(ATTRIBUTE_INTEGRATED), device),
              "cuDeviceGetAttribute")
        self.integrated = bool(integrated.value)
        self._library, self._device = library, device
        self._context: ctypes.c_void_p | None = ctypes.c_void_p()
        check(library.cuDevicePrimaryCtxRetain(ctypes.byref(self._context), device), "cuDevicePrimaryCtxRetain")

    def in_use(self) -> int:
        """Bytes in use on the device now (total minus free).

        Raises:
            ValueError: after :meth:`release`.
            RuntimeError: when the driver refuses.
        """
        if self._context is None:
            raise ValueError("this device memory gauge was released")
        library = self._library
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        check(library.cuCtxPushCurrent_v2(self._context), "cuCtxPushCurrent")
        try:
            check(library.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
        finally:
            library.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        return int(total.value) - int(free.value)

    def release(self) -> None:
        """Release the retained context (idempotent)."""
        context, self._context = self._context, None
        if context is not None:
            self._library.cuDevicePrimaryCtxRelease_v2(self._device)


def synchronize_stream(handle: int, what: str) -> None:
    """Wait for the work queued on one CUDA stream of the current context (another library's, named by a CUDA
    Array Interface ``stream``).

    Args:
        handle: the stream's handle (``CUstream``; 1 is the legacy default stream, 2 the per-thread default
            stream).
        what: whose stream it is, for the message.

    Raises:
        RuntimeError: when the driver refuses (a stream that is capturing a graph, a handle of no stream).

    Example:
        >>> synchronize_stream(torch.cuda.current_stream().cuda_stream, "the input")  # doctest: +SKIP
    """
    status = driver_library().cuStreamSynchronize(ctypes.c_void_p(handle))
    if status != 0:
        raise RuntimeError(f"cannot wait for the stream {handle:#x} of {what}: cuStreamSynchronize failed with CUDA "
                           f"error {status}")


@dataclass(frozen=True)
class DeviceArray:
    """A C-contiguous array in device memory, described by ``__cuda_array_interface__`` so that torch, CuPy and
    ONNX Runtime can wrap it.

    Attributes:
        ptr: device address.
        shape: the array's shape.
        dtype: its element type.
        owner: what keeps the memory alive (an allocation, or the array this one is part of); None for a view of
            memory someone else owns.

    Example:
        >>> DeviceArray(0x1000, (2, 3), np.dtype(np.float32)).nbytes
        24
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    owner: object = None

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

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """Version 3 of the interface; no stream: the producer and consumer share one."""
        return {"data": (self.ptr, False), "shape": self.shape, "typestr": self.dtype.str, "strides": None,
                "version": 3, "stream": None}


@dataclass(frozen=True)
class CudaArrayInterface:
    """What an object's ``__cuda_array_interface__`` says.

    Attributes:
        ptr: device address.
        shape: the array's shape.
        strides: strides in bytes (C-contiguous ones when the producer gives none).
        dtype: the element type.
        read_only: whether the producer marked it read-only.
        stream: the producer's stream, or None.
    """

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype[Any]
    read_only: bool
    stream: int | None

    @property
    def dtype_name(self) -> str:
        """The native kernels' name of the dtype ('uint8', 'uint16', 'float16', 'float32').

        Raises:
            ValueError: for a dtype the kernels do not take.
        """
        if self.dtype not in _DTYPE_NAMES:
            raise ValueError(f"device array dtype {self.dtype.str!r} is not uint8, uint16, float16 or float32")
        return _DTYPE_NAMES[self.dtype]


def cuda_array_interface(array: Any, what: str) -> CudaArrayInterface:
    """Read ``__cuda_array_interface__`` (the one reader of it in unetrt).

    Args:
        array: a CUDA ``torch.Tensor``, a CuPy array, a pycuda ``GPUArray``, a :class:`DeviceArray`.
        what: its name in error messages.

    Raises:
        ValueError: when the object has no such interface.

    Example:
        >>> cuda_array_interface(DeviceArray(0x1000, (2, 3), np.dtype(np.float32)), "images").strides
        (12, 4)
    """
    interface = getattr(array, "__cuda_array_interface__", None)
    if not isinstance(interface, dict):
        raise ValueError(
            f"{what} must be a CUDA device array with __cuda_array_interface__ (torch.Tensor on cuda, CuPy, "
            f"pycuda GPUArray), got {type(array).__name__}"
        )
    shape = tuple(int(d) for d in interface["shape"])
    dtype = np.dtype(interface["typestr"])
    strides = interface.get("strides")
    stream = interface.get("stream")
    return CudaArrayInterface(
        int(interface["data"][0]), shape,
        DeviceArray(0, shape, dtype).strides if strides is None else tuple(int(s) for s in strides), dtype,
        bool(interface["data"][1]), None if stream is None else int(stream))


def read_cuda_array(array: Any, what: str, writable: bool = False) -> tuple[DeviceArray, int | None]:
    """The C-contiguous device array behind any ``__cuda_array_interface__`` object, and its producer's stream.

    Args:
        array: a CUDA ``torch.Tensor``, a CuPy array, a pycuda ``GPUArray``, a :class:`DeviceArray`.
        what: its name in error messages.
        writable: refuse a read-only array.

    Returns:
        (the array, the producer's stream or None).

    Raises:
        ValueError: when it is not a device array, not C-contiguous, or read-only where ``writable``.

    Example:
        >>> read_cuda_array(DeviceArray(0x1000, (2, 3), np.dtype(np.float32)), "images")[0].shape
        (2, 3)
    """
    interface = cuda_array_interface(array, what)
    described = DeviceArray(interface.ptr, interface.shape, interface.dtype, array)
    if interface.strides != described.strides:
        raise ValueError(f"{what} must be C-contiguous; call .contiguous() (torch) or cupy.ascontiguousarray")
    if writable and interface.read_only:
        raise ValueError(f"{what} is a read-only device array; pass a writable one")
    return described, interface.stream


class Graph(Protocol):
    """A captured sequence of device work."""

    def launch(self, stream_handle: int) -> None:
        """Replay on the stream."""
        ...

    def destroy(self) -> None:
        """Free the graph."""
        ...


class DriverGraph:
    """A CUDA graph captured from one stream through the driver library (pycuda has no graph API)."""

    def __init__(self, graph: ctypes.c_void_p, graph_exec: ctypes.c_void_p) -> None:
        self._graph = graph
        self._exec = graph_exec

    @classmethod
    def capture(cls, stream_handle: int, enqueue: Callable[[], None]) -> DriverGraph | None:
        """Capture what ``enqueue()`` queues on the stream (nothing runs); None when the capture fails, including
        when ``enqueue`` raises RuntimeError or a pycuda error because a call refused to be captured."""
        driver = driver_library()
        stream = ctypes.c_void_p(stream_handle)
        if driver.cuStreamBeginCapture_v2(stream, ctypes.c_int(CAPTURE_MODE_THREAD_LOCAL)) != 0:
            return None
        import pycuda.driver as cuda

        enqueued = False
        try:
            enqueue()
            enqueued = True
        except (RuntimeError, cuda.Error):
            pass  # a call refused to be captured: the work runs without a graph
        finally:
            # Capture must end on the same thread even when enqueueing failed, or the stream stays unusable; the
            # graph of a failed capture is destroyed also when another error propagates.
            graph = ctypes.c_void_p()
            ended = driver.cuStreamEndCapture(stream, ctypes.byref(graph)) == 0
            if not (enqueued and ended) and graph.value:
                driver.cuGraphDestroy(graph)
        if not (enqueued and ended and graph.value):
            return None
        graph_exec = ctypes.c_void_p()
        if driver.cuGraphInstantiateWithFlags(ctypes.byref(graph_exec), graph, ctypes.c_ulonglong(0)) != 0:
            driver.cuGraphDestroy(graph)
            return None
        return cls(graph, graph_exec)

    def launch(self, stream_handle: int) -> None:
        """Replay the graph on the stream.

        Raises:
            RuntimeError: when the driver refuses the launch.
        """
        check(driver_library().cuGraphLaunch(self._exec, ctypes.c_void_p(stream_handle)), "cuGraphLaunch")

    def destroy(self) -> None:
        """Free the graph (idempotent; the owning context must be current)."""
        driver = driver_library()
        # Each handle is forgotten before it is destroyed: a destroy interrupted (Ctrl-C) right after it returned
        # must not be done again by the next destroy() (a double destroy is undefined in CUDA).
        graph_exec, self._exec = self._exec, ctypes.c_void_p()
        if graph_exec.value:
            driver.cuGraphExecDestroy(graph_exec)
        graph, self._graph = self._graph, ctypes.c_void_p()
        if graph.value:
            driver.cuGraphDestroy(graph)


CAPTURE_ATTEMPTS = 3  # refused captures of one key before its graphs are turned off


class GraphCache:
    """The CUDA-graph policy: warm up, capture on the next call, replay; a new key drops the graph; a refused
    capture is tried again on the key's next call, and after :data:`CAPTURE_ATTEMPTS` refusals graphs are turned
    off for that key (with one warning); meanwhile the work runs plainly. A refusal can be passing: another
    thread's context-wide synchronize invalidates a capture under way.

    Args:
        capture: captures ``enqueue()`` into a graph, or returns None (e.g. :meth:`DriverGraph.capture` on a stream).
        what: what is captured, for the warning.
        enabled: False runs everything plainly.

    Example:
        >>> capture = lambda enqueue: DriverGraph.capture(stream, enqueue)  # doctest: +SKIP
        >>> graphs = GraphCache(capture, "the frame path")  # doctest: +SKIP
        >>> graphs.run(("frame", 480, 360), stream, enqueue)  # doctest: +SKIP
    """

    def __init__(self, capture: Callable[[Callable[[], None]], Graph | None], what: str, enabled: bool = True) -> None:
        self._capture = capture
        self.what = what
        self.enabled = enabled
        self._key: Hashable = None
        self._runs = 0
        self._graph: Graph | None = None
        self._failed: set[Hashable] = set()
        self._refusals: dict[Hashable, int] = {}

    @property
    def graph(self) -> Graph | None:
        """The graph of the current key, once captured."""
        return self._graph

    def run(self, key: Hashable, stream: int, enqueue: Callable[[], None]) -> None:
        """Run ``enqueue()`` (which queues work on ``stream`` and raises RuntimeError when a call is refused) for
        ``key``, through the key's graph when there is one.

        Raises:
            RuntimeError: when the plain run fails, or the driver refuses to replay the graph.
        """
        if not self.enabled:
            enqueue()
            return
        if key != self._key:
            # Before a key that runs plainly too: its run may change the shape the current graph was captured with.
            self.invalidate()
            self._key = key
        if key in self._failed:
            enqueue()
            return
        self._runs += 1
        if self._graph is None and self._runs == 2:
            try:
                self._graph = self._capture(enqueue)
            except BaseException:
                self._runs = 1  # the next call of this key tries the capture again
                raise
            if self._graph is None:
                refusals = self._refusals[key] = self._refusals.get(key, 0) + 1
                if refusals < CAPTURE_ATTEMPTS:
                    self._runs = 1  # the next call of this key tries the capture again
                else:
                    self._failed.add(key)
                    warn_caller(f"CUDA graph capture of {self.what} failed {refusals} times; running it without "
                                "graphs")
        if self._graph is not None:
            self._graph.launch(stream)
            return
        try:
            enqueue()
        except BaseException:
            # A warm-up that failed (no memory left for a buffer it makes, an interrupt) is no warm-up: the next
            # call runs plainly again, since a capture cannot make what it did not (allocating is refused then).
            self._runs = 0
            raise

    def invalidate(self) -> None:
        """Drop the graph (its context must be current); the next call of any key starts with a warm-up."""
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None
        self._key = None
        self._runs = 0

    def clear(self) -> None:
        """Drop the graph and forget failed keys."""
        self.invalidate()
        self._refusals.clear()
        self._failed.clear()
