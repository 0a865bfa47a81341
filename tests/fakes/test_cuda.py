"""The fake GPU's own rules (tests/fakes/cuda.py): work queued on a stream is asynchronous, as on a GPU, so a test
that reads a result before its stream was waited for sees stale memory, as a Jetson user would."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fakes.cuda import FakeGpu, FakeOp, install_fake_gpu, primary_context_pushed

pytestmark = pytest.mark.gpu_contract


@pytest.fixture
def pycuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeGpu, Any]]:
    gpu = install_fake_gpu(monkeypatch)
    with primary_context_pushed() as cuda:
        yield gpu, cuda


def test_a_copy_has_not_happened_until_its_stream_is_synchronised(pycuda: tuple[FakeGpu, Any]) -> None:
    gpu, cuda = pycuda
    device = cuda.mem_alloc(16)
    source = cuda.pagelocked_empty(16, np.uint8)
    source[:] = 7
    stream = cuda.Stream()
    cuda.memcpy_htod_async(device, source, stream)
    assert not gpu.view(int(device), (16,), np.uint8).any() and gpu.pending() == 1
    stream.synchronize()
    assert (gpu.view(int(device), (16,), np.uint8) == 7).all() and gpu.pending() == 0


def test_a_stream_synchronise_runs_that_streams_work_alone(pycuda: tuple[FakeGpu, Any]) -> None:
    gpu, cuda = pycuda
    device = cuda.mem_alloc(4)
    source = cuda.pagelocked_empty(4, np.uint8)
    source[:] = 3
    writer, reader = cuda.Stream(), cuda.Stream()
    cuda.memcpy_htod_async(device, source, writer)
    reader.synchronize()  # another stream's work is not this one's to wait for
    assert not gpu.view(int(device), (4,), np.uint8).any()
    cuda.Context.synchronize()  # the context waits for every stream
    assert (gpu.view(int(device), (4,), np.uint8) == 3).all()


def test_pinned_memory_is_read_when_the_copy_runs_pageable_memory_when_it_is_queued(
        pycuda: tuple[FakeGpu, Any]) -> None:
    gpu, cuda = pycuda
    stream = cuda.Stream()
    pinned, pageable = cuda.pagelocked_empty(4, np.uint8), np.zeros(4, np.uint8)
    into_pinned, into_pageable = cuda.mem_alloc(4), cuda.mem_alloc(4)
    pinned[:], pageable[:] = 1, 1
    cuda.memcpy_htod_async(into_pinned, pinned, stream)
    cuda.memcpy_htod_async(into_pageable, pageable, stream)
    pinned[:], pageable[:] = 2, 2  # rewritten before the stream was waited for
    stream.synchronize()
    assert gpu.view(int(into_pinned), (4,), np.uint8).tolist() == [2] * 4  # DMA from the host memory itself
    assert gpu.view(int(into_pageable), (4,), np.uint8).tolist() == [1] * 4  # staged by the driver at the call


def test_a_copy_into_pageable_memory_is_complete_on_return_into_pinned_memory_after_a_synchronise(
        pycuda: tuple[FakeGpu, Any]) -> None:
    gpu, cuda = pycuda
    stream = cuda.Stream()
    device = cuda.mem_alloc(4)
    gpu.view(int(device), (4,), np.uint8)[:] = 9
    pageable, pinned = np.zeros(4, np.uint8), cuda.pagelocked_empty(4, np.uint8)
    pinned[:] = 0
    cuda.memcpy_dtoh_async(pinned, device, stream)
    cuda.memcpy_dtoh_async(pageable, device, stream)
    assert pageable.tolist() == [9] * 4 and pinned.tolist() == [9] * 4  # the pageable copy waited for the stream
    zeros = cuda.mem_alloc(4)  # kept: freeing it would wait for the stream
    cuda.memcpy_dtoh_async(pinned, zeros, stream)
    assert pinned.tolist() == [9] * 4
    stream.synchronize()
    assert pinned.tolist() == [0] * 4


def test_a_free_waits_for_the_work_queued_before_it(pycuda: tuple[FakeGpu, Any]) -> None:
    gpu, cuda = pycuda
    stream = cuda.Stream()
    ran: list[str] = []
    gpu.enqueue(stream.handle, FakeOp(lambda: ran.append("kernel"), kind="kernel"))
    cuda.mem_alloc(4).free()
    assert ran == ["kernel"]


def test_a_graph_launch_is_queued_like_any_other_work(pycuda: tuple[FakeGpu, Any]) -> None:
    gpu, cuda = pycuda
    stream = cuda.Stream()
    ran: list[str] = []
    assert gpu.launch_graph([FakeOp(lambda: ran.append("kernel"), kind="kernel")], stream.handle) == 0
    assert ran == []
    stream.synchronize()
    assert ran == ["kernel"] and ("graph", 1) in gpu.log


def test_without_deferral_queued_work_runs_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = install_fake_gpu(monkeypatch, FakeGpu(deferred=False))
    import pycuda.driver as cuda

    cuda.init()
    context = cuda.Device(0).make_context()
    try:
        stream, device = cuda.Stream(), cuda.mem_alloc(4)
        cuda.memcpy_htod_async(device, np.full(4, 5, np.uint8), stream)
        assert gpu.view(int(device), (4,), np.uint8).tolist() == [5] * 4
    finally:
        context.detach()


def test_the_legacy_stream_is_refused_while_a_blocking_stream_captures_on_any_thread(
        pycuda: tuple[FakeGpu, Any]) -> None:
    """CUDA Programming Guide, "Prohibited and Unhandled Operations": "When any stream in the same context is being
    captured, and it was not created with cudaStreamNonBlocking, any attempted use of the legacy stream is
    invalid"; a non-blocking stream's capture leaves the legacy stream (and synchronous copies) usable."""
    from fakes.cuda import STREAM_NON_BLOCKING, FakeDriverLibrary

    gpu, cuda = pycuda
    device, host = cuda.mem_alloc(4), np.full(4, 3, np.uint8)
    driver = FakeDriverLibrary(gpu)
    for flags, refused in ((0, True), (STREAM_NON_BLOCKING, False)):
        stream = cuda.Stream(flags)
        assert driver.cuStreamBeginCapture_v2(stream.handle, 1) == 0  # thread-local: other threads still count
        errors: list[BaseException] = []
        thread = threading.Thread(target=_synchronous_copy, args=(cuda, device, host, errors))
        thread.start()
        thread.join()
        assert (len(errors) == 1, driver.cuStreamSynchronize(1) != 0) == (refused, refused)
        graph = ctypes.c_void_p()
        assert (driver.cuStreamEndCapture(stream.handle, ctypes.byref(graph)) != 0) == refused


def _synchronous_copy(cuda: Any, device: Any, host: np.ndarray, errors: list[BaseException]) -> None:
    """pycuda's memcpy_htod (synchronous: the legacy stream) with the primary context pushed on this thread."""
    with primary_context_pushed():
        try:
            cuda.memcpy_htod(device, host)
        except cuda.Error as exc:
            errors.append(exc)


def test_a_blocking_stream_waits_for_earlier_legacy_work_a_non_blocking_one_does_not(
        pycuda: tuple[FakeGpu, Any]) -> None:
    """CUDA Driver API, "Stream synchronization behavior": the legacy stream "synchronizes with all other streams
    in the same CUcontext except for non-blocking streams"."""
    from fakes.cuda import STREAM_NON_BLOCKING

    gpu, cuda = pycuda
    source = cuda.pagelocked_empty(4, np.uint8)
    source[:] = 5
    for flags, waits in ((0, True), (STREAM_NON_BLOCKING, False)):
        device = cuda.mem_alloc(4)
        gpu.view(int(device), (4,), np.uint8)[:] = 0
        cuda.memcpy_htod_async(device, source, None)  # the legacy stream
        stream = cuda.Stream(flags)
        gpu.enqueue(stream.handle, FakeOp(lambda: None, kind="kernel"))
        stream.synchronize()
        assert (gpu.view(int(device), (4,), np.uint8) == 5).all() == waits
        cuda.Context.synchronize()


def test_device_memory_freed_out_of_its_contexts_reach_is_leaked(monkeypatch: pytest.MonkeyPatch) -> None:
    """[FREE-REACH] pycuda's device_allocation::free: freed with its context current, or on the thread that retained
    the context (pycuda pushes it); leaked without a word on another thread; a second free() raises."""
    gpu = install_fake_gpu(monkeypatch)
    import pycuda.driver as cuda

    cuda.init()
    context = cuda.Device(0).retain_primary_context()
    context.push()
    memory = [cuda.mem_alloc(16) for _ in range(3)]
    pointers = [int(allocation) for allocation in memory]
    memory[0].free()  # with its context current
    with pytest.raises(cuda.Error, match="invalid resource handle"):
        memory[0].free()
    cuda.Context.pop()
    elsewhere = threading.Thread(target=memory[1].free)  # on another thread, its context not current there
    elsewhere.start()
    elsewhere.join()
    memory[2].free()  # on the thread that retained the context: pycuda pushes it to free the memory
    assert ("device memory leaked", pointers[1]) in gpu.log and gpu.live("device") == 1
    assert ("device memory leaked", pointers[2]) not in gpu.log and gpu.driver_stack() == []
    context.push()
    context.detach()
    cuda.Context.pop()


def test_page_locked_memory_is_freed_when_it_is_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    """[PINNED-GC] pycuda's PagelockedHostAllocation frees its memory once deleted, in its context's reach as
    [FREE-REACH] says; the fake kept it allocated for good."""
    gpu = install_fake_gpu(monkeypatch)
    import pycuda.driver as cuda

    cuda.init()
    context = cuda.Device(0).retain_primary_context()
    context.push()
    arrays = [cuda.pagelocked_empty((4, 4), np.float32) for _ in range(3)]
    pointers = [int(array.ctypes.data) for array in arrays]
    assert gpu.live("pinned") == 3 and all(gpu.pinned(array) for array in arrays)
    arrays[0].base.free()
    arrays.pop(0)  # freed already: nothing more when it is garbage
    arrays.pop(0)  # garbage with its context current
    assert gpu.live("pinned") == 1
    cuda.Context.pop()
    elsewhere = threading.Thread(target=arrays.clear)  # garbage on another thread, its context not current there
    elsewhere.start()
    elsewhere.join()
    assert ("pinned memory leaked", pointers[2]) in gpu.log and gpu.live("pinned") == 1
    context.push()
    context.detach()
    cuda.Context.pop()


def test_a_stream_garbage_out_of_its_contexts_reach_is_leaked_in_it_destroyed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """pycuda's stream::~stream: destroyed with its context current, or on the thread that retained the context;
    leaked without a word on another thread, or once pycuda's context object was detached."""
    gpu = install_fake_gpu(monkeypatch)
    import pycuda.driver as cuda

    cuda.init()
    context, other = (cuda.Device(0).retain_primary_context() for _ in range(2))
    context.push()
    streams = [cuda.Stream() for _ in range(4)]
    handles = [stream.handle for stream in streams]
    streams.pop()  # with its context current
    cuda.Context.pop()
    leaked = threading.Thread(target=streams.pop)  # on another thread
    leaked.start()
    leaked.join()
    streams.pop()  # on the thread that retained the context: pycuda pushes it to destroy the stream
    assert handles[3] not in gpu.streams and handles[1] not in gpu.streams
    assert ("stream leaked", handles[2]) in gpu.log and handles[2] in gpu.streams
    context.push()
    context.detach()  # the retain `other` keeps the context itself alive
    cuda.Context.pop()
    streams.clear()
    assert ("stream leaked", handles[0]) in gpu.log and handles[0] in gpu.streams
    primary = gpu.primary(0)
    assert primary.alive and primary.retains == 1
    other.push()
    other.detach()
    cuda.Context.pop()
    assert gpu.pycuda_stack() == [] and not primary.alive


def test_a_driver_without_a_usable_gpu_fails_cuinit_and_pycudas_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """[INIT-FAILS]: cuInit returns CUDA_ERROR_NO_DEVICE, later driver calls CUDA_ERROR_NOT_INITIALIZED, and pycuda's
    init raises its RuntimeError, a pycuda error that Python's RuntimeError does not catch."""
    import unetrt.cuda
    from fakes.cuda import CUDA_ERROR_NO_DEVICE, CUDA_ERROR_NOT_INITIALIZED

    install_fake_gpu(monkeypatch, FakeGpu(init_error=CUDA_ERROR_NO_DEVICE))
    import pycuda.driver as cuda

    library = unetrt.cuda.driver_library()
    count = ctypes.c_int(0)
    assert library.cuInit(0) == CUDA_ERROR_NO_DEVICE
    assert library.cuDeviceGetCount(ctypes.byref(count)) == CUDA_ERROR_NOT_INITIALIZED
    with pytest.raises(cuda.RuntimeError, match="cuInit failed: no CUDA-capable device is detected") as failed:
        cuda.init()
    assert isinstance(failed.value, cuda.Error) and not isinstance(failed.value, RuntimeError)


def test_the_driver_records_every_call_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """FakeDriverLibrary.calls: what a test counts (cuInit and cuDriverGetVersion, which need no cuInit, too)."""
    import unetrt.cuda

    install_fake_gpu(monkeypatch, FakeGpu(count=2))
    library = unetrt.cuda.driver_library()
    count, version = ctypes.c_int(0), ctypes.c_int(0)
    assert library.cuDeviceGetCount(ctypes.byref(count)) != 0  # before cuInit: refused, and recorded all the same
    assert library.cuDriverGetVersion(ctypes.byref(version)) == 0 and library.cuInit(0) == 0
    assert library.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value == 2
    assert library.calls == ["cuDeviceGetCount", "cuDriverGetVersion", "cuInit", "cuDeviceGetCount"]


def test_the_driver_names_each_device_as_pycuda_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuDeviceGetName: the name pycuda's Device.name() gives, cut to the buffer's length with its NUL; a device the
    driver lacks is CUDA_ERROR_INVALID_DEVICE."""
    import unetrt.cuda
    from fakes.cuda import CUDA_ERROR_INVALID_DEVICE

    install_fake_gpu(monkeypatch, FakeGpu(name="NVIDIA RTX 4090", count=2, kinds={1: ("NVIDIA RTX A4000", (8, 6), 48)}))
    import pycuda.driver as cuda

    cuda.init()
    library, name = unetrt.cuda.driver_library(), ctypes.create_string_buffer(64)
    for ordinal in (0, 1):
        assert library.cuDeviceGetName(name, len(name), ordinal) == 0
        assert name.value.decode() == cuda.Device(ordinal).name()
    assert library.cuDeviceGetName(name, 6, 0) == 0 and name.value == b"NVIDI"
    assert library.cuDeviceGetName(name, len(name), 2) == CUDA_ERROR_INVALID_DEVICE
    assert unetrt.cuda.cuda_device_name(1) == "NVIDIA RTX A4000"


def test_the_driver_and_pycuda_refuse_every_call_before_cuinit(monkeypatch: pytest.MonkeyPatch) -> None:
    """[INIT]: "If cuInit() has not been called, any function from the driver API will return
    CUDA_ERROR_NOT_INITIALIZED"; pycuda's init "must be called before any other function in this module"."""
    import unetrt.cuda

    gpu = install_fake_gpu(monkeypatch)
    import pycuda.driver as cuda

    library = unetrt.cuda.driver_library()
    device = ctypes.c_int()
    assert library.cuDeviceGet(ctypes.byref(device), ctypes.c_int(0)) == 3  # CUDA_ERROR_NOT_INITIALIZED
    assert library.cuStreamSynchronize(ctypes.c_void_p(1)) == 3
    with pytest.raises(cuda.LogicError, match="initialization error"):
        cuda.Device(0)
    with pytest.raises(cuda.LogicError, match="initialization error"):
        cuda.Device.count()
    version = ctypes.c_int()
    assert library.cuDriverGetVersion(ctypes.byref(version)) == 0  # asks nothing of the device
    assert library.cuInit(0) == 0 and gpu.initialized
    assert library.cuDeviceGet(ctypes.byref(device), ctypes.c_int(0)) == 0 and cuda.Device.count() == 1


def test_a_capture_ends_only_on_the_thread_that_began_it(pycuda: tuple[FakeGpu, Any]) -> None:
    """[CAPTURE-THREAD]: cuStreamEndCapture of a thread-local or global capture from another thread returns
    CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD, and the capture goes on until its own thread ends it."""
    import unetrt.cuda

    gpu, cuda = pycuda
    library = unetrt.cuda.driver_library()
    stream = cuda.Stream(flags=1)
    handle = ctypes.c_void_p(stream.handle)
    assert library.cuStreamBeginCapture_v2(handle, ctypes.c_int(1)) == 0
    graph = ctypes.c_void_p()
    ended: list[int] = []
    thread = threading.Thread(target=lambda: ended.append(library.cuStreamEndCapture(handle, ctypes.byref(graph))))
    thread.start()
    thread.join()
    assert ended == [908] and gpu.capturing(stream.handle)
    assert library.cuStreamEndCapture(handle, ctypes.byref(graph)) == 0 and graph.value


def test_memory_info_needs_a_current_context_and_free_shrinks_as_allocations_grow(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """[MEM-INFO]: cuMemGetInfo (pycuda's mem_get_info) answers CUDA_ERROR_INVALID_CONTEXT without a current context;
    with one, free is the total less every allocation in the device's memory, a library's too, whether or not the
    fake GPU has a limit (free stayed at the total without one, so no growth could be read)."""
    import unetrt.cuda
    from fakes.cuda import CUDA_ERROR_INVALID_CONTEXT, UNLIMITED_TOTAL_BYTES

    gpu = install_fake_gpu(monkeypatch)
    library = unetrt.cuda.driver_library()
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    assert library.cuInit(0) == 0
    assert library.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)) == CUDA_ERROR_INVALID_CONTEXT
    context, device = ctypes.c_void_p(), ctypes.c_int(0)
    assert library.cuDevicePrimaryCtxRetain(ctypes.byref(context), device) == 0 and gpu.primary(0).retains == 1
    assert gpu.driver_stack() == []  # retained, not pushed
    assert library.cuCtxPushCurrent_v2(context) == 0
    assert library.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)) == 0
    assert (free.value, total.value) == (UNLIMITED_TOTAL_BYTES, UNLIMITED_TOTAL_BYTES)
    assert library.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p())) == 0
    assert library.cuDevicePrimaryCtxRelease_v2(device) == 0 and not gpu.primary(0).retains
    with primary_context_pushed() as cuda:
        buffer = cuda.mem_alloc(1 << 20)
        owner = FakeOp(lambda: None)
        assert gpu.hold(owner, 3 << 20)
        assert cuda.mem_get_info() == (UNLIMITED_TOTAL_BYTES - (4 << 20), UNLIMITED_TOTAL_BYTES)
        gpu.memory_bytes = 64 << 20
        assert cuda.mem_get_info() == (60 << 20, 64 << 20)
        buffer.free()
        del owner
        assert cuda.mem_get_info() == (64 << 20, 64 << 20)
    with pytest.raises(cuda.LogicError, match="invalid device context"):
        cuda.mem_get_info()
