"""unetrt.cuda in a fork() child of a process that used CUDA: one line naming the fix, never CUDA's undefined use."""

from __future__ import annotations

import os

import pytest
from fakes.cuda import FakeGpu, install_fake_gpu
from forked import in_a_fork
from plan_fixtures import install_fake_tensorrt_gpu

import unetrt.cuda
from unetrt.cuda import NoSuchDeviceError, PrimaryContext, cuda_device_count, one_device_count
from unetrt.segmenter import Segmenter

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
# What a driver may answer after a fork, where any CUDA call is undefined (cuda.h: CUDA_ERROR_NOT_INITIALIZED).
CUDA_ERROR_NOT_INITIALIZED = 3


def assert_refused_naming_spawn(outcome: object) -> None:
    assert isinstance(outcome, str), outcome
    assert outcome.startswith("ValueError: this process is a fork of one that used CUDA, and CUDA does not survive "
                              "fork()"), outcome
    assert "'spawn' or 'forkserver'" in outcome


def test_a_context_asked_for_in_a_fork_of_a_cuda_process_is_refused_naming_spawn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA copies none of its state into a fork() child, where any CUDA use is undefined (real pycuda: "cuInit
    failed: initialization error"); every GPU model (TensorRT, the GPU path, ONNX Runtime's CUDA) takes its
    context here, which went ahead on the fake GPU as it would not on a real one."""
    install_fake_gpu(monkeypatch)
    PrimaryContext(0).release()
    assert_refused_naming_spawn(in_a_fork(lambda: PrimaryContext(0).release()))
    PrimaryContext(0).release()  # the parent's own CUDA is untouched


def test_an_automatic_choice_in_a_fork_of_a_cuda_process_is_refused_not_run_on_the_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """backend='auto' asks the driver for GPUs; one failing cuInit in the child read as no GPU, and a Jetson's
    worker ran on the CPU without a word."""
    install_fake_tensorrt_gpu(monkeypatch)
    PrimaryContext(0).release()

    def open_automatically() -> None:
        unetrt.cuda.driver_library().cuInit = lambda flags: CUDA_ERROR_NOT_INITIALIZED
        Segmenter("camvid").close()

    assert_refused_naming_spawn(in_a_fork(open_automatically))


def test_a_context_on_the_device_after_the_last_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda:1 on a one-GPU machine (devices count from 0): the line naming how many there are, not pycuda's
    'invalid device ordinal' from inside the context's creation."""
    install_fake_gpu(monkeypatch)
    with pytest.raises(ValueError, match=r"^CUDA device 1 does not exist; this machine has 1 CUDA device\(s\)$"):
        PrimaryContext(1)


def test_a_device_past_the_last_names_the_index_asked_and_the_count_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda:3 on a one-GPU machine: the line names the index asked for and how many devices there are, each in its
    place (cuda:1 on one GPU reads the same with the two swapped)."""
    install_fake_gpu(monkeypatch)
    with pytest.raises(NoSuchDeviceError,
                       match=r"^CUDA device 3 does not exist; this machine has 1 CUDA device\(s\)$"):
        PrimaryContext(3)


def test_a_device_past_those_cuda_visible_devices_shows_names_the_index_and_the_count_apart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda:3 from a shell with CUDA_VISIBLE_DEVICES=1 (one GPU shown): the line names the index asked for and how
    many the variable shows, each in its place (cuda:1 there reads the same with the two swapped)."""
    install_fake_gpu(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(NoSuchDeviceError, match=r"^CUDA device 3 does not exist for this process: "
                                                r"CUDA_VISIBLE_DEVICES=1 shows it 1 CUDA device\(s\), numbered from 0"):
        PrimaryContext(3)


def test_one_device_count_asks_the_driver_once_across_nested_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """unetrt.cuda.one_device_count's own example wraps open_backend, which opens a block of its own: the inner block
    answers from the outer one's question (two backends opened in one block ask once), and outside any block each
    call asks again."""
    install_fake_gpu(monkeypatch, FakeGpu(count=2))
    library = unetrt.cuda.driver_library()
    with one_device_count():
        for _ in range(2):
            with one_device_count():
                assert cuda_device_count() == 2
        assert cuda_device_count() == 2
    assert library.calls.count("cuDeviceGetCount") == 1, library.calls
    assert cuda_device_count() == 2
    assert library.calls.count("cuDeviceGetCount") == 2


def test_the_memory_gauge_reads_growth_in_its_retained_context_and_leaves_the_thread_as_it_was(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DeviceMemoryGauge: reads without pycuda (a desktop whose GPU only onnxruntime-gpu runs), holds the primary
    context from construction to release, so that a context made for it is in both readings, says whether the GPU
    is integrated, leaves no context current, and refuses a reading after its release."""
    import sys

    from unetrt.cuda import DeviceMemoryGauge

    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    gauge = DeviceMemoryGauge(0)
    context = gpu.primary(0)
    assert context.retains == 1 and not gauge.integrated and gauge.in_use() == 0
    owner = FakeGpu()  # any object: what holds the memory
    gpu.driver_stack().append(context)
    assert gpu.hold(owner, 5 << 20)
    gpu.driver_stack().pop()
    assert gauge.in_use() == 5 << 20 and gpu.driver_stack() == []
    gauge.release()
    gauge.release()
    assert context.retains == 0 and not context.alive
    with pytest.raises(ValueError, match="released"):
        gauge.in_use()


@pytest.mark.cuda
def test_the_memory_gauge_reads_what_a_real_allocation_takes() -> None:
    """On a real GPU (the calls' ctypes signatures included): 64 MiB torch allocates in the primary context show
    as at least that much growth, gone again once freed; the thread keeps its current context."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from unetrt.cuda import DeviceMemoryGauge

    torch.cuda.init()
    gauge = DeviceMemoryGauge(0)
    try:
        before = gauge.in_use()
        block = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        assert gauge.in_use() - before >= 64 << 20
        del block
        torch.cuda.empty_cache()
        assert gauge.in_use() - before < 64 << 20
        assert torch.cuda.current_device() == 0 and torch.zeros(1, device="cuda").item() == 0  # its context intact
    finally:
        gauge.release()


def test_a_memory_gauge_in_a_fork_of_a_cuda_process_is_refused_naming_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """unet-bench's device memory read in a fork() child of a process that used CUDA: the fork's one line, not a
    reading of CUDA state the child does not have."""
    from unetrt.cuda import DeviceMemoryGauge

    install_fake_gpu(monkeypatch)
    PrimaryContext(0).release()
    assert_refused_naming_spawn(in_a_fork(lambda: DeviceMemoryGauge(0).release()))


def test_a_memory_gauge_of_the_second_gpu_holds_that_gpus_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """DeviceMemoryGauge(1) reads GPU 1: it retains GPU 1's primary context, not GPU 0's, and lets it go."""
    from unetrt.cuda import DeviceMemoryGauge

    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False, count=2))
    gauge = DeviceMemoryGauge(1)
    assert (gpu.primary(1).retains, gpu.primary(0).retains) == (1, 0)
    gauge.release()
    assert gpu.primary(1).retains == 0
