"""unet-build: the command line without TensorRT, and real engine builds where TensorRT and a GPU exist."""

from __future__ import annotations

import shlex
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import requires_tensorrt_gpu, tiny_info, write_unparsable_onnx
from fakes.tensorrt_builder import ParserError

from unetrt.backends.tensorrt import MISSING_TENSORRT
from unetrt.export.tensorrt import (
    BuildOptions,
    build_parser,
    describe_parser_errors,
    main,
)
from unetrt.plan_metadata import GpuIdentity, PlanMetadata, ShapeProfile

requires_gpu = requires_tensorrt_gpu


@pytest.mark.parametrize("missing", [None, types.ModuleType("tensorrt")], ids=["not-installed", "stubs-only"])
def test_without_tensorrt_one_line_and_exit_2(missing: types.ModuleType | None, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # None makes `import tensorrt` raise ImportError; a bare module is what tensorrt-stubs alone leaves behind.
    monkeypatch.setitem(sys.modules, "tensorrt", missing)
    code = main([str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "unet.plan"), "--fp16"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err == f"error: {MISSING_TENSORRT}\n"
    assert "JetPack" in captured.err and "pip install tensorrt" in captured.err
    assert not (tmp_path / "unet.plan").exists()


def test_bad_shape_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["m.onnx", "-o", "m.plan", "--max-shape", "1x3x64"])
    assert caught.value.code == 2
    assert "NxCxHxW" in capsys.readouterr().err


def test_opt_level_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["m.onnx", "-o", "m.plan", "--opt-level", "6"])
    assert "--opt-level" in capsys.readouterr().err


def test_the_help_of_int8_names_the_export_tensorrt_takes() -> None:
    """`unet-build --help` sent --precision int8 to `unet-export --precision int8`, whose default CPU layout (uint8 with
    zero points) unet-build then refuses: the help names the TensorRT layout's option."""
    help_text = " ".join(build_parser().format_help().split())
    assert "unet-export --precision int8 --int8-target tensorrt" in help_text, help_text


def test_rebuild_command_parses_back() -> None:
    profile = ShapeProfile((1, 3, 16, 16), (1, 3, 48, 64), (4, 3, 96, 128))
    metadata = PlanMetadata(
        tensorrt_version="10.3.0", gpu=GpuIdentity("Orin", (8, 7)), input_name="image", output_name="logits",
        input_dtype="float32", output_dtype="float32", profile=profile, precision="fp16", strongly_typed=False,
        source="my models/tiny.onnx", info=tiny_info(), build_options={"workspace_mib": 512, "opt_level": 5},
    )
    words = shlex.split(metadata.rebuild_command("out dir/unet.plan"))
    assert words[0] == "unet-build"
    args = build_parser().parse_args(words[1:])
    assert (args.model, args.output) == ("my models/tiny.onnx", "out dir/unet.plan")
    assert (args.min_shape, args.opt_shape, args.max_shape) == (profile.min, profile.opt, profile.max)
    assert args.fp16 and args.workspace == 512 and args.opt_level == 5


@pytest.mark.parametrize("kwargs, message", [({"workspace_mib": 0}, "workspace"), ({"opt_level": 7}, "opt level")])
def test_build_options_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BuildOptions(**kwargs)


def test_parser_errors_name_every_node() -> None:
    errors = [ParserError("/up/ConvTranspose", "ConvTranspose", 7, "unsupported padding"),
              ParserError("", "", 9, "weights missing")]
    parser: Any = types.SimpleNamespace(num_errors=len(errors), get_error=errors.__getitem__)
    text = describe_parser_errors(parser)
    assert text == ("node '/up/ConvTranspose' (ConvTranspose): unsupported padding; "
                    "node '#9' (unknown op): weights missing")


# --- with TensorRT ------------------------------------------------------------------------------------------

SMALL_PROFILE = {"min_shape": (1, 3, 16, 16), "opt_shape": (1, 3, 64, 64), "max_shape": (2, 3, 96, 96)}


def _ort_logits(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"image": batch})[0])


@pytest.mark.tensorrt
@requires_gpu
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_build_and_compare_with_onnxruntime(fp16: bool, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    import tensorrt as trt

    from unetrt.backends.tensorrt import TensorRTBackend
    from unetrt.export.tensorrt import build_engine
    from unetrt.plan_metadata import read_plan_metadata

    plan = tmp_path / "tiny.plan"
    cache = tmp_path / "timing.cache"
    metadata = build_engine(tiny_model_files["onnx"], plan,
                            BuildOptions(fp16=fp16, timing_cache=cache, opt_level=1, progress=False, **SMALL_PROFILE))
    assert read_plan_metadata(plan) == metadata
    assert metadata.tensorrt_version == trt.__version__
    assert metadata.precision == ("fp16" if fp16 else "fp32")
    # Weakly typed FP16 takes its input in FP16 (the frame path's extract kernel writes half); logits stay FP32.
    assert (metadata.input_dtype, metadata.output_dtype) == ("float16" if fp16 else "float32", "float32")
    assert cache.stat().st_size > 0
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 96)).astype(np.float32)
    reference = _ort_logits(tiny_model_files["onnx"], batch)
    with TensorRTBackend(plan) as backend:
        logits = backend.infer(batch)
    assert logits.shape == reference.shape and logits.dtype == np.float32
    if fp16:
        assert np.abs(logits - reference).max() < 0.1
        assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.99
    else:
        np.testing.assert_allclose(logits, reference, atol=2e-3, rtol=1e-3)


@pytest.mark.tensorrt
@requires_gpu
def test_build_from_fp16_graph_is_strongly_typed(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    from unetrt.export.fp16 import convert_file
    from unetrt.export.tensorrt import build_engine

    fp16_graph = convert_file(tiny_model_files["onnx"], tmp_path / "tiny.fp16.onnx")
    metadata = build_engine(fp16_graph, tmp_path / "tiny.plan", BuildOptions(progress=False, **SMALL_PROFILE))
    assert metadata.strongly_typed and metadata.precision == "fp16"
    assert metadata.input_dtype == "float32"


@pytest.mark.tensorrt
@requires_gpu
def test_cli_builds_triton_repository(tiny_model_files: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "models"
    code = main([str(tiny_model_files["onnx"]), "--fp16", "--triton-repo", str(repo), "--name", "tiny",
                 "--min-shape", "1x3x16x16", "--opt-shape", "1x3x64x64", "--max-shape", "4x3x64x64",
                 "--no-progress"])
    assert code == 0
    assert (repo / "tiny" / "1" / "model.plan").stat().st_size > 0
    assert 'platform: "tensorrt_plan"' in (repo / "tiny" / "config.pbtxt").read_text()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.tensorrt
@requires_gpu
def test_parse_errors_are_listed_by_node(tmp_path: Path) -> None:
    from unetrt.export.tensorrt import build_engine

    write_unparsable_onnx(tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match=r"could not parse .*node 'mystery'"):
        build_engine(tmp_path / "bad.onnx", tmp_path / "bad.plan",
                     BuildOptions(progress=False, min_shape=(1, 3, 16, 16), opt_shape=(1, 3, 16, 16),
                                  max_shape=(1, 3, 16, 16)))


# --- INT8: graph preparation and builder flags, with a fake TensorRT -------------------------------------------


class FakeTensor:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeLayer:
    def __init__(self, outputs: list[str]) -> None:
        self._outputs = [FakeTensor(n) for n in outputs]
        self.num_outputs = len(outputs)
        self.precision: object = None
        self.output_types: dict[int, object] = {}

    def get_output(self, index: int) -> FakeTensor:
        return self._outputs[index]

    def set_output_type(self, index: int, dtype: object) -> None:
        self.output_types[index] = dtype


class FakeNetwork:
    def __init__(self) -> None:
        self.layers = [FakeLayer(["features"]), FakeLayer(["logits"])]
        self.num_layers = len(self.layers)
        self.num_outputs = 1

    def get_output(self, index: int) -> FakeTensor:
        return FakeTensor("logits")

    def get_layer(self, index: int) -> FakeLayer:
        return self.layers[index]


class FakeConfig:
    def __init__(self) -> None:
        self.flags: list[str] = []

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    fake = types.ModuleType("tensorrt")
    fake.BuilderFlag = types.SimpleNamespace(INT8="INT8", FP16="FP16",  # type: ignore[attr-defined]
                                             OBEY_PRECISION_CONSTRAINTS="OBEY_PRECISION_CONSTRAINTS")
    fake.float32 = "float32"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


@pytest.mark.parametrize("options, strongly_typed, flags", [
    (BuildOptions(int8=True), False, ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"]),
    (BuildOptions(fp16=True), False, ["FP16", "OBEY_PRECISION_CONSTRAINTS"]),
    (BuildOptions(int8=True), True, []),
    (BuildOptions(), False, []),
])
def test_precision_flags_per_typing(options: BuildOptions, strongly_typed: bool, flags: list[str],
                                    fake_tensorrt: types.ModuleType) -> None:
    from unetrt.export.tensorrt import configure_precision

    config, network = FakeConfig(), FakeNetwork()
    set_flags = configure_precision(config, network, options, strongly_typed)  # type: ignore[arg-type]
    assert config.flags == flags == set_flags
    head = network.layers[1]
    # The logit head is pinned to FP32 whenever reduced-precision kernels are allowed (weak typing).
    assert (head.precision == "float32") is bool(flags)
    assert network.layers[0].precision is None


def test_int8_request_checks(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path, tmp_path: Path) -> None:
    from unetrt.export.quantize import quantize_onnx
    from unetrt.export.tensorrt import asymmetric_quantizers, check_int8_request, has_qdq

    cpu_layout = onnx.load(str(tiny_int8_onnx))
    assert has_qdq(cpu_layout) and not has_qdq(onnx.load(str(tiny_model_files["onnx"])))
    assert asymmetric_quantizers(cpu_layout), "the CPU layout has uint8 activations"
    with pytest.raises(ValueError, match="--int8-target tensorrt"):
        check_int8_request(BuildOptions(int8=True), True, "m.int8.onnx", asymmetric_quantizers(cpu_layout))
    with pytest.raises(ValueError, match="has no QuantizeLinear"):
        check_int8_request(BuildOptions(int8=True), False, "m.onnx")
    with pytest.raises(ValueError, match="build it with --int8"):
        check_int8_request(BuildOptions(fp16=True), True, "m.int8.onnx")
    with pytest.raises(ValueError, match="not both"):
        check_int8_request(BuildOptions(int8=True, fp16=True), True, "m.int8.onnx")
    batches = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    trt_layout = quantize_onnx(tiny_model_files["onnx"], tmp_path / "t.int8.onnx", batches, "minmax", "tensorrt")
    check_int8_request(BuildOptions(int8=True), True, trt_layout, asymmetric_quantizers(onnx.load(str(trt_layout))))
    # Without its zero point a QuantizeLinear is uint8 (ONNX's default), which ONNX Runtime computes and TensorRT
    # would read as INT8.
    unnamed = onnx.load(str(trt_layout))
    quantizers = [node for node in unnamed.graph.node if node.op_type == "QuantizeLinear"]
    del quantizers[0].input[2:]
    assert asymmetric_quantizers(unnamed) == [quantizers[0].name or quantizers[0].output[0]]


def test_bias_dequantize_folding_keeps_the_logits(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    from onnx import TensorProto

    from unetrt.export.quantize import quantize_onnx
    from unetrt.export.tensorrt import fold_int32_dequantize

    batches = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    path = quantize_onnx(tiny_model_files["onnx"], tmp_path / "t.int8.onnx", batches, "minmax", "tensorrt")
    model = onnx.load(str(path))
    int32 = {t.name for t in model.graph.initializer if t.data_type == TensorProto.INT32}
    biases = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int32]
    folded = fold_int32_dequantize(model)
    assert folded == len(biases) > 0
    assert not any(t.data_type == TensorProto.INT32 for t in model.graph.initializer)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "folded.onnx"))
    batch = np.random.default_rng(1).standard_normal((1, 3, 32, 48)).astype(np.float32)
    np.testing.assert_allclose(_ort_logits(tmp_path / "folded.onnx", batch), _ort_logits(path, batch), atol=1e-4)


def test_int8_plan_rebuild_command() -> None:
    profile = ShapeProfile((1, 3, 16, 16), (1, 3, 48, 64), (4, 3, 96, 128))
    metadata = PlanMetadata(
        tensorrt_version="10.3.0", gpu=GpuIdentity("Orin", (8, 7)), input_name="image", output_name="logits",
        input_dtype="float32", output_dtype="float32", profile=profile, precision="int8", strongly_typed=False,
        source="camvid.int8.onnx", info=tiny_info(), build_options={"builder_flags": ["INT8", "FP16"]},
    )
    args = build_parser().parse_args(shlex.split(metadata.rebuild_command("camvid.int8.plan"))[1:])
    assert args.int8 and not args.fp16
    assert PlanMetadata.from_dict(metadata.to_dict()) == metadata
