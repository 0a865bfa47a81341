"""ONNX Runtime's device entry (the GPU-resident frame path on onnxruntime-gpu's CUDA provider, no TensorRT) on the
fake GPU, pycuda and driver (tests/fakes/cuda.py) and the fake CUDA provider (tests/fakes/onnxruntime_cuda.py),
whose logits are a real CPU session's: driven directly and through a Segmenter, and the fake's own rules."""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import write_described_onnx, write_eight_bit_record, write_int8_of_elsewhere
from fakes.cuda import FakeGpu, FakeOp, install_fake_gpu, primary_context_pushed
from fakes.kernels import FakeKernels
from fakes.onnxruntime_cuda import (
    ARENA_OUT_OF_MEMORY,
    CPU,
    CUDA,
    CUDNN_FRONTEND_FAILED,
    FakeCudaProvider,
    RunFailure,
    install_fake_onnxruntime_cuda,
    real_onnxruntime,
)

from unetrt.backends.onnxruntime import OnnxRuntimeBackend, session_options
from unetrt.cuda_device import CudaDevice  # the class itself: the fixture below patches the module's name

pytestmark = pytest.mark.gpu_contract
SHAPE, OUT = (1, 3, 16, 16), (1, 3, 16, 16)  # an input shape of the tiny model and its logits' shape


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> FakeCudaProvider:
    """A discrete fake GPU (frames are uploaded, not mapped) with onnxruntime-gpu's CUDA provider on it."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    return install_fake_onnxruntime_cuda(monkeypatch, gpu)


@pytest.fixture
def model(tiny_model_files: dict[str, Path]) -> Path:
    return tiny_model_files["onnx"]


def cpu_logits(model: Path, images: np.ndarray) -> np.ndarray:
    """The logits of a real CPU session of the model, with the options every unetrt session has."""
    ort = real_onnxruntime()
    session = ort.InferenceSession(str(model), session_options(), providers=[CPU])
    (logits,) = session.run(None, {session.get_inputs()[0].name: images})
    return np.asarray(logits)


def random_batch(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A float32 N x C x H x W batch of normal noise, as the network's input."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def produce_on(gpu: FakeGpu, stream: int, ptr: int, data: np.ndarray) -> None:
    """Queue, as a kernel on ``stream`` would (the frame path's extract kernel), the writing of ``data`` at
    ``ptr``: it happens only when something waits for that stream (the fake GPU defers it)."""
    target = gpu.view(ptr, data.shape, data.dtype)
    gpu.enqueue(stream, FakeOp(lambda: target.__setitem__(..., data), kind="producer"))


@contextmanager
def device_buffers(backend: OnnxRuntimeBackend, shape: tuple[int, ...]) -> Iterator[tuple[int, int, int, Any]]:
    """Inside the backend's device session: (stream, input pointer, output pointer, pycuda driver), the buffers
    allocated in its context and freed at the end."""
    import pycuda.driver as cuda

    with backend.device_session() as stream:
        inputs = cuda.mem_alloc(int(np.prod(shape)) * 4)
        outputs = cuda.mem_alloc(int(np.prod(backend.output_shape(shape))) * 4)
        try:
            yield stream, int(inputs), int(outputs), cuda
        finally:
            inputs.free()
            outputs.free()


# --- the device entry, driven directly ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3, 32, 48), (2, 3, 16, 16)])
def test_logits_are_the_cpu_sessions_and_wait_for_the_input_queued_on_the_stream(
        provider: FakeCudaProvider, model: Path, shape: tuple[int, ...]) -> None:
    """The input is written by work still queued on the path's stream (deferred, as on a GPU); ONNX Runtime runs on
    a stream of its own, so enqueue must wait for the path's stream first, or the network reads stale memory."""
    gpu, batch, previous = provider.gpu, random_batch(shape, seed=shape[0]), random_batch(shape, seed=99)
    with OnnxRuntimeBackend(model, device="cuda") as backend:
        assert backend.device == "cuda:0" and backend.capturable is False
        with device_buffers(backend, shape) as (stream, inputs, outputs, _):
            gpu.view(inputs, shape, np.float32)[...] = previous  # an earlier frame's input, still in the buffer
            produce_on(gpu, stream, inputs, batch)
            assert gpu.pending() == 1
            backend.enqueue(inputs, shape, outputs, stream)
            # No wait here: a Run ends with the provider's stream synchronised, so the logits are there.
            logits = np.array(gpu.view(outputs, backend.output_shape(shape), np.float32))
    np.testing.assert_array_equal(logits, cpu_logits(model, batch))
    run = provider.runs[-1]
    assert run.stream != stream and run.synchronized  # its own compute stream, synchronised at the end of Run
    assert (run.input_ptr, run.input_shape, run.output_ptr) == (inputs, shape, outputs)


def test_logits_are_right_when_the_input_is_already_on_the_device(provider: FakeCudaProvider, model: Path) -> None:
    """The same with nothing pending (the fake GPU runs queued work at once): the sync is then a no-op."""
    provider.gpu.deferred = False
    batch = random_batch((1, 3, 24, 40), seed=3)
    with OnnxRuntimeBackend(model, device="cuda") as backend, \
            device_buffers(backend, batch.shape) as (stream, inputs, outputs, _):
        produce_on(provider.gpu, stream, inputs, batch)
        backend.enqueue(inputs, batch.shape, outputs, stream)
        logits = np.array(provider.gpu.view(outputs, backend.output_shape(batch.shape), np.float32))
    np.testing.assert_array_equal(logits, cpu_logits(model, batch))


def test_on_the_second_gpu_the_buffers_and_the_run_are_on_that_device(monkeypatch: pytest.MonkeyPatch,
                                                                       model: Path) -> None:
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False, count=2))
    provider = install_fake_onnxruntime_cuda(monkeypatch, gpu)
    batch = random_batch((1, 3, 16, 32), seed=4)
    with OnnxRuntimeBackend(model, device="cuda:1") as backend:
        assert backend.device == "cuda:1"
        with device_buffers(backend, batch.shape) as (stream, inputs, outputs, _):
            assert gpu.context_of(inputs) is gpu.primary(1)
            produce_on(gpu, stream, inputs, batch)
            backend.enqueue(inputs, batch.shape, outputs, stream)
            logits = np.array(gpu.view(outputs, backend.output_shape(batch.shape), np.float32))
    np.testing.assert_array_equal(logits, cpu_logits(model, batch))
    assert not provider.refused


@pytest.mark.parametrize(("gpus", "device", "message"), [
    (1, "cuda:1", r"CUDA device 1 does not exist; this machine has 1 CUDA device\(s\)"),
    (0, "cuda", "this machine has no CUDA GPU"),
    (0, "cuda:1", "this machine has no CUDA GPU"),
], ids=["second-gpu-of-one", "no-gpu", "no-gpu-second"])
def test_a_gpu_the_machine_does_not_have_is_refused_in_one_line_before_ort_falls_back(
        monkeypatch: pytest.MonkeyPatch, model: Path, capsys: pytest.CaptureFixture[str], gpus: int, device: str,
        message: str) -> None:
    """onnxruntime-gpu makes a session for a device_id the machine lacks on the CPU, after an "EP Error" banner
    on stdout ([DEVICE-ID], [FALLBACK]): the backend would blame CUDA's libraries. It names the device instead
    and never asks ONNX Runtime."""
    provider = install_fake_onnxruntime_cuda(monkeypatch, install_fake_gpu(monkeypatch, FakeGpu(count=gpus)))
    with pytest.raises(ValueError, match=message) as raised:
        OnnxRuntimeBackend(model, device=device)
    assert "libraries" not in str(raised.value)
    assert capsys.readouterr().out == "" and not provider.refused


@pytest.mark.parametrize("visible", ["-1", ""])
def test_a_cuda_visible_devices_that_hides_every_gpu_is_named_not_a_missing_driver(
        monkeypatch: pytest.MonkeyPatch, model: Path, visible: str) -> None:
    """CUDA_VISIBLE_DEVICES=-1 (or empty) in the shell makes the driver see no GPU while nvidia-smi, which does not
    read it, lists them: "no NVIDIA driver sees one" sent the user to reinstall a working driver, and "this machine
    has no CUDA GPU" (until later that day) told the owner of two that they had none."""
    install_fake_onnxruntime_cuda(monkeypatch, install_fake_gpu(monkeypatch, FakeGpu(count=0)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(ValueError, match=rf"this process sees no CUDA GPU \(CUDA_VISIBLE_DEVICES='{visible}' shows "
                                         r"this process none: unset it") as raised:
        OnnxRuntimeBackend(model, device="cuda")
    assert "driver" not in str(raised.value) and "machine" not in str(raised.value)


def test_auto_on_a_machine_without_a_gpu_runs_on_the_cpu_without_ort_s_fallback(
        monkeypatch: pytest.MonkeyPatch, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """onnxruntime-gpu where no GPU is (a CPU machine with the GPU build installed): 'auto' is the CPU provider,
    with no "EP Error" banner on stdout and no warning that CUDA's libraries are missing."""
    provider = install_fake_onnxruntime_cuda(monkeypatch, install_fake_gpu(monkeypatch, FakeGpu(count=0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with OnnxRuntimeBackend(model, device="auto") as backend:
            assert backend.device == "cpu"
    assert capsys.readouterr().out == "" and not provider.refused


@pytest.mark.parametrize("version", [(1, 32), (1, 22), (1, 18)], ids=["1.32", "1.22", "1.18"])
def test_a_provider_failing_for_its_own_reason_is_one_line_for_cuda_and_one_warning_for_auto(
        monkeypatch: pytest.MonkeyPatch, model: Path, capsys: pytest.CaptureFixture[str],
        version: tuple[int, int]) -> None:
    """An NVIDIA driver older than onnxruntime-gpu's CUDA ([DRIVER]): from 1.19 on ORT printed its "EP Error" banner
    on stdout and made the session on the CPU, and device='cuda' then blamed CUDA's libraries; on 1.17 and 1.18 it
    printed the banner and raised its RuntimeError (the retry asks for CUDA again: [VERSIONS]), a traceback for
    both devices. 'cuda' is one ValueError naming ORT's reason and the fix; 'auto' runs on the CPU after one
    warning saying so; nothing reaches stdout."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False, driver_version=11080))
    install_fake_onnxruntime_cuda(monkeypatch, gpu).version = version
    named = (r"ONNX Runtime's CUDA provider did not start \(CUDA failure 35: CUDA driver version is insufficient for "
             r"CUDA runtime version\): the NVIDIA driver \(it supports CUDA 11\.8\) is older than the CUDA "
             "onnxruntime-gpu was built for; update the NVIDIA driver")
    with pytest.raises(ValueError, match=rf"^device 'cuda' asked, but {named}") as raised:
        OnnxRuntimeBackend(model, device="cuda")
    assert "\n" not in str(raised.value) and "libraries" not in str(raised.value)
    with pytest.warns(RuntimeWarning, match=rf"^running ONNX Runtime on the CPU: {named}") as warned:
        backend = OnnxRuntimeBackend(model, device="auto")
    with backend:
        assert backend.device == "cpu"
        images = random_batch(SHAPE)
        np.testing.assert_allclose(backend.infer(images), cpu_logits(model, images), rtol=1e-5, atol=1e-5)
    assert len(warned) == 1 and capsys.readouterr().out == ""


@pytest.mark.parametrize("saturates", [True, False], ids=["without-vnni", "with-vnni"])
def test_an_eight_bit_int8_file_falling_back_to_the_cpu_runs_unfused_where_its_weights_saturate(
        monkeypatch: pytest.MonkeyPatch, tiny_int8_onnx: Path, tmp_path: Path, saturates: bool) -> None:
    """'auto' with onnxruntime-gpu whose provider does not start ends on ORT's own CPU session, made with the CUDA
    session's options: fully optimised, so an INT8 file of 8-bit weights ran on fused kernels that saturate them on a
    CPU without VNNI (as device='cpu' no longer does), without a word. It runs unfused there, saying so."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False, driver_version=11080))
    install_fake_onnxruntime_cuda(monkeypatch, gpu)
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: saturates)
    eight_bit = write_eight_bit_record(tiny_int8_onnx, tmp_path / "eight.int8.onnx")
    ort = real_onnxruntime()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with OnnxRuntimeBackend(eight_bit, device="auto") as backend:
            assert backend.device == "cpu"
            level = backend._session.get_session_options().graph_optimization_level  # type: ignore[union-attr]
    said = [str(warning.message).split(":")[0] for warning in caught]
    assert said == ["running ONNX Runtime on the CPU"] + (["eight.int8.onnx has 8-bit INT8 weights, which ONNX "
                                                           "Runtime's fused INT8 kernels saturate on this CPU without "
                                                           "VNNI"] if saturates else []), said
    assert level == (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if saturates
                     else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)


def test_an_int8_file_of_elsewhere_falling_back_to_the_cpu_reads_its_weights_once(
        monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """A file quantized elsewhere (no quantization record) is judged by its weights: the fallback judged them to
    choose its session, then its session's options read them all again. Once per opening, and it runs unfused."""
    import unetrt.model_file

    # Without CUDA's libraries onnxruntime-gpu makes its own CPU session ([PROVIDER-LIBS]), which is judged too.
    install_fake_onnxruntime_cuda(monkeypatch, install_fake_gpu(monkeypatch, FakeGpu())).libraries = False
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: True)
    eight_bit = write_int8_of_elsewhere(tiny_model_files["onnx"], tmp_path / "eight.int8.onnx", "tensorrt")
    reads: list[int] = []
    read_graph = unetrt.model_file._graph_int8_peak
    monkeypatch.setattr("unetrt.model_file._graph_int8_peak",
                        lambda *graph: reads.append(len(reads)) or read_graph(*graph))
    with pytest.warns(RuntimeWarning) as warned, OnnxRuntimeBackend(eight_bit, device="auto") as backend:
        level = backend._session.get_session_options().graph_optimization_level  # type: ignore[union-attr]
    assert [str(warning.message).split(":")[0] for warning in warned] == [
        "running ONNX Runtime on the CPU", "eight.int8.onnx has 8-bit INT8 weights, which ONNX Runtime's fused INT8 "
        "kernels saturate on this CPU without VNNI"]
    assert level == real_onnxruntime().GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert len(reads) == 1


def test_auto_asks_the_driver_for_the_gpu_count_once(provider: FakeCudaProvider,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`Segmenter("camvid")` with onnxruntime-gpu and no TensorRT: the choice asked the driver whether there is a GPU
    for ONNX Runtime's CUDA provider, and the backend it opened asked again for its device_id. Once is enough."""
    import sys

    import unetrt.cuda
    from unetrt.segmenter import Segmenter

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    library = unetrt.cuda.driver_library()
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert (segmenter.backend.name, segmenter.backend.device) == ("onnxruntime", "cuda:0")
    assert library.calls.count("cuDeviceGetCount") == 1, library.calls
    with Segmenter("camvid", warm_up=False) as segmenter:  # each open asks again
        assert segmenter.backend.device == "cuda:0"
    assert library.calls.count("cuDeviceGetCount") == 2


def test_a_cuda_session_s_run_does_not_fall_back_to_the_cpu(provider: FakeCudaProvider, model: Path) -> None:
    """[FALLBACK]: a Run failing in the provider would print ORT's banner on stdout and go on on the CPU; the
    backend turns that fallback off (disable_fallback) so that it raises instead."""
    with OnnxRuntimeBackend(model, device="cuda") as backend:
        assert backend.device == "cuda:0" and backend._session is not None
        assert backend._session.fallback is False  # type: ignore[attr-defined]  # the fake's record of it


def test_the_capture_of_ort_s_prints_keeps_another_thread_s_prints_on_stdout(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Before onnxruntime 1.23 the banner can only be captured, and sys.stdout is the process's: what another thread
    prints while a session is made (a stream's frames on stdout) reaches stdout, and what the creating thread prints
    does not; stdout is given back after."""
    import sys

    from unetrt.backends.onnxruntime import prints_captured

    before, inside, printed = sys.stdout, threading.Event(), threading.Event()

    def other() -> None:
        inside.wait(5)
        print("another thread's data")
        printed.set()

    thread = threading.Thread(target=other)
    thread.start()
    with prints_captured() as texts:
        print("*** EP Error ***")
        inside.set()
        assert printed.wait(5)
    thread.join()
    print("after")
    assert "".join(texts) == "*** EP Error ***\n" and sys.stdout is before
    assert capsys.readouterr().out == "another thread's data\nafter\n"


@pytest.mark.parametrize("reason", [
    "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:123 onnxruntime::CudaCall() CUDNN failure 4: "
    "CUDNN_STATUS_INTERNAL_ERROR\n  while creating the cuDNN handle ; GPU=0 ; hostname=desktop",
    "Failed to create the CUDA provider:\n  the provider's library did not load.\n",
], ids=["cudnn", "another-form"])
def test_a_reason_of_several_lines_is_told_in_one(reason: str) -> None:
    """ORT's reason as its banner or its exception carries it may span lines (its own message, a C++ signature
    before it): the error and the warning built on it stay one line."""
    from unetrt.backends.onnxruntime import _cuda_provider_failure

    told = _cuda_provider_failure(reason)
    assert "\n" not in told and "  " not in told and told.startswith("ONNX Runtime's CUDA provider did not start (")


def test_two_threads_making_sessions_at_once_each_keep_their_prints_and_stdout_comes_back_after_the_last(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Two segmenters opened in threads at once, before onnxruntime 1.23: each thread's banner stays off stdout while
    the other is inside too; what the first prints once it has left (its report) reaches stdout while the second is
    still inside; stdout is the original once both have left. The order is set by events, not by timing."""
    import sys

    from unetrt.backends.onnxruntime import prints_captured

    before = sys.stdout
    first_inside, second_inside, first_done = threading.Event(), threading.Event(), threading.Event()
    first_texts: list[str] = []

    def first() -> None:
        with prints_captured() as texts:
            print("first's banner")
            first_inside.set()
            second_inside.wait(5)
        first_texts.extend(texts)
        print("first's report")
        first_done.set()

    thread = threading.Thread(target=first)
    thread.start()
    assert first_inside.wait(5)
    with prints_captured() as texts:
        second_inside.set()
        assert first_done.wait(5)
        print("second's banner")
    thread.join()
    assert "".join(first_texts) == "first's banner\n" and "".join(texts) == "second's banner\n"
    assert sys.stdout is before
    assert capsys.readouterr().out == "first's report\n"


def test_a_stdout_replaced_during_the_capture_is_kept() -> None:
    """Someone replacing sys.stdout while a session is made (another thread's contextlib.redirect_stdout) keeps
    theirs: the capture puts back the stream it replaced only where its own is still there."""
    import io
    import sys

    from unetrt.backends.onnxruntime import prints_captured

    before, replacement = sys.stdout, io.StringIO()
    try:
        with prints_captured():
            sys.stdout = replacement
        assert sys.stdout is replacement
    finally:
        sys.stdout = before


def test_a_network_that_cannot_run_a_shape_is_one_line_naming_the_depth_on_the_device_path(
        provider: FakeCudaProvider, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A network from elsewhere described with too small a depth fails inside the Run: run_with_iobinding raises
    ONNX Runtime's multi-line RuntimeError ([ERRORS]), a traceback in the commands, after ORT's log of it on stderr;
    the device path gives the host path's one line, and ORT logs nothing (the host path's quiet run options)."""
    from onnx import TensorProto, helper

    # An 8x8 max pool upsampled back and added to its input runs on multiples of 8; described as the tiny model
    # (depth 3: multiples of 4), 12 x 8 passes output_shape and fails in the Run.
    nodes = [helper.make_node("MaxPool", ["image"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Constant", [], ["scales"], value=helper.make_tensor("s", TensorProto.FLOAT, [4],
                                                                                   [1, 1, 8, 8])),
             helper.make_node("Resize", ["pooled", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Add", ["image", "up"], ["logits"])]
    path = write_described_onnx(tmp_path / "pool.onnx", nodes, {"logits": TensorProto.FLOAT},
                                input_shape=("n", 3, "h", "w"))
    with OnnxRuntimeBackend(path, device="cuda") as backend:
        assert backend.device == "cuda:0"
        with device_buffers(backend, (1, 3, 8, 8)) as (stream, inputs, outputs, _):
            backend.enqueue(inputs, (1, 3, 8, 8), outputs, stream)
        with device_buffers(backend, (1, 3, 12, 8)) as (stream, inputs, outputs, _), \
                pytest.raises(ValueError, match=r"cannot run pool\.onnx on a 1 x 3 x 12 x 8 batch \(") as caught:
            backend.enqueue(inputs, (1, 3, 12, 8), outputs, stream)
    assert "\n" not in str(caught.value) and "describe it with depth k + 1" in str(caught.value)
    assert "Error in execution" not in str(caught.value)
    assert "Non-zero status code" not in capfd.readouterr().err


def _run_failures_on_both_paths(provider: FakeCudaProvider, model: Path, failure: RunFailure,
                                expected: str) -> list[pytest.ExceptionInfo[ValueError]]:
    """The ValueErrors matching ``expected`` that a Run failing with ``failure`` raises on the host path (``infer``)
    and on the device path (``enqueue``)."""
    with OnnxRuntimeBackend(model, device="cuda") as backend:
        provider.run_failure = failure
        with pytest.raises(ValueError, match=expected) as on_host:
            backend.infer(random_batch(SHAPE))
        with device_buffers(backend, SHAPE) as (stream, inputs, outputs, _), \
                pytest.raises(ValueError, match=expected) as on_device:
            backend.enqueue(inputs, SHAPE, outputs, stream)
    return [on_host, on_device]


@pytest.mark.parametrize(("failure", "reason", "fix"), [
    (CUDNN_FRONTEND_FAILED, "CUDNN_FE failure 11: CUDNN_BACKEND_API_FAILED",
     "install the cuDNN onnxruntime-gpu was built for with pip install 'onnxruntime-gpu[cuda,cudnn]'"),
    (ARENA_OUT_OF_MEMORY, "Failed to allocate memory for requested buffer of size 19327352832",
     "the GPU's memory ran out: free it (`nvidia-smi` lists what holds it)")], ids=["cudnn", "out-of-memory"])
def test_the_cuda_provider_failing_inside_a_run_is_one_line_naming_the_fix(
        provider: FakeCudaProvider, model: Path, capfd: pytest.CaptureFixture[str], failure: RunFailure,
        reason: str, fix: str) -> None:
    """[RUN-FAILS]: after the session opened, cuDNN's libraries missing at the first convolution (EP_FAIL) or the
    GPU's memory running out: the host path raised ONNX Runtime's own multi-line EPFail (a traceback in the
    commands) or told to describe the network with another depth, as the device path told for both. Each path
    names the provider, the node, ONNX Runtime's reason in one line and the fix, as a ValueError."""
    expected = (r"^ONNX Runtime's CUDA provider failed running tiny\.onnx on a 1 x 3 x 16 x 16 batch at its Conv "
                rf"node '/enc0/conv/Conv' \({re.escape(reason)}\): ")
    for caught in _run_failures_on_both_paths(provider, model, failure, expected):
        text = str(caught.value)
        assert "\n" not in text and fix in text and text.endswith(", or use device 'cpu'")
        assert "depth" not in text and "json" not in text
    assert capfd.readouterr().out == ""


def test_device_session_on_a_cpu_provider_session_raises_value_error(provider: FakeCudaProvider,
                                                                      model: Path) -> None:
    with OnnxRuntimeBackend(model, device="cpu") as backend:
        assert backend.device == "cpu"
        with pytest.raises(ValueError, match="CUDA provider"), backend.device_session():
            pass
    assert provider.gpu.primary(0).retains == 0  # nothing was retained for it


def test_enqueue_and_device_session_after_close_raise_value_error(provider: FakeCudaProvider, model: Path) -> None:
    backend = OnnxRuntimeBackend(model, device="cuda")
    with device_buffers(backend, SHAPE) as (stream, inputs, outputs, _):
        backend.enqueue(inputs, SHAPE, outputs, stream)  # the entry worked before close
    backend.close()
    with pytest.raises(ValueError, match="closed"):
        backend.enqueue(inputs, SHAPE, outputs, stream)
    with pytest.raises(ValueError, match="closed"), backend.device_session():
        pass
    assert len(provider.runs) == 1


def test_close_is_idempotent_and_releases_the_retained_context(provider: FakeCudaProvider, model: Path) -> None:
    """The CUDA runtime holds one retain of the primary context for good (ONNX Runtime's); the backend's own retain
    (pycuda's, for its stream) goes at close, once however often close is called, so another session on the same
    GPU keeps running."""
    gpu = provider.gpu
    backend = OnnxRuntimeBackend(model, device="cuda")
    runtime = gpu.primary(0).retains
    assert runtime == 1 and provider.runtime_contexts[0] is gpu.primary(0)
    with backend.device_session():
        assert gpu.primary(0).retains == runtime + 1
    assert gpu.pycuda_stack() == []
    backend.close()
    assert gpu.primary(0).retains == runtime
    backend.close()
    backend.__exit__(None, None, None)
    assert gpu.primary(0).retains == runtime and gpu.primary(0).alive and gpu.pycuda_stack() == []
    batch = random_batch((1, 3, 16, 16), seed=5)
    with OnnxRuntimeBackend(model, device="cuda") as other, \
            device_buffers(other, batch.shape) as (stream, inputs, outputs, _):
        produce_on(gpu, stream, inputs, batch)
        other.enqueue(inputs, batch.shape, outputs, stream)
        logits = np.array(gpu.view(outputs, other.output_shape(batch.shape), np.float32))
    np.testing.assert_array_equal(logits, cpu_logits(model, batch))
    assert gpu.primary(0).retains == runtime


def test_a_backend_dropped_without_close_is_released_in_its_context(provider: FakeCudaProvider, model: Path) -> None:
    """A bare backend whose device entry ran on a worker thread, dropped without close() on another thread (where
    the garbage collector happened to run): pycuda leaked its stream there, as it leaks what it cannot make current
    out of the thread that retained the context, and the backend's retain of the primary context was never released."""
    import gc

    from unetrt.dropped import wait_for_releases

    gpu = provider.gpu
    backends: list[OnnxRuntimeBackend] = []
    streams: list[int] = []

    def open_and_use() -> None:
        backend = OnnxRuntimeBackend(model, device="cuda")
        with device_buffers(backend, SHAPE) as (stream, inputs, outputs, _):
            backend.enqueue(inputs, SHAPE, outputs, stream)
        backends.append(backend)
        streams.append(stream)

    worker = threading.Thread(target=open_and_use)
    worker.start()
    worker.join()
    assert gpu.primary(0).retains == 2 and streams[0] in gpu.streams  # the CUDA runtime's retain and the backend's
    backends.clear()
    gc.collect()
    assert wait_for_releases(30)
    # The CUDA runtime's retain alone is left (ONNX Runtime's, for good); unetrt's own retain count is back to 0.
    assert gpu.primary(0).retains == 1 and gpu.primary(0).alive and gpu.live() == 0
    assert streams[0] not in gpu.streams and ("stream leaked", streams[0]) not in gpu.log
    assert gpu.driver_stack() == [] and gpu.pycuda_stack() == []


def test_host_inference_of_a_cuda_session_is_the_cpu_sessions(provider: FakeCudaProvider, model: Path) -> None:
    batch = random_batch((1, 3, 32, 32), seed=6)
    with OnnxRuntimeBackend(model, device="cuda") as backend:
        np.testing.assert_array_equal(backend.infer(batch), cpu_logits(model, batch))


def test_a_resident_batch_runs_on_the_device_and_gives_infer_s_logits(provider: FakeCudaProvider, model: Path) -> None:
    """``resident`` (unet-bench's device mode): the batch is copied once into device memory and each run is a Run
    on it through IO binding; the logits are ``infer``'s; a shape the network refuses is ``infer``'s line; after
    ``close`` it is refused."""
    batch = random_batch((1, 3, 32, 32), seed=7)
    backend = OnnxRuntimeBackend(model, device="cuda")
    resident = backend.resident(batch)
    with pytest.raises(ValueError, match=r"has not run yet; call run\(\) before logits\(\)"):
        resident.logits()
    batch[...] = 0  # copied once: a later write is not the resident batch's
    resident.run()
    resident.run()
    assert len(provider.runs) == 2 and provider.runs[0].input_ptr == provider.runs[1].input_ptr
    np.testing.assert_array_equal(resident.logits(), cpu_logits(model, random_batch((1, 3, 32, 32), seed=7)))
    with pytest.raises(ValueError, match="input height 30 is not legal"):
        backend.resident(random_batch((1, 3, 30, 30)))
    backend.close()
    with pytest.raises(ValueError, match="closed"):
        backend.resident(batch)
    with pytest.raises(ValueError, match="closed"):
        resident.run()
    with pytest.raises(ValueError, match="closed"):
        resident.logits()  # the protocol's rule: after close() neither call answers


def test_a_resident_batch_of_a_float16_network_is_bound_as_float16_and_gives_float32_logits(
        provider: FakeCudaProvider, tmp_path: Path) -> None:
    """A graph of float16 input and output (an FP16 export): the float32 batch is cast to float16 once, as infer()
    casts it ([DTYPE] refuses any other type at the Run), and logits() gives float32, as infer() does."""
    from onnx import TensorProto, helper

    path = write_described_onnx(tmp_path / "half.onnx", [helper.make_node("Identity", ["image"], ["logits"])],
                                {"logits": TensorProto.FLOAT16}, input_shape=("n", 3, "h", "w"),
                                input_type=TensorProto.FLOAT16)
    batch = random_batch((1, 3, 16, 16), seed=8)
    with OnnxRuntimeBackend(path, device="cuda") as backend:
        resident = backend.resident(batch)
        resident.run()
        logits = resident.logits()
        assert logits.dtype == np.float32
        np.testing.assert_array_equal(logits, backend.infer(batch))
    assert not provider.refused


def test_a_resident_batch_on_the_second_gpu_lies_on_that_gpu(monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
    """On cuda:1 the batch is copied to GPU 1, where the session runs (ORT would copy a value of another GPU once, at
    binding, and the fake refuses it)."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False, count=2))
    provider = install_fake_onnxruntime_cuda(monkeypatch, gpu)
    batch = random_batch((1, 3, 16, 32), seed=9)
    with OnnxRuntimeBackend(model, device="cuda:1") as backend:
        resident = backend.resident(batch)
        resident.run()
        assert gpu.context_of(provider.runs[-1].input_ptr) is gpu.primary(1)
        np.testing.assert_array_equal(resident.logits(), cpu_logits(model, batch))
    assert not provider.refused


def test_a_resident_batch_on_the_cpu_provider_stays_in_host_memory(provider: FakeCudaProvider, model: Path) -> None:
    """unet-bench --device cpu --no-data-transfers with onnxruntime-gpu installed: the CPU session's batch and output
    are host values (a CUDA value in a CPU session is refused), and the logits are infer()'s."""
    batch = random_batch((1, 3, 16, 16), seed=10)
    with OnnxRuntimeBackend(model, device="cpu") as backend:
        resident = backend.resident(batch)
        resident.run()
        np.testing.assert_array_equal(resident.logits(), backend.infer(batch))
    assert not provider.refused and not provider.runs


@pytest.mark.parametrize(("bad", "line"), [
    (np.zeros((1, 3, 16), np.float32), "batch must be a 4-D N x C x H x W numpy array"),
    (np.zeros((1, 3, 16, 16), np.int64), "batch dtype must be float32"),
], ids=["3-D", "int64"])
def test_a_malformed_resident_batch_is_infer_s_one_line(bad: np.ndarray, line: str, provider: FakeCudaProvider,
                                                         model: Path) -> None:
    """A batch infer() refuses (another rank, an integer type ORT would take as it is) is refused by resident() in
    infer()'s line, not bound and run."""
    with OnnxRuntimeBackend(model, device="cuda") as backend:
        with pytest.raises(ValueError, match=line):
            backend.infer(bad)
        with pytest.raises(ValueError, match=line) as refused:
            backend.resident(bad)
    assert "\n" not in str(refused.value)


def test_a_resident_batch_s_run_and_copy_each_hold_its_lock(provider: FakeCudaProvider, model: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """One binding holds one output, which each Run replaces: a run and a copy from two threads must take turns, so
    each holds the batch's lock while it is in ONNX Runtime (checked from inside, not by racing threads)."""
    with OnnxRuntimeBackend(model, device="cuda") as backend:
        resident = backend.resident(random_batch((1, 3, 16, 16), seed=11))
        held: list[bool] = []

        def probed(call: Any) -> Any:
            def inside(*args: Any) -> Any:
                free = resident._lock.acquire(blocking=False)
                if free:
                    resident._lock.release()
                held.append(not free)
                return call(*args)
            return inside

        monkeypatch.setattr(resident._session, "run_with_iobinding", probed(resident._session.run_with_iobinding))
        monkeypatch.setattr(resident._binding, "copy_outputs_to_cpu", probed(resident._binding.copy_outputs_to_cpu))
        resident.run()
        resident.logits()
    assert held == [True, True]


# --- through the Segmenter: the GPU-resident frame path -------------------------------------------------------


@pytest.fixture
def cpu_kernels_on_the_fake_gpu(provider: FakeCudaProvider, monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    """Every CudaDevice a Segmenter opens runs unetrt._tiling's CPU kernels on the fake GPU's memory, queued on
    their stream (the machine has no CUDA build of the kernels)."""
    import unetrt.cuda_device as cuda_device
    from unetrt import _tiling  # type: ignore[attr-defined]

    real = cuda_device.CudaDevice

    def on_fake_gpu(backend: Any, **options: Any) -> Any:
        return real(backend, kernels=FakeKernels(provider.gpu, _tiling), **options)

    monkeypatch.setattr(cuda_device, "CudaDevice", on_fake_gpu)
    monkeypatch.setattr(cuda_device, "cuda_kernels_built", lambda: True)
    return provider.gpu


def smooth_frames(shape: tuple[int, ...], count: int) -> list[np.ndarray]:
    """Blurred random frames: regions for the network to segment, not noise at every pixel."""
    rng = np.random.default_rng(7)
    return [cv2.GaussianBlur(rng.integers(0, 256, shape, np.uint8), (0, 0), 3) for _ in range(count)]


@pytest.mark.parametrize(("shape", "tile"), [((48, 64, 3), None), ((70, 100, 3), 32)], ids=["whole", "tiled"])
def test_segmenter_on_the_cuda_provider_gives_the_cpu_paths_masks(cpu_kernels_on_the_fake_gpu: FakeGpu,
                                                                  provider: FakeCudaProvider, model: Path,
                                                                  shape: tuple[int, ...], tile: int | None) -> None:
    from unetrt.segmenter import Segmenter

    gpu = cpu_kernels_on_the_fake_gpu
    frames = smooth_frames(shape, 2)
    with Segmenter(model, backend="onnxruntime", device="cpu", probabilities=True, tile=tile) as on_cpu:
        expected = [on_cpu.segment(frame) for frame in frames]
    with Segmenter(model, backend="onnxruntime", device="cuda", probabilities=True, tile=tile) as on_gpu:
        assert isinstance(on_gpu.backend, OnnxRuntimeBackend) and on_gpu.backend.device == "cuda:0"
        assert isinstance(on_gpu.device, CudaDevice)
        # ORT's enqueue waits for the path's stream from the host, which a capture forbids (CUDA C++ Programming
        # Guide, CUDA Graphs, "Prohibited and Unhandled Operations"): the path must never try one. Each try would be
        # invalidated, and CAPTURE_ATTEMPTS of them end in a RuntimeWarning for every frame size.
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            rounds = [[on_gpu.segment(frame) for frame in frames] for _ in range(2)]
        for results in rounds:  # the second round reuses the cached buffers
            for have, want in zip(results, expected):
                np.testing.assert_array_equal(have.mask, want.mask)
                assert want.probabilities is not None and have.probabilities is not None
                np.testing.assert_allclose(have.probabilities, want.probabilities, rtol=0, atol=1e-6)
        assert provider.runs and not provider.refused
        assert "graph" not in [entry[0] for entry in gpu.log]
    assert gpu.primary(0).retains == 1 and gpu.pycuda_stack() == []  # only the CUDA runtime's retain is left


def test_a_float16_network_on_the_cuda_provider_is_bound_as_float16(cpu_kernels_on_the_fake_gpu: FakeGpu,
                                                                    provider: FakeCudaProvider,
                                                                    tmp_path: Path) -> None:
    """A graph of float16 input and output: the path's batch and logits buffers, and both bindings, are float16
    ([DTYPE] refuses any other type at the Run), and the masks are the CPU path's."""
    from onnx import TensorProto, helper

    from unetrt.segmenter import Segmenter

    path = write_described_onnx(tmp_path / "half.onnx", [helper.make_node("Identity", ["image"], ["logits"])],
                                {"logits": TensorProto.FLOAT16}, input_shape=("n", 3, "h", "w"),
                                input_type=TensorProto.FLOAT16)
    frames = smooth_frames((48, 64, 3), 2)
    with Segmenter(path, backend="onnxruntime", device="cpu", probabilities=True) as on_cpu:
        expected = [on_cpu.segment(frame) for frame in frames]
    with Segmenter(path, backend="onnxruntime", device="cuda", probabilities=True) as on_gpu:
        assert isinstance(on_gpu.backend, OnnxRuntimeBackend) and on_gpu.backend.input_dtype == np.float16
        results = [on_gpu.segment(frame) for frame in frames]
    for have, want in zip(results, expected):
        np.testing.assert_array_equal(have.mask, want.mask)
        assert want.probabilities is not None and have.probabilities is not None
        np.testing.assert_allclose(have.probabilities, want.probabilities, rtol=0, atol=1e-3)
    assert provider.runs and not provider.refused


def test_an_fp16_export_that_overflows_on_the_cuda_provider_is_refused_naming_fp32(
        cpu_kernels_on_the_fake_gpu: FakeGpu, provider: FakeCudaProvider, tmp_path: Path) -> None:
    """An FP16 export (unet-export --fp16) of a network whose activations pass 65504 between two layers: the CUDA
    provider computes it in half ([FP16]), so a frame that overflows it is refused naming FP16 and --precision fp32,
    and a frame in FP16's range gets the mask; the FP32 model on the same provider gives the CPU's mask. The CPU
    provider computes the FP16 graph in FP32 and never overflows."""
    import onnx
    from nonfinite_models import frame_with_bad_pixels, write_fp16_overflow_onnx

    from unetrt.export.fp16 import convert_to_fp16
    from unetrt.frame_path import NonFiniteScoresError
    from unetrt.segmenter import Segmenter

    pytest.importorskip("onnxconverter_common")
    model = write_fp16_overflow_onnx(tmp_path / "mine.onnx")
    half = tmp_path / "mine.fp16.onnx"
    onnx.save(convert_to_fp16(onnx.load(str(model))), str(half))
    frame, bad = frame_with_bad_pixels("+inf", (48, 64), seed=4)
    clean = np.random.default_rng(4).integers(30, 225, (48, 64, 3)).astype(np.uint8)
    with Segmenter(model, backend="onnxruntime", device="cpu") as reference:
        expected = {"frame": reference.segment(frame).mask, "clean": reference.segment(clean).mask}
    with Segmenter(half, backend="onnxruntime", device="cpu") as on_cpu:
        np.testing.assert_array_equal(on_cpu.segment(frame).mask, expected["frame"])
    with Segmenter(half, backend="onnxruntime", device="cuda") as on_gpu:
        assert on_gpu.backend.device == "cuda:0" and on_gpu.backend.precision == "fp16"
        with pytest.raises(NonFiniteScoresError, match=rf"at {bad} of {48 * 64} pixels of this frame") as error:
            on_gpu.segment(frame)
        np.testing.assert_array_equal(on_gpu.segment(clean).mask, expected["clean"])
    assert error.value.precision == "fp16" and "--precision fp32" in str(error.value)
    with Segmenter(model, backend="onnxruntime", device="cuda") as on_gpu:
        np.testing.assert_array_equal(on_gpu.segment(frame).mask, expected["frame"])
    assert provider.runs and not provider.refused


def test_four_threads_on_one_cuda_segmenter_get_what_each_gets_alone(cpu_kernels_on_the_fake_gpu: FakeGpu,
                                                                      provider: FakeCudaProvider,
                                                                      model: Path) -> None:
    """Robot callbacks on four threads share one segmenter on ONNX Runtime's CUDA provider: each mask is the one
    its frame gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    from unetrt.segmenter import Segmenter

    frames = smooth_frames((48, 64, 3), 8)
    with Segmenter(model, backend="onnxruntime", device="cuda") as segmenter:
        alone = [segmenter.segment(frame).mask for frame in frames]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda frame: segmenter.segment(frame).mask, frames * 3))
    for index, mask in enumerate(together):
        np.testing.assert_array_equal(mask, alone[index % len(frames)])
    assert not provider.refused


# --- the fake CUDA provider's own rules (tests/fakes/onnxruntime_cuda.py) --------------------------------------


@pytest.fixture
def session(provider: FakeCudaProvider, model: Path) -> Iterator[tuple[Any, Any]]:
    """A fake CUDA session of the model and pycuda, with the primary context pushed for the test's allocations."""
    import onnxruntime as ort

    fake = ort.InferenceSession(str(model), providers=[(CUDA, {"device_id": 0}), CPU])
    with primary_context_pushed() as cuda:
        yield fake, cuda


def bind(session: Any, in_ptr: int, in_shape: tuple[int, ...], out_ptr: int, out_shape: tuple[int, ...],
         **overrides: Any) -> Any:
    """An IO binding of both ends as unetrt makes it; ``overrides`` change the input's arguments."""
    binding = session.io_binding()
    arguments = {"device_type": "cuda", "device_id": 0, "element_type": np.float32, "shape": list(in_shape),
                 "buffer_ptr": in_ptr, **overrides}
    binding.bind_input(session.get_inputs()[0].name, **arguments)
    binding.bind_output(session.get_outputs()[0].name, "cuda", 0, np.float32, list(out_shape), out_ptr)
    return binding


def test_the_fake_reports_the_cuda_provider(provider: FakeCudaProvider, session: tuple[Any, Any],
                                            model: Path) -> None:
    import onnxruntime as ort

    fake, _ = session
    assert ort.get_available_providers() == [CUDA, CPU]
    assert fake.get_providers() == [CUDA, CPU]
    assert ort.InferenceSession(str(model), providers=[CPU]).get_providers() == [CPU]


def test_the_fake_without_the_providers_libraries_runs_a_session_on_the_cpu(
        provider: FakeCudaProvider, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[PROVIDER-LIBS]: onnxruntime-gpu without CUDA's and cuDNN's libraries still lists the CUDA provider, and a
    session that asks for it runs on the CPU after ORT's warning."""
    import onnxruntime as ort

    provider.libraries = False
    session = ort.InferenceSession(str(model), providers=[CUDA, CPU])
    assert ort.get_available_providers() == [CUDA, CPU] and session.get_providers() == [CPU]
    assert "Failed to create CUDAExecutionProvider" in capsys.readouterr().err


@pytest.mark.parametrize(("version", "warning"), [((1, 32), "Require cuDNN 9.* and CUDA 12.*"),
                                                  ((1, 18), "to ensure all dependencies are met")],
                         ids=["1.32", "1.18"])
def test_the_fake_with_cuda_path_set_and_no_libraries_raises_before_1_19_only(
        provider: FakeCudaProvider, model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        version: tuple[int, int], warning: str) -> None:
    """[PROVIDER-LIBS], [VERSIONS]: without CUDA_PATH every release warns and runs on the CPU; with it, 1.17 and 1.18
    throw "CUDA_PATH is set but CUDA wasnt able to be loaded", which their fallback retries on CUDA and raises."""
    import onnxruntime as ort

    provider.libraries, provider.version = False, version
    assert ort.InferenceSession(str(model), providers=[CUDA, CPU]).get_providers() == [CPU]
    assert warning in capsys.readouterr().err
    monkeypatch.setenv("CUDA_PATH", "/usr/local/cuda-12.4")
    if version >= (1, 19):
        assert ort.InferenceSession(str(model), providers=[CUDA, CPU]).get_providers() == [CPU]
        return
    with pytest.raises(RuntimeError, match="CUDA_PATH is set but CUDA wasnt able to be loaded") as raised:
        ort.InferenceSession(str(model), providers=[CUDA, CPU])
    assert isinstance(raised.value.__cause__, RuntimeError)  # raise fallback_error from e
    assert "Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying." in capsys.readouterr().out


@pytest.mark.parametrize(("version", "enable_fallback", "banner", "outcome"), [
    ((1, 32), 1, True, "cpu"), ((1, 32), 0, False, "raises"), ((1, 23), 0, False, "raises"),
    ((1, 22), 0, True, "cpu"), ((1, 19), 1, True, "cpu"), ((1, 18), 0, True, "raises"), ((1, 17), 1, True, "raises"),
], ids=["1.32", "1.32-no-fallback", "1.23-no-fallback", "1.22-no-fallback", "1.19", "1.18-no-fallback", "1.17"])
def test_the_fake_falls_back_as_each_onnxruntime_release_does(
        monkeypatch: pytest.MonkeyPatch, model: Path, capsys: pytest.CaptureFixture[str], version: tuple[int, int],
        enable_fallback: int, banner: bool, outcome: str) -> None:
    """[DRIVER], [FALLBACK], [VERSIONS]: a driver older than the provider's CUDA fails the provider with CUDA error
    35; enable_fallback=0 is read from 1.23 on; the fallback is the CPU from 1.19 on, CUDA again (and so the same
    error, raised from the first) before."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False, driver_version=11080))  # r520: CUDA 11.8
    provider = install_fake_onnxruntime_cuda(monkeypatch, gpu)
    import onnxruntime as ort

    provider.version = version
    assert ort.__version__ == "{}.{}.0".format(*version)
    providers = [(CUDA, {"device_id": 0}), CPU]
    if outcome == "raises":
        with pytest.raises(RuntimeError, match="CUDA failure 35: CUDA driver version is insufficient for CUDA "
                                               "runtime version ; GPU="):
            ort.InferenceSession(str(model), providers=providers, enable_fallback=enable_fallback)
    else:
        session = ort.InferenceSession(str(model), providers=providers, enable_fallback=enable_fallback)
        assert session.get_providers() == [CPU]
    out = capsys.readouterr().out
    assert ("EP Error" in out and "CUDA failure 35" in out) == banner
    assert not provider.runtime_contexts
    gpu.driver_version = 12000  # any driver of the provider's CUDA major serves
    assert ort.InferenceSession(str(model), providers=providers).get_providers() == [CUDA, CPU]


def test_the_fake_fails_a_run_as_onnx_runtime_does(provider: FakeCudaProvider, session: tuple[Any, Any],
                                                   model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[RUN-FAILS]: run raises the typed error of the status code, except that an EPFail with the session's
    fallback on prints ORT's banner on stdout and runs again on the CPU, once; run_with_iobinding raises
    RuntimeError("Error in execution: ...") without the code."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    fake, cuda = session
    name, images = fake.get_inputs()[0].name, random_batch(SHAPE)
    provider.run_failure = ARENA_OUT_OF_MEMORY
    with pytest.raises(ort_errors.RuntimeException, match=r"^\[ONNXRuntimeError\] : 6 : RUNTIME_EXCEPTION : "
                                                          "Non-zero status code returned while running Conv node"):
        fake.run(None, {name: images})  # the fallback answers EPFail only
    inputs, outputs = cuda.mem_alloc(int(np.prod(SHAPE)) * 4), cuda.mem_alloc(int(np.prod(OUT)) * 4)
    binding = bind(fake, int(inputs), SHAPE, int(outputs), OUT)
    with pytest.raises(RuntimeError, match=r"^Error in execution: Non-zero status code returned while running Conv"):
        fake.run_with_iobinding(binding)
    provider.run_failure = CUDNN_FRONTEND_FAILED
    fake.disable_fallback()
    with pytest.raises(ort_errors.EPFail, match=r"^\[ONNXRuntimeError\] : 11 : EP_FAIL : "):
        fake.run(None, {name: images})
    assert capsys.readouterr().out == ""
    fake.enable_fallback()
    (logits,) = fake.run(None, {name: images})
    np.testing.assert_allclose(logits, cpu_logits(model, images), rtol=1e-5, atol=1e-5)
    assert fake.get_providers() == [CPU]
    assert capsys.readouterr().out.startswith("EP Error: [ONNXRuntimeError] : 11 : EP_FAIL : ")


def test_the_fake_reads_stale_input_when_the_producer_stream_was_not_waited_for(
        provider: FakeCudaProvider, session: tuple[Any, Any], model: Path) -> None:
    fake, cuda = session
    gpu, batch, previous = provider.gpu, random_batch(SHAPE, seed=8), random_batch(SHAPE, seed=98)
    inputs, outputs, producer = cuda.mem_alloc(4 * int(np.prod(SHAPE))), cuda.mem_alloc(4 * int(np.prod(OUT))), \
        cuda.Stream()
    gpu.view(int(inputs), SHAPE, np.float32)[...] = previous
    produce_on(gpu, producer.handle, int(inputs), batch)
    fake.run_with_iobinding(bind(fake, int(inputs), SHAPE, int(outputs), OUT))
    stale = np.array(gpu.view(int(outputs), OUT, np.float32))
    np.testing.assert_array_equal(stale, cpu_logits(model, previous))  # the logits of what was there before
    assert gpu.pending() == 1  # the producer's work is still queued: the provider did not run it
    producer.synchronize()
    fake.run_with_iobinding(bind(fake, int(inputs), SHAPE, int(outputs), OUT))
    np.testing.assert_array_equal(gpu.view(int(outputs), OUT, np.float32), cpu_logits(model, batch))


def test_the_fake_leaves_the_output_unwritten_without_the_end_of_run_sync(
        provider: FakeCudaProvider, session: tuple[Any, Any], model: Path) -> None:
    import onnxruntime as ort

    fake, cuda = session
    gpu, batch = provider.gpu, random_batch(SHAPE, seed=9)
    inputs, outputs = cuda.mem_alloc(4 * int(np.prod(SHAPE))), cuda.mem_alloc(4 * int(np.prod(OUT)))
    cuda.memcpy_htod_async(inputs, batch, cuda.Stream())
    gpu.run_pending()
    options = ort.RunOptions()
    options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    gpu.view(int(outputs), OUT, np.float32)[...] = -1.0
    fake.run_with_iobinding(bind(fake, int(inputs), SHAPE, int(outputs), OUT), options)
    assert (gpu.view(int(outputs), OUT, np.float32) == -1.0).all() and not provider.runs[-1].synchronized
    gpu.run_pending(fake.stream)  # someone waits for the provider's stream
    np.testing.assert_array_equal(gpu.view(int(outputs), OUT, np.float32), cpu_logits(model, batch))


def test_the_fake_orders_work_on_a_user_compute_stream(provider: FakeCudaProvider, model: Path) -> None:
    """With ``user_compute_stream`` the provider queues behind the caller's own work: no host wait needed."""
    import onnxruntime as ort

    gpu, batch = provider.gpu, random_batch(SHAPE, seed=10)
    with primary_context_pushed() as cuda:
        stream = cuda.Stream()
        fake = ort.InferenceSession(str(model), providers=[(CUDA, {"user_compute_stream": str(stream.handle)}),
                                                           CPU])
        inputs, outputs = cuda.mem_alloc(4 * int(np.prod(SHAPE))), cuda.mem_alloc(4 * int(np.prod(OUT)))
        produce_on(gpu, stream.handle, int(inputs), batch)
        fake.run_with_iobinding(bind(fake, int(inputs), SHAPE, int(outputs), OUT))
        assert provider.runs[-1].stream == stream.handle
        np.testing.assert_array_equal(gpu.view(int(outputs), OUT, np.float32), cpu_logits(model, batch))


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"device_type": "gpu0"}, Exception, "Unsupported device type"),
    ({"device_type": "cpu"}, RuntimeError, r"^Error when binding input: .*device type 'cpu'"),
    ({"device_id": 1}, RuntimeError, r"^Error when binding input: .*does not exist"),
    ({"shape": [1, 3, 32, 32]}, RuntimeError, r"^Error when binding input: .*not inside a live device allocation"),
    ({"offset": 512}, RuntimeError, r"^Error when binding input: .*not inside a live device allocation"),
    ({"offset": -(1 << 40)}, RuntimeError, r"^Error when binding input: .*not inside a live device allocation"),
], ids=["unknown-device-type", "cpu-device-type", "no-such-device", "too-small", "past-the-end", "not-device"])
def test_the_fake_refuses_a_bad_binding(provider: FakeCudaProvider, session: tuple[Any, Any],
                                        change: dict[str, Any], error: type[Exception], message: str) -> None:
    fake, cuda = session
    inputs = cuda.mem_alloc(4 * int(np.prod(SHAPE)))
    outputs = cuda.mem_alloc(4 * int(np.prod(OUT)))
    offset = change.pop("offset", 0)
    with pytest.raises(error, match=message):
        bind(fake, int(inputs) + offset, SHAPE, int(outputs), OUT, **change)
    assert provider.refused and not provider.runs


def test_the_fake_refuses_memory_that_is_not_the_sessions(provider: FakeCudaProvider,
                                                         session: tuple[Any, Any]) -> None:
    """Freed memory, page-locked host memory, and device memory of another context of the same GPU."""
    fake, cuda = session
    outputs = cuda.mem_alloc(4 * int(np.prod(OUT)))
    freed = cuda.mem_alloc(4 * int(np.prod(SHAPE)))
    pointer = int(freed)
    freed.free()
    with pytest.raises(RuntimeError, match=r"^Error when binding input: .*live device allocation"):
        bind(fake, pointer, SHAPE, int(outputs), OUT)
    pinned = cuda.pagelocked_empty(SHAPE, np.float32)
    with pytest.raises(RuntimeError, match=r"^Error when binding input: .*pinned host memory"):
        bind(fake, int(pinned.ctypes.data), SHAPE, int(outputs), OUT)
    other = cuda.Device(0).make_context()
    try:
        elsewhere = cuda.mem_alloc(4 * int(np.prod(SHAPE)))
    finally:
        cuda.Context.pop()
    with pytest.raises(RuntimeError, match=r"^Error when binding input: .*another context"):
        bind(fake, int(elsewhere), SHAPE, int(outputs), OUT)
    other.detach()


def test_the_fake_refuses_memory_freed_between_binding_and_run(provider: FakeCudaProvider,
                                                               session: tuple[Any, Any]) -> None:
    fake, cuda = session
    inputs, outputs = cuda.mem_alloc(4 * int(np.prod(SHAPE))), cuda.mem_alloc(4 * int(np.prod(OUT)))
    binding = bind(fake, int(inputs), SHAPE, int(outputs), OUT)
    inputs.free()
    with pytest.raises(RuntimeError, match=r"^Error in execution: .*illegal memory access"):
        fake.run_with_iobinding(binding)


@pytest.mark.parametrize(("change", "message"), [
    ({"element_type": np.float16}, "Unexpected input data type"),
    ({"element_type": 10}, "Unexpected input data type"),  # onnx.TensorProto.FLOAT16
    ({"shape": [1, 16, 16]}, "Invalid rank for input"),
    ({"shape": [1, 4, 16, 8]}, "invalid dimensions for input"),
], ids=["float16", "onnx-float16", "rank", "channels"])
def test_the_fake_refuses_at_run_what_the_model_does_not_declare(provider: FakeCudaProvider,
                                                                 session: tuple[Any, Any], change: dict[str, Any],
                                                                 message: str) -> None:
    fake, cuda = session
    inputs, outputs = cuda.mem_alloc(4 * int(np.prod(SHAPE))), cuda.mem_alloc(4 * int(np.prod(OUT)))
    binding = bind(fake, int(inputs), SHAPE, int(outputs), OUT, **change)
    with pytest.raises(RuntimeError, match=f"^Error in execution: .*{message}"):
        fake.run_with_iobinding(binding)
    assert not provider.runs


def test_the_fake_refuses_an_output_of_another_shape(provider: FakeCudaProvider, session: tuple[Any, Any]) -> None:
    fake, cuda = session
    inputs, outputs = cuda.mem_alloc(4 * int(np.prod(SHAPE))), cuda.mem_alloc(4 * 4 * int(np.prod(OUT)))
    with pytest.raises(RuntimeError, match=r"^Error in execution: Got invalid dimensions for output"):
        fake.run_with_iobinding(bind(fake, int(inputs), SHAPE, int(outputs), (1, 3, 32, 32)))


def test_the_fake_refuses_a_run_once_the_runtimes_context_was_destroyed(provider: FakeCudaProvider,
                                                                         model: Path) -> None:
    """A retain released twice (here: by hand) destroys the primary context the provider's stream lives in."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as errors

    fake = ort.InferenceSession(str(model), providers=[CUDA, CPU])
    assert provider.gpu.driver_stack()[-1] is provider.gpu.primary(0)  # cudaSetDevice left it current
    provider.gpu.release_primary(0)
    assert not provider.runtime_contexts[0].alive
    with pytest.raises(RuntimeError, match=r"^Error in execution: CUDA failure 709: context is destroyed"):
        fake.run_with_iobinding(fake.io_binding())
    with pytest.raises(errors.Fail, match="context is destroyed"):  # run raises ORT's typed error
        fake.run(None, {fake.get_inputs()[0].name: np.zeros(SHAPE, np.float32)})


@pytest.mark.parametrize(("providers", "kwargs", "error", "message"), [
    ([("CUDAExecutionProvider", {"device_id": 1}), CPU], {"enable_fallback": 0}, RuntimeError,
     r"Invalid device ID: 1, must be between 0 \(inclusive\) and 1 \(exclusive\)"),
    ([("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), CPU], {}, ValueError, "does not model"),
    ([("CUDAExecutionProvider", {"no_such_option": "1"}), CPU], {}, ValueError, "Unknown provider option"),
    (["TensorrtExecutionProvider", CPU], {}, ValueError, "not available"),
    ([["CUDAExecutionProvider", {"device_id": 0}], CPU], {}, ValueError, r"\(string, dict\) tuples"),
    ([("CUDAExecutionProvider", {}), CPU], {"provider_options": [{"device_id": 0}, {}]}, ValueError,
     r"\(string, dict\) tuples"),
], ids=["no-such-device", "unmodelled-option", "unknown-option", "unavailable-provider", "list-entry",
        "options-beside-tuples"])
def test_the_fake_refuses_a_session_it_cannot_make(provider: FakeCudaProvider, model: Path, providers: list[Any],
                                                   kwargs: dict[str, Any], error: Any, message: str) -> None:
    import onnxruntime as ort

    with pytest.raises(error, match=message):
        ort.InferenceSession(str(model), providers=providers, **kwargs)


@pytest.mark.parametrize(("gpus", "device_id", "reason"), [(1, 1, "Invalid device ID: 1"),
                                                          (0, 0, "no CUDA-capable device")],
                         ids=["no-such-device", "no-gpu"])
def test_the_fake_falls_back_to_the_cpu_when_the_provider_cannot_be_made(
        monkeypatch: pytest.MonkeyPatch, model: Path, capsys: pytest.CaptureFixture[str], gpus: int,
        device_id: int, reason: str) -> None:
    """[DEVICE-ID], [FALLBACK]: ORT's Python session catches the provider's RuntimeError, prints its banner on
    stdout and makes the session on the CPU."""
    provider = install_fake_onnxruntime_cuda(monkeypatch, install_fake_gpu(monkeypatch, FakeGpu(count=gpus)))
    import onnxruntime as ort
    session = ort.InferenceSession(str(model), providers=[(CUDA, {"device_id": device_id}), CPU])
    assert session.get_providers() == [CPU]
    out = capsys.readouterr().out
    assert "EP Error" in out and reason in out and "Falling back to ['CPUExecutionProvider']" in out
    assert provider.refused and not provider.runtime_contexts


# --- the device entry's contract (engine/backends/base.py, DeviceBackend) ----------------------------------------


def test_enqueue_waits_for_the_stream_it_is_given(provider: FakeCudaProvider, model: Path) -> None:
    """DeviceBackend.enqueue: 'Queue the network on ``stream``'. It waited for its own stream, so input queued on
    another one was read stale."""
    gpu, batch = provider.gpu, random_batch(SHAPE, seed=11)
    with OnnxRuntimeBackend(model, device="cuda") as backend, \
            device_buffers(backend, SHAPE) as (_, inputs, outputs, cuda):
        producer = cuda.Stream()
        produce_on(gpu, producer.handle, inputs, batch)
        backend.enqueue(inputs, SHAPE, outputs, producer.handle)
        logits = np.array(gpu.view(outputs, OUT, np.float32))
    np.testing.assert_array_equal(logits, cpu_logits(model, batch))


def test_enqueue_outside_a_device_session_is_refused_with_runtime_error(provider: FakeCudaProvider,
                                                                         model: Path) -> None:
    """It tripped an assert (an AttributeError under python -O), where TensorRTBackend raises RuntimeError."""
    with OnnxRuntimeBackend(model, device="cuda") as backend, pytest.raises(RuntimeError, match="device_session"):
        backend.enqueue(0, SHAPE, 0, 0)


def test_enqueue_on_a_stream_the_driver_cannot_wait_for_raises_and_runs_nothing(provider: FakeCudaProvider,
                                                                                 model: Path) -> None:
    """enqueue waits for the caller's stream before ONNX Runtime reads the input; when cuStreamSynchronize fails
    (a handle of no stream: CUDA_ERROR_INVALID_HANDLE; or an error of earlier asynchronous work, which "may also
    [be returned] from previous, asynchronous launches", CUDA Driver API) the input was never waited for: running
    the session anyway would turn stale memory into logits without a word."""
    with OnnxRuntimeBackend(model, device="cuda") as backend, \
            device_buffers(backend, SHAPE) as (_, inputs, outputs, cuda):
        gone = cuda.Stream()
        handle = gone.handle
        del gone  # destroyed: its handle names no stream now
        assert handle not in provider.gpu.streams
        runs = len(provider.runs)
        with pytest.raises(RuntimeError, match="cannot wait for the stream"):
            backend.enqueue(inputs, SHAPE, outputs, handle)
    assert len(provider.runs) == runs


# [RUN-FAILS]: a CUDA call's error returned as a status (FAIL, cuda_call.cc's "%s failure %d: %s ; GPU=%d ; ..."):
# CUDA's allocator out of memory in a Conv, cuBLAS out of memory in a MatMul.
CUDA_OUT_OF_MEMORY = RunFailure(
    "FAIL", "Non-zero status code returned while running Conv node. Name:'/enc0/conv/Conv' Status Message: "
    "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:123 std::conditional_t<THRW, void, "
    "onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, SUCCTYPE, const char*, "
    "const char*, int) [with ERRTYPE = cudaError; bool THRW = false] CUDA failure 2: out of memory ; GPU=0 ; "
    "hostname=desktop ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_allocator.cc ; line=50 ; "
    "expr=cudaMalloc((void**)&p, size); ")
CUBLAS_OUT_OF_MEMORY = RunFailure(
    "FAIL", "Non-zero status code returned while running MatMul node. Name:'/head/MatMul' Status Message: "
    "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:123 std::conditional_t<THRW, void, "
    "onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, SUCCTYPE, const char*, "
    "const char*, int) [with ERRTYPE = cublasStatus_t; bool THRW = false] CUBLAS failure 3: "
    "CUBLAS_STATUS_ALLOC_FAILED ; GPU=0 ; hostname=desktop ; "
    "file=/onnxruntime_src/onnxruntime/core/providers/cuda/math/matmul.cc ; line=300 ; expr=cublasGemmHelper(); ")


@pytest.mark.parametrize(("failure", "where", "reason"), [
    (CUDA_OUT_OF_MEMORY, "Conv node '/enc0/conv/Conv'", "CUDA failure 2: out of memory"),
    (CUBLAS_OUT_OF_MEMORY, "MatMul node '/head/MatMul'", "CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED")],
    ids=["cuda", "cublas"])
def test_a_cuda_or_cublas_call_running_out_of_memory_in_a_run_is_one_line_naming_the_memory(
        provider: FakeCudaProvider, model: Path, failure: RunFailure, where: str, reason: str) -> None:
    """[RUN-FAILS] with a CUDA or cuBLAS call's own error (status FAIL, not EP_FAIL): the GPU's memory running out in
    cudaMalloc or cuBLAS's workspace is the provider's failure, not the network's shape: both paths name it, the
    node, the reason in one line and the memory fix, never the network's depth."""
    expected = (rf"^ONNX Runtime's CUDA provider failed running tiny\.onnx on a 1 x 3 x 16 x 16 batch at its "
                rf"{re.escape(where)} \({re.escape(reason)}\): the GPU's memory ran out: ")
    for caught in _run_failures_on_both_paths(provider, model, failure, expected):
        assert "\n" not in str(caught.value) and "depth" not in str(caught.value)


def test_a_failing_nodes_reason_without_a_library_prefix_is_its_status_message() -> None:
    """A node's failure whose reason names no CUDA library's own words: the reason is the node's status message, not
    the executor's words before it."""
    from unetrt.backends.onnxruntime import _reason_in_one_line

    text = ("[ONNXRuntimeError] : 11 : EP_FAIL : Non-zero status code returned while running Conv node. "
            "Name:'/enc0/conv/Conv' Status Message: OP not supported by CUDNN Frontend\nwith the cudnn frontend json:")
    assert _reason_in_one_line(text) == "OP not supported by CUDNN Frontend with the cudnn frontend json:"
