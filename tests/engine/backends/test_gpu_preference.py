"""On a CUDA machine with TensorRT the default ends on TensorRT, then ONNX Runtime CUDA, then the CPU list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_info

from unetrt import plan_cache
from unetrt.backends import ModelChoice, choose_model, model_choices, open_backend, tensorrt_gpu_available
from unetrt.bundled import MODELS_DIR
from unetrt.plan_metadata import GpuIdentity, PlanMetadata, ShapeProfile, write_plan_metadata

pytestmark = pytest.mark.gpu_contract


@pytest.fixture
def tensorrt_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT, pycuda and a GPU are present; ONNX Runtime has no CUDA provider; OpenVINO is absent."""
    monkeypatch.setattr("unetrt.backends.tensorrt_gpu_available", lambda: True)
    monkeypatch.setattr("unetrt.backends.onnxruntime_gpu_available", lambda: False)
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: False)


def test_bundled_model_runs_on_tensorrt_fp16(tensorrt_gpu: None) -> None:
    # Before: the GPU preference offered ONNX Runtime's CUDA provider only.
    assert choose_model("camvid") == ModelChoice(MODELS_DIR / "camvid.onnx", "tensorrt", "fp16")
    # INT8 builds from the TensorRT layout (symmetric int8); ONNX Runtime, the fallback, runs the CPU layout.
    assert model_choices("camvid", precision="int8") == [
        ModelChoice(MODELS_DIR / "camvid.int8.tensorrt.onnx", "tensorrt", "int8"),
        ModelChoice(MODELS_DIR / "camvid.int8.onnx", "onnxruntime", "int8")]
    assert choose_model("camvid", precision="fp32").backend == "tensorrt"


def test_an_fp16_engine_is_built_from_the_fp32_graph_the_default_engine_comes_from(tensorrt_gpu: None) -> None:
    # FP16 is the default engine's precision: asking for it names the same build (the same cached engine, no second
    # build of minutes on a Jetson), from camvid.onnx with the builder's FP16 flag, not from camvid.fp16.onnx.
    fp16 = ModelChoice(MODELS_DIR / "camvid.onnx", "tensorrt", "fp16")
    assert choose_model("camvid") == choose_model("camvid", precision="fp16") == fp16
    assert choose_model("camvid", "tensorrt", "fp16") == fp16


def test_fallbacks_follow_tensorrt(tensorrt_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = model_choices("camvid")
    assert [c.backend for c in cpu] == ["tensorrt", "onnxruntime"] and cpu[1].precision == "int8"
    monkeypatch.setattr("unetrt.backends.onnxruntime_gpu_available", lambda: True)
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


@pytest.mark.parametrize("gpus, expected", [(0, False), (1, True)])
def test_tensorrt_is_a_choice_only_where_a_gpu_is_present(gpus: int, expected: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine with TensorRT's bindings but no GPU (a container built for a Jetson, run on a laptop) runs on its CPU.
    monkeypatch.setattr("unetrt.backends.tensorrt.tensorrt_available", lambda: True)
    monkeypatch.setattr("unetrt.cuda.cuda_device_count", lambda: gpus)
    assert tensorrt_gpu_available() is expected


def test_an_onnx_file_on_device_cpu_skips_tensorrt(tensorrt_gpu: None, tiny_model_files: dict[str, Path]) -> None:
    onnx = tiny_model_files["onnx"]
    assert model_choices(onnx, device="cpu") == [ModelChoice(onnx, "onnxruntime", "fp32")]


def test_an_openvino_ir_stays_on_openvino_on_a_gpu(tensorrt_gpu: None, tmp_path: Path) -> None:
    # TensorRT builds engines from .onnx files only: an IR .xml runs on OpenVINO whatever the machine.
    ir = tmp_path / "tiny.xml"
    ir.write_text(f"<net name='unet' version='11'><layers/><rt_info><unetrt value='{tiny_info().to_json()}'/>"
                  "</rt_info></net>")
    assert model_choices(ir) == [ModelChoice(ir, "openvino", "fp32")]


@pytest.mark.parametrize("suffix", [".plan", ".engine"])
@pytest.mark.parametrize("built_at", ["fp32", "int8"])
def test_a_plan_runs_on_tensorrt_at_the_precision_it_was_built_at(suffix: str, built_at: str, tensorrt_gpu: None,
                                                                  tmp_path: Path) -> None:
    # An engine is built from an .onnx file at FP16 by default; a plan runs as built, which TensorRTBackend checks
    # against its PLAN.json: an FP32 plan handed FP16 would refuse to open.
    plan = tmp_path / f"tiny{suffix}"
    plan.write_bytes(b"engine bytes")
    write_plan_metadata(plan, PlanMetadata(
        tensorrt_version="10.3.0", gpu=GpuIdentity("Orin", (8, 7)), input_name="image", output_name="logits",
        input_dtype="float16", output_dtype="float32",
        profile=ShapeProfile((1, 3, 8, 8), (1, 3, 32, 32), (2, 3, 64, 64)), precision=built_at,
        strongly_typed=False, source="tiny.onnx", info=tiny_info()))
    assert model_choices(plan) == [ModelChoice(plan, "tensorrt", built_at)]


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


@pytest.mark.parametrize("gpus, expected", [(0, ModelChoice(MODELS_DIR / "camvid.int8.onnx", "onnxruntime", "int8")),
                                            (1, ModelChoice(MODELS_DIR / "camvid.onnx", "onnxruntime", "fp32"))])
def test_onnxruntime_gpu_is_the_gpu_choice_only_where_a_gpu_is_present(gpus: int, expected: ModelChoice,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # onnxruntime-gpu installed on a machine without a GPU lists its CUDA provider all the same, and a session asking
    # for it falls back to the CPU after an "EP Error" banner on stdout: 'auto' takes the CPU list there.
    from fakes.cuda import FakeGpu, install_fake_gpu
    from fakes.onnxruntime_cuda import install_fake_onnxruntime_cuda

    install_fake_onnxruntime_cuda(monkeypatch, install_fake_gpu(monkeypatch, FakeGpu(count=gpus)))
    monkeypatch.setattr("unetrt.backends.tensorrt_gpu_available", lambda: False)
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: False)
    assert choose_model("camvid") == expected
