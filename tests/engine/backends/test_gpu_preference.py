"""On a CUDA machine with TensorRT the default ends on TensorRT, then ONNX Runtime CUDA, then the CPU list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unetrt import plan_cache
from unetrt.backends import ModelChoice, choose_model, model_choices, open_backend
from unetrt.bundled import MODELS_DIR

pytestmark = pytest.mark.gpu_contract


@pytest.fixture
def tensorrt_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT, pycuda and a GPU are present; ONNX Runtime has no CUDA provider; OpenVINO is absent."""
    monkeypatch.setattr("unetrt.backends.tensorrt_gpu_available", lambda: True)
    monkeypatch.setattr("unetrt.backends._onnxruntime_cuda", lambda: False)
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: False)


def test_bundled_model_runs_on_tensorrt_fp16(tensorrt_gpu: None) -> None:
    # Before: the GPU preference offered ONNX Runtime's CUDA provider only.
    assert choose_model("camvid") == ModelChoice(MODELS_DIR / "camvid.onnx", "tensorrt", "fp16")
    # INT8 builds from the TensorRT layout (symmetric int8); ONNX Runtime, the fallback, runs the CPU layout.
    assert model_choices("camvid", precision="int8") == [
        ModelChoice(MODELS_DIR / "camvid.int8.tensorrt.onnx", "tensorrt", "int8"),
        ModelChoice(MODELS_DIR / "camvid.int8.onnx", "onnxruntime", "int8")]
    assert choose_model("camvid", precision="fp32").backend == "tensorrt"


def test_fallbacks_follow_tensorrt(tensorrt_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = model_choices("camvid")
    assert [c.backend for c in cpu] == ["tensorrt", "onnxruntime"] and cpu[1].precision == "int8"
    monkeypatch.setattr("unetrt.backends._onnxruntime_cuda", lambda: True)
    assert model_choices("camvid")[1] == ModelChoice(MODELS_DIR / "camvid.onnx", "onnxruntime", "fp32")


def test_cpu_and_explicit_requests_skip_tensorrt(tensorrt_gpu: None, tiny_model_files: dict[str, Path]) -> None:
    assert choose_model("camvid", device="cpu").backend == "onnxruntime"
    assert choose_model("camvid", "onnxruntime").backend == "onnxruntime"
    assert choose_model("camvid", precision="bf16").backend == "openvino"
    # The precision handed to the backend is the file's own, read from its content.
    assert model_choices(tiny_model_files["onnx"], "onnxruntime") == [
        ModelChoice(tiny_model_files["onnx"], "onnxruntime", "fp32")]


def test_onnx_file_runs_on_tensorrt_first(tensorrt_gpu: None, tiny_model_files: dict[str, Path]) -> None:
    onnx = tiny_model_files["onnx"]
    # A float graph is built at FP16 (the engine cache's 'auto'); ONNX Runtime runs the file's own FP32.
    assert model_choices(onnx) == [ModelChoice(onnx, "tensorrt", "fp16"), ModelChoice(onnx, "onnxruntime", "fp32")]
    assert model_choices(onnx, precision="fp32") == [ModelChoice(onnx, "tensorrt", "fp32")]


def test_explicit_tensorrt_builds_from_the_bundled_onnx() -> None:
    # Before: "bundled model 'camvid' has no TensorRT engine".
    assert choose_model("camvid", "tensorrt") == ModelChoice(MODELS_DIR / "camvid.onnx", "tensorrt", "fp16")
    with pytest.raises(ValueError, match="OpenVINO's hint"):
        choose_model("camvid", "tensorrt", "bf16")


class Calls:
    def __init__(self) -> None:
        self.kwargs: list[dict[str, Any]] = []


@pytest.fixture
def no_cached_engine(monkeypatch: pytest.MonkeyPatch) -> Calls:
    calls = Calls()

    def refuse(path: Path, precision: str, device: str, **kwargs: Any) -> None:
        calls.kwargs.append({"path": path, "precision": precision, **kwargs})
        raise plan_cache.PlanNotCachedError("no usable cached TensorRT engine for camvid FP16")

    monkeypatch.setattr(plan_cache, "open_cached_engine", refuse)
    return calls


def test_no_build_falls_back_with_one_line(tensorrt_gpu: None, no_cached_engine: Calls,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with open_backend("camvid", build=False, working_size=(128, 96)) as net:
        assert net.name == "onnxruntime"
    assert no_cached_engine.kwargs == [{"path": MODELS_DIR / "camvid.onnx", "precision": "fp16", "build": False,
                                        "working_size": (128, 96)}]
    err = capsys.readouterr().err
    assert err == ("unetrt: no TensorRT engine (no usable cached TensorRT engine for camvid FP16); running "
                   "onnxruntime instead\n")


def test_explicit_tensorrt_does_not_fall_back(tensorrt_gpu: None, no_cached_engine: Calls) -> None:
    with pytest.raises(plan_cache.PlanNotCachedError):
        open_backend("camvid", "tensorrt", build=False)


def test_segmenter_and_stream_pass_build_through(tensorrt_gpu: None, no_cached_engine: Calls) -> None:
    from unetrt.segmenter import Segmenter
    from unetrt.stream.cli import _segmenter_options, build_parser

    with Segmenter("camvid", build=False, working_size=(128, 96), warm_up=False) as segmenter:
        assert segmenter.backend.name == "onnxruntime"
        assert segmenter.segment(np.zeros((96, 128, 3), np.uint8)).mask.shape == (96, 128)
    assert no_cached_engine.kwargs[-1]["build"] is False
    assert no_cached_engine.kwargs[-1]["working_size"] == (128, 96)
    assert _segmenter_options(build_parser().parse_args(["sample", "--no-build"]))["build"] is False
    assert _segmenter_options(build_parser().parse_args(["sample"]))["build"] is True


def test_eval_and_bench_take_no_build() -> None:
    from unetrt.benchmarks.bench import build_parser as bench_parser
    from unetrt.evaluate import build_parser as eval_parser

    assert eval_parser().parse_args(["--model", "m", "--images", "i", "--labels", "l", "--no-build"]).build is False
    assert bench_parser().parse_args(["--engine", "camvid", "--no-build"]).build is False
