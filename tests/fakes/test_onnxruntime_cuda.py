"""The fake onnxruntime-gpu (tests/fakes/onnxruntime_cuda.py) held to the real onnxruntime Python API installed in
the venv (the CPU build, whose Python layer and bindings are onnxruntime-gpu's): the parameters its classes take,
and the error types and fallback its rules say the real package has ([ERRORS], [FALLBACK])."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fakes.cuda import MEMORY_TYPE_DEVICE, FakeGpu, install_fake_gpu
from fakes.onnxruntime_cuda import (
    CPU,
    CUDA,
    FakeCudaProvider,
    FakeInferenceSession,
    FakeIOBinding,
    FakeOrtValue,
    install_fake_onnxruntime_cuda,
    real_onnxruntime,
)

pytestmark = pytest.mark.gpu_contract


def _parameters(function: Any) -> list[tuple[str, Any]]:
    """(name, default) of each parameter after ``self``."""
    return [(p.name, p.default) for p in list(inspect.signature(function).parameters.values())[1:]]


def test_the_fakes_take_the_parameters_onnxruntime_names() -> None:
    """Every public method of a fake class that the real class has takes the same parameters, in the same order,
    with the same defaults, so that a call the product makes with keywords runs alike on both; a public method the
    real class lacks is a mistake of the fake."""
    ort = real_onnxruntime()
    wrong = []
    for fake, real in ((FakeInferenceSession, ort.InferenceSession), (FakeIOBinding, ort.IOBinding),
                       (FakeOrtValue, ort.OrtValue)):
        for name, member in vars(fake).items():
            # A class method's function (OrtValue's factories), its first parameter cls as a method's self.
            member = member.__func__ if isinstance(member, classmethod) else member
            if (name.startswith("_") and name != "__init__") or not inspect.isfunction(member):
                continue
            if not hasattr(real, name):
                wrong.append(f"{fake.__name__}.{name}: onnxruntime's {real.__name__} has no {name}")
                continue
            theirs = inspect.getattr_static(real, name)
            theirs = theirs.__func__ if isinstance(theirs, classmethod) else theirs
            if _parameters(member) != _parameters(theirs):
                wrong.append(f"{fake.__name__}.{name}{_parameters(member)}: onnxruntime's takes "
                             f"{_parameters(theirs)}")
    assert wrong == [], "\n".join(wrong)


@pytest.fixture
def cpu_session(tiny_model_files: dict[str, Path]) -> Any:
    """A real CPU session of the tiny model (1 x 3 x H x W in, same shape out)."""
    return real_onnxruntime().InferenceSession(str(tiny_model_files["onnx"]), providers=[CPU])


def _bind(session: Any, images: np.ndarray, logits: np.ndarray) -> Any:
    binding = session.io_binding()
    binding.bind_input(session.get_inputs()[0].name, "cpu", 0, images.dtype, list(images.shape),
                       images.ctypes.data)
    binding.bind_output(session.get_outputs()[0].name, "cpu", 0, logits.dtype, list(logits.shape),
                        logits.ctypes.data)
    return binding


@pytest.mark.parametrize(("images", "logits", "message"), [
    (np.zeros((1, 4, 16, 16), np.float32), np.zeros((1, 3, 16, 16), np.float32), "invalid dimensions for input"),
    (np.zeros((1, 3, 16, 16), np.float64), np.zeros((1, 3, 16, 16), np.float32), "Unexpected input data type"),
], ids=["input-dimension", "input-type"])
def test_a_failed_run_with_iobinding_is_a_runtime_error_in_onnxruntime(cpu_session: Any, images: np.ndarray,
                                                                      logits: np.ndarray, message: str) -> None:
    """[ERRORS]: what the fake raises from ``run_with_iobinding``, the real bindings raise."""
    with pytest.raises(RuntimeError, match=f"^Error in execution: .*{message}"):
        cpu_session.run_with_iobinding(_bind(cpu_session, images, logits))


def test_a_binding_error_is_what_the_fake_raises(cpu_session: Any) -> None:
    """[ERRORS]: a name the model lacks is a RuntimeError of the binding call."""
    images = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(RuntimeError, match=r"^Error when binding input: "):
        cpu_session.io_binding().bind_input("no_such_input", "cpu", 0, np.float32, [1, 3, 16, 16],
                                            images.ctypes.data)


def test_a_foreign_binding_is_what_the_fake_raises(cpu_session: Any, tiny_model_files: dict[str, Path]) -> None:
    """[ERRORS]: another session's IOBinding is a ValueError of ``run_with_iobinding`` in the onnxruntime the fake
    follows; older releases (1.23, the newest for Python 3.10) run it without the check."""
    ort = real_onnxruntime()
    if "IOBinding must be used with the session" not in inspect.getsource(ort.InferenceSession.run_with_iobinding):
        pytest.skip(f"onnxruntime {ort.__version__} does not check whose IOBinding a session runs")
    images, logits = np.zeros((1, 3, 16, 16), np.float32), np.zeros((1, 3, 16, 16), np.float32)
    other = ort.InferenceSession(str(tiny_model_files["onnx"]), providers=[CPU])
    with pytest.raises(ValueError, match="IOBinding must be used with the session that created it"):
        other.run_with_iobinding(_bind(cpu_session, images, logits))


def test_a_session_that_cannot_be_made_falls_back_to_the_cpu_with_a_banner_on_stdout(
        tiny_model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """[FALLBACK], [DEVICE-ID]: an exception thrown in C++ while the session is made reaches Python as a plain
    RuntimeError, and InferenceSession makes the session on the CPU after its banner on stdout, unless
    enable_fallback=0 (here an unknown provider, which the CPU build lacks as it lacks the CUDA one's options)."""
    ort, path = real_onnxruntime(), str(tiny_model_files["onnx"])
    with pytest.warns(UserWarning, match="not in available provider names"):
        session = ort.InferenceSession(path, providers=["NoSuchExecutionProvider", CPU])
    assert session.get_providers() == [CPU]
    out = capsys.readouterr().out
    assert "EP Error" in out and "Falling back to ['CPUExecutionProvider'] and retrying." in out
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="NoSuchExecutionProvider") as raised:
        ort.InferenceSession(path, providers=["NoSuchExecutionProvider", CPU], enable_fallback=0)
    assert type(raised.value) is RuntimeError  # not one of ORT's typed errors, which are not RuntimeErrors


def test_onnxruntime_refuses_the_provider_arguments_the_fake_refuses(tiny_model_files: dict[str, Path]) -> None:
    """[PROVIDERS]: a (name, options) pair as a list, or provider_options beside pairs, is a ValueError of the
    arguments' check (which the fallback would answer with a CPU session)."""
    ort, path = real_onnxruntime(), str(tiny_model_files["onnx"])
    for arguments in ({"providers": [[CPU, {}]]}, {"providers": [(CPU, {})], "provider_options": [{}]}):
        with pytest.raises(ValueError, match="string"):
            ort.InferenceSession(path, enable_fallback=0, **arguments)


def test_onnxruntime_s_own_device_resident_run_gives_the_logits_of_run(cpu_session: Any) -> None:
    """[ORTVALUE], [BIND-VALUE]: the calls unet-bench's device mode makes (an OrtValue of the batch, bound as the
    input; the output bound to a device for ORT to allocate; copy_outputs_to_cpu) run on the real package as on the
    fake, on the CPU, and give what ``run`` gives."""
    ort = real_onnxruntime()
    images = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    binding = cpu_session.io_binding()
    binding.bind_ortvalue_input(cpu_session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(images, "cpu", 0))
    binding.bind_output(cpu_session.get_outputs()[0].name, "cpu")
    cpu_session.run_with_iobinding(binding)
    (expected,) = cpu_session.run(None, {cpu_session.get_inputs()[0].name: images})
    assert np.array_equal(binding.copy_outputs_to_cpu()[0], expected)
    assert binding.get_outputs()[0].device_name() == "cpu"


def test_onnxruntime_s_cpu_build_places_no_value_on_cuda_and_none_of_what_is_no_numeric_array() -> None:
    """[ORTVALUE]: the real CPU build refuses a "cuda" value with a RuntimeError, as the fake refuses one where the
    CUDA provider's library does not load, and strings or a list in the fake's words."""
    ort = real_onnxruntime()
    with pytest.raises(RuntimeError):
        ort.OrtValue.ortvalue_from_numpy(np.zeros(4, np.float32), "cuda", 0)
    for values in (np.array(["a"]), [1.0, 2.0]):
        with pytest.raises(RuntimeError, match=r"^Creation of OrtValues is currently only supported from non-string "
                                               r"numpy arrays$"):
            ort.OrtValue.ortvalue_from_numpy(values, "cpu", 0)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> FakeCudaProvider:
    """onnxruntime-gpu's fake on a fake machine of two GPUs."""
    return install_fake_onnxruntime_cuda(monkeypatch, install_fake_gpu(monkeypatch, FakeGpu(count=2)))


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def _cuda_session(path: Path, device_id: int = 0) -> Any:
    return _ort().InferenceSession(str(path), providers=[(CUDA, {"device_id": device_id}), CPU])


@pytest.mark.parametrize(("arguments", "error", "message"), [
    ((np.zeros(4, np.float32), "tpu", 0), Exception, "^Unsupported device type: tpu$"),
    ((np.zeros(4, np.float32), "dml", 0), RuntimeError, "^Unsupported device: Cannot place the OrtValue"),
    ((np.array(["a"]), "cuda", 0), RuntimeError, "only supported from non-string numpy arrays"),
    (([1.0, 2.0], "cuda", 0), RuntimeError, "only supported from non-string numpy arrays"),
    ((np.zeros(4, np.float32), "cuda", 2), RuntimeError, "device id doesn't match any available GPUs"),
    ((np.zeros(4, np.float32), "cuda", -1), RuntimeError, "device id doesn't match any available GPUs"),
], ids=["unknown-device", "other-device", "strings", "a-list", "no-such-gpu", "negative-id"])
def test_the_fake_places_values_where_onnxruntime_does(provider: FakeCudaProvider, arguments: tuple[Any, ...],
                                                       error: type[Exception], message: str) -> None:
    """[ORTVALUE]: a device ORT does not know, one it cannot place a value on, an array of strings, a GPU the
    machine lacks."""
    with pytest.raises(error, match=message):
        _ort().OrtValue.ortvalue_from_numpy(*arguments)


@pytest.mark.parametrize("machine", ["no-provider-library", "old-driver"])
def test_a_cuda_value_needs_the_provider_s_library_and_a_driver_for_its_cuda(provider: FakeCudaProvider,
                                                                            machine: str) -> None:
    """[ORTVALUE], [PROVIDER-LIBS], [DRIVER]: without the CUDA provider's library no value goes on the GPU; with a
    driver older than its CUDA, cudaGetDeviceCount fails."""
    if machine == "no-provider-library":
        provider.libraries = False
        message = "CUDA Provider not available"
    else:
        provider.gpu.driver_version = 11080
        message = "CUDA failure 35: CUDA driver version is insufficient"
    with pytest.raises(RuntimeError, match=message):
        _ort().OrtValue.ortvalue_from_numpy(np.zeros(4, np.float32), "cuda", 0)


def test_a_cuda_value_is_device_memory_the_host_reads_only_by_copying(provider: FakeCudaProvider) -> None:
    """[ORTVALUE]: the array is copied to device memory of the device's primary context when the value is made (a
    later write to the array is not seen), ``numpy()`` is a host copy (a write to it is not the device's), and the
    memory goes with the value."""
    gpu = provider.gpu
    images = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    value = _ort().OrtValue.ortvalue_from_numpy(images, "cuda", 1)
    images[...] = -1
    assert (value.device_name(), value.shape(), value.data_type()) == ("cuda", [1, 3, 2, 2], "tensor(float)")
    assert gpu.pointer_attributes(value.data_ptr())[0] == MEMORY_TYPE_DEVICE
    assert gpu.context_of(value.data_ptr()) is gpu.primary(1)
    copy = value.numpy()
    assert np.array_equal(copy, np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2))
    copy[...] = 7
    assert value.numpy()[0, 0, 0, 0] == 0
    live = gpu.live("device")
    del value
    assert gpu.live("device") == live - 1


def test_a_cuda_value_binds_only_in_a_session_on_its_device(provider: FakeCudaProvider,
                                                             tiny_model_files: dict[str, Path]) -> None:
    """[BIND-VALUE], [BIND-DEVICE]: a value on GPU 1 bound to a session on GPU 0, or in a session on the CPU, is
    refused when bound."""
    images = np.zeros((1, 3, 16, 16), np.float32)
    on_second = _ort().OrtValue.ortvalue_from_numpy(images, "cuda", 1)
    session = _cuda_session(tiny_model_files["onnx"])
    with pytest.raises(RuntimeError, match=r"^Error when binding input: .*device 1 but the session runs on device 0"):
        session.io_binding().bind_ortvalue_input(session.get_inputs()[0].name, on_second)
    cpu = _ort().InferenceSession(str(tiny_model_files["onnx"]), providers=[CPU])
    on_first = _ort().OrtValue.ortvalue_from_numpy(images, "cuda", 0)
    with pytest.raises(RuntimeError, match=r"^Error when binding input: .*session without the CUDA provider"):
        cpu.io_binding().bind_ortvalue_input(cpu.get_inputs()[0].name, on_first)
    with pytest.raises(RuntimeError, match=r"^Error when binding output: .*session without the CUDA provider"):
        cpu.io_binding().bind_output(cpu.get_outputs()[0].name, "cuda")


@pytest.mark.parametrize(("images", "message"), [
    (np.zeros((1, 3, 16, 16), np.float64), "Unexpected input data type"),
    (np.zeros((1, 4, 16, 16), np.float32), "invalid dimensions for input"),
], ids=["input-type", "input-dimension"])
def test_a_cuda_value_of_another_type_or_shape_than_the_model_s_fails_the_run(
        provider: FakeCudaProvider, tiny_model_files: dict[str, Path], images: np.ndarray, message: str) -> None:
    """[DTYPE], [SHAPE]: checked when the Run starts, as for a bound pointer."""
    session = _cuda_session(tiny_model_files["onnx"])
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, _ort().OrtValue.ortvalue_from_numpy(images, "cuda"))
    binding.bind_output(session.get_outputs()[0].name, "cuda")
    with pytest.raises(RuntimeError, match=f"^Error in execution: .*{message}"):
        session.run_with_iobinding(binding)


def test_outputs_ort_allocates_lie_on_the_device_and_come_after_a_run(provider: FakeCudaProvider,
                                                                      tiny_model_files: dict[str, Path]) -> None:
    """[BIND-VALUE]: before a Run there are no outputs (refused); after it, the output lies in device memory of the
    session's device, and ``copy_outputs_to_cpu`` gives the logits the CPU session computes."""
    session = _cuda_session(tiny_model_files["onnx"], device_id=1)
    images = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, _ort().OrtValue.ortvalue_from_numpy(images, "cuda", 1))
    binding.bind_output(session.get_outputs()[0].name, "cuda", 1)
    with pytest.raises(RuntimeError, match="before any run_with_iobinding"):
        binding.copy_outputs_to_cpu()
    session.run_with_iobinding(binding)
    (output,) = binding.get_outputs()
    assert output.device_name() == "cuda"
    assert provider.gpu.context_of(output.data_ptr()) is provider.gpu.primary(1)
    (expected,) = real_onnxruntime().InferenceSession(str(tiny_model_files["onnx"]), providers=[CPU]).run(
        None, {session.get_inputs()[0].name: images})
    assert np.array_equal(binding.copy_outputs_to_cpu()[0], expected)


def test_a_copy_of_an_output_reads_the_device_as_it_is_now(provider: FakeCudaProvider,
                                                          tiny_model_files: dict[str, Path]) -> None:
    """[ORTVALUE], [RUN-SYNC]: with the Run's synchronisation turned off, a copy made before anything waited for
    the provider's stream is of memory the Run has not written yet; ``synchronize_outputs`` waits for it."""
    ort = _ort()
    session = _cuda_session(tiny_model_files["onnx"])
    images = np.ones((1, 3, 16, 16), np.float32)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(images, "cuda"))
    binding.bind_output(session.get_outputs()[0].name, "cuda")
    options = ort.RunOptions()
    options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    session.run_with_iobinding(binding, options)
    assert not binding.copy_outputs_to_cpu()[0].any()  # the fresh allocation, not yet written
    binding.synchronize_outputs()
    assert binding.copy_outputs_to_cpu()[0].any()


def test_a_cuda_session_holds_its_initializers_in_device_memory_while_it_lives(
        provider: FakeCudaProvider, tiny_model_files: dict[str, Path]) -> None:
    """[INITIALIZERS]: the weights ORT copies to the device when the session is made take the device's free memory
    ([MEM-INFO]) until the session goes; a CPU session takes none (no row of onnxruntime-gpu's could show growth)."""
    import gc

    import onnx

    gpu = provider.gpu
    weights = sum(onnx.numpy_helper.to_array(tensor).nbytes
                  for tensor in onnx.load(str(tiny_model_files["onnx"])).graph.initializer)
    assert weights > 0 and gpu.device_bytes_in_use() == 0
    cpu = _ort().InferenceSession(str(tiny_model_files["onnx"]), providers=[CPU])
    assert gpu.device_bytes_in_use() == 0
    session = _cuda_session(tiny_model_files["onnx"])
    assert gpu.device_bytes_in_use() == weights and gpu.context_of(min(gpu._blocks)) is gpu.primary(0)
    del session, cpu
    gc.collect()
    assert gpu.device_bytes_in_use() == 0
