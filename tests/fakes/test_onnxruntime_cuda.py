"""The fake onnxruntime-gpu (tests/fakes/onnxruntime_cuda.py) held to the real onnxruntime Python API installed in
the venv (the CPU build, whose Python layer and bindings are onnxruntime-gpu's): the parameters its classes take,
and the error types and fallback its rules say the real package has ([ERRORS], [FALLBACK])."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fakes.onnxruntime_cuda import CPU, FakeInferenceSession, FakeIOBinding, real_onnxruntime

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
    for fake, real in ((FakeInferenceSession, ort.InferenceSession), (FakeIOBinding, ort.IOBinding)):
        for name, member in vars(fake).items():
            if (name.startswith("_") and name != "__init__") or not inspect.isfunction(member):
                continue
            if not hasattr(real, name):
                wrong.append(f"{fake.__name__}.{name}: onnxruntime's {real.__name__} has no {name}")
                continue
            if _parameters(member) != _parameters(getattr(real, name)):
                wrong.append(f"{fake.__name__}.{name}{_parameters(member)}: onnxruntime's takes "
                             f"{_parameters(getattr(real, name))}")
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
