"""unetrt.model_file: every container's description and precision, read without an inference session."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_info, write_described_onnx

from unetrt.backends import choose_model, open_backend
from unetrt.model_file import (
    QUANTIZATION_KEY,
    file_precision,
    int8_weight_peak,
    int8_weights_saturate_here,
    read_model_file,
    write_onnx_description,
)
from unetrt.model_info import METADATA_KEY
from unetrt.plan_metadata import GpuIdentity, PlanMetadata, ShapeProfile, write_plan_metadata

onnx = pytest.importorskip("onnx")


@pytest.fixture
def no_onnx_runtime_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any ONNX Runtime session opened from here on fails the test."""
    import onnxruntime as ort

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an ONNX Runtime session was opened to read the model's description")

    monkeypatch.setattr(ort, "InferenceSession", refuse)


def test_onnx_description_and_precision_match_the_onnx_library(tiny_model_files: dict[str, Path],
                                                              tiny_fp16_onnx: Path, tiny_int8_onnx: Path) -> None:
    for path, precision in ((tiny_model_files["onnx"], "fp32"), (tiny_fp16_onnx, "fp16"), (tiny_int8_onnx, "int8")):
        described = read_model_file(path)
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert described.info == tiny_info() and described.info.to_json() == props[METADATA_KEY]
        assert described.precision == precision
    quantization = read_model_file(tiny_int8_onnx).quantization
    assert quantization is not None and quantization["method"] == "minmax" and quantization["frames"] == 4
    assert read_model_file(tiny_model_files["onnx"]).quantization is None


def test_precision_comes_from_the_content_not_the_name(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                                       tmp_path: Path) -> None:
    # Before: the precision was read off the name (NAME.int8.onnx), so a renamed file reported the wrong one.
    quantized = shutil.copy(tiny_int8_onnx, tmp_path / "calibrated.onnx")
    float_named_int8 = shutil.copy(tiny_model_files["onnx"], tmp_path / "float.int8.onnx")
    assert file_precision(quantized) == "int8" and file_precision(float_named_int8) == "fp32"
    assert choose_model(quantized).precision == "int8"
    with open_backend(quantized, "onnxruntime") as backend:
        assert backend.precision == "int8"
    with open_backend(float_named_int8, "onnxruntime") as backend:
        assert backend.precision == "fp32"


def test_a_backend_refuses_a_precision_its_file_does_not_run_at(tiny_model_files: dict[str, Path]) -> None:
    from unetrt.backends.onnxruntime import OnnxRuntimeBackend

    with pytest.raises(ValueError, match="runs at fp32 on backend 'onnxruntime', not 'int8'"):
        OnnxRuntimeBackend(tiny_model_files["onnx"], precision="int8")


def test_onnx_is_read_without_a_session(tiny_model_files: dict[str, Path], no_onnx_runtime_session: None) -> None:
    assert read_model_file(tiny_model_files["onnx"]).info == tiny_info()
    assert choose_model(tiny_model_files["onnx"], "openvino").precision == "fp32"


def test_openvino_ir_is_written_without_an_onnx_runtime_session(tiny_int8_onnx: Path, tmp_path: Path,
                                                                no_onnx_runtime_session: None) -> None:
    # Before: write_ir (and OpenVinoBackend on an .onnx file) opened an ONNX Runtime session for the description.
    pytest.importorskip("openvino")
    from unetrt.backends.openvino import OpenVinoBackend, write_ir

    xml = write_ir(tiny_int8_onnx, tmp_path / "tiny.int8.xml")
    described = read_model_file(xml)
    assert described.info == tiny_info() and described.precision == "int8"
    assert described.quantization == read_model_file(tiny_int8_onnx).quantization
    with OpenVinoBackend(tiny_int8_onnx) as backend:
        assert backend.info == tiny_info() and backend.precision == "int8"


def _write_int8_plan(plan: Path) -> Path:
    """Engine bytes (never parsed here) and the PLAN.json of an INT8 build beside them."""
    plan.write_bytes(b"engine bytes")
    write_plan_metadata(plan, PlanMetadata(
        tensorrt_version="10.3.0", gpu=GpuIdentity("Orin", (8, 7)), input_name="image", output_name="logits",
        input_dtype="float16", output_dtype="float32",
        profile=ShapeProfile((1, 3, 8, 8), (1, 3, 32, 32), (2, 3, 64, 64)),
        precision="int8", strongly_typed=False, source="tiny.int8.onnx", info=tiny_info()))
    return plan


def test_plan_and_checkpoint(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    plan = _write_int8_plan(tmp_path / "tiny.plan")
    assert read_model_file(plan).info == tiny_info() and file_precision(plan) == "int8"
    pytest.importorskip("torch")
    assert read_model_file(tiny_model_files["pt"]).info == tiny_info()
    assert file_precision(tiny_model_files["pt"]) == "fp32"


def test_an_engine_file_is_a_plan_described_by_the_metadata_beside_it(tmp_path: Path) -> None:
    # trtexec and TensorRT's samples name their output NAME.engine: it is read like a .plan, not as a checkpoint.
    engine = _write_int8_plan(tmp_path / "tiny.engine")
    described = read_model_file(engine)
    assert (described.info, described.precision, described.quantization) == (tiny_info(), "int8", None)


def _truncated(tiny: Path, tmp_path: Path) -> Path:
    data = tiny.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _random(tiny: Path, tmp_path: Path) -> Path:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def _empty(tiny: Path, tmp_path: Path) -> Path:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    return path


def _graphless(tiny: Path, tmp_path: Path) -> Path:
    path = tmp_path / "graphless.onnx"
    path.write_bytes(onnx.ModelProto(ir_version=8, producer_name="someone").SerializeToString())
    return path


@pytest.mark.parametrize(("make", "words"), [(_truncated, "truncated, damaged or not ONNX"),
                                             (_random, "truncated, damaged or not ONNX"),
                                             (_empty, "No graph was found"), (_graphless, "No graph was found")])
def test_damaged_onnx_is_one_line_naming_the_file(make: object, words: str, tiny_model_files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    path = make(tiny_model_files["onnx"], tmp_path)  # type: ignore[operator]
    with pytest.raises(ValueError) as caught:
        read_model_file(path)
    message = str(caught.value)
    assert "\n" not in message and repr(str(path)) in message and words in message


def test_onnx_without_description_says_how_to_get_one(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(str(tiny_model_files["onnx"]))
    del model.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="has no 'unetrt' metadata; export it with unet-export") as caught:
        read_model_file(path)
    assert repr(str(path)) in str(caught.value)  # which of a folder of models lacks it
    # A network made outside unetrt cannot go through unet-export: the line names how to describe it instead.
    assert "write_onnx_description" in str(caught.value)


@pytest.mark.parametrize("op", ["Sigmoid", "Softmax"])
def test_a_graph_that_ends_in_probabilities_is_refused_naming_the_op(op: str, tmp_path: Path) -> None:
    # Every backend thresholds a binary model's output at 0 and applies the softmax itself: a graph that already
    # returns probabilities gives a binary model's mask foreground everywhere (sigmoid > 0), without a word.
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["image"], ["logits"], **({"axis": 1} if op == "Softmax" else {}))
    path = write_described_onnx(tmp_path / f"{op.lower()}.onnx", [node], {"logits": TensorProto.FLOAT})
    with pytest.raises(ValueError, match=f"ends in {op}: it returns probabilities") as caught:
        read_model_file(path)
    assert "\n" not in str(caught.value) and f"without its final {op}" in str(caught.value)


def test_a_graph_that_ends_in_logits_is_read(tmp_path: Path) -> None:
    # The check looks at the node that makes the output, not at any Sigmoid inside the graph.
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Sigmoid", ["image"], ["gate"]), helper.make_node("Mul", ["image", "gate"], ["logits"])]
    path = write_described_onnx(tmp_path / "gated.onnx", nodes, {"logits": TensorProto.FLOAT})
    assert read_model_file(path).info == tiny_info()


def test_other_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_model_file(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="is no model file"):
        read_model_file(tmp_path / "notes.txt")
    broken = tmp_path / "broken.xml"
    broken.write_text("<net><layers>")
    with pytest.raises(ValueError, match="not a valid OpenVINO IR"):
        read_model_file(broken)


def _ir(folder: Path, layer_type: str, framework: str = "", root: str = "net") -> Path:
    """A two-layer OpenVINO IR .xml carrying tiny_info(), and ``framework`` inside its rt_info's <framework>."""
    path = folder / f"{layer_type.lower()}.xml"
    path.write_text(f'<?xml version="1.0"?>\n<{root} name="unet" version="11"><layers>'
                    f'<layer id="0" name="a" type="Parameter" version="opset1"/>'
                    f'<layer id="1" name="b" type="{layer_type}" version="opset1"/></layers>'
                    f"<rt_info><unetrt value='{tiny_info().to_json()}'/><framework>{framework}</framework></rt_info>"
                    f"</{root}>")
    return path


def test_an_openvino_ir_with_fakequantize_layers_is_int8_without_a_quantization_record(tmp_path: Path) -> None:
    # An IR quantized by OpenVINO's own tools (NNCF) carries FakeQuantize layers but no unetrt.quantization record.
    quantized, floating = read_model_file(_ir(tmp_path, "FakeQuantize")), read_model_file(_ir(tmp_path, "Convolution"))
    assert quantized.info == tiny_info() and (quantized.precision, quantized.quantization) == ("int8", None)
    assert floating.precision == "fp32"


def test_writing_replaces_our_entries_and_keeps_the_others(tiny_model_files: dict[str, Path]) -> None:
    model = onnx.load(str(tiny_model_files["onnx"]))
    entry = model.metadata_props.add()
    entry.key, entry.value = "someone.else", "kept"
    write_onnx_description(model, tiny_info(num_classes=2), {"method": "minmax"})
    write_onnx_description(model, tiny_info(num_classes=4))
    props = [(p.key, p.value) for p in model.metadata_props]
    assert [key for key, _ in props].count(METADATA_KEY) == 1 and ("someone.else", "kept") in props
    assert dict(props)[METADATA_KEY] == tiny_info(num_classes=4).to_json()
    assert dict(props)[QUANTIZATION_KEY] == '{"method": "minmax"}'


def test_quantize_no_longer_imports_onnx_export() -> None:
    # Before: export/quantize.py imported export/onnx_export.py, which imports quantize back (an import circle).
    code = "import sys, unetrt.export.quantize; print('unetrt.export.onnx_export' in sys.modules)"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "False"


def test_an_openvino_ir_with_a_quantization_record_is_int8_whatever_its_layers(tmp_path: Path) -> None:
    # OpenVINO keeps the ONNX file's props under <framework>: the record alone says the model is INT8.
    record = f"<{QUANTIZATION_KEY} value='{json.dumps({'method': 'minmax'})}'/>"
    described = read_model_file(_ir(tmp_path, "Convolution", record))
    assert (described.precision, described.quantization) == ("int8", {"method": "minmax"})


def test_xml_that_is_no_openvino_ir_is_refused_though_it_carries_a_description(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no 'unetrt' rt_info"):
        read_model_file(_ir(tmp_path, "Convolution", root="graph"))


@pytest.mark.parametrize("record", ["[1, 2]", '"minmax"', "{not json"])
def test_a_quantization_record_that_is_no_json_object_is_one_line_naming_the_file(
        record: str, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(str(tiny_model_files["onnx"]))
    entry = model.metadata_props.add()
    entry.key, entry.value = QUANTIZATION_KEY, record
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    words = r"'unetrt\.quantization' record (must be a JSON object|is not valid JSON)"
    with pytest.raises(ValueError, match=words) as caught:
        read_model_file(path)
    assert "\n" not in str(caught.value) and repr(str(path)) in str(caught.value)


def test_the_int8_weight_peak_is_read_from_the_weights_of_each_layout(tmp_path: Path) -> None:
    """An INT8 file without unetrt's quantization record (quantized elsewhere) is judged by its weights where INT8
    products saturate: 7-bit ones (unet-export's CPU layout) peak at 64, 8-bit ones (TensorRT's layout) at 127,
    whether stored as raw bytes or one per int32; weights that cannot be read count as 8-bit."""
    from onnx import TensorProto, helper

    from unetrt.bundled import MODELS_DIR

    assert int8_weight_peak(MODELS_DIR / "camvid.int8.onnx") == 64
    assert int8_weight_peak(MODELS_DIR / "camvid.int8.tensorrt.onnx") == 127
    assert int8_weight_peak(MODELS_DIR / "camvid.onnx") == 0

    def dequantized(name: str, weights: onnx.TensorProto) -> Path:
        scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
        nodes = [helper.make_node("DequantizeLinear", ["w", "scale"], ["wf"]),
                 helper.make_node("Conv", ["image", "wf"], ["logits"])]
        path = write_described_onnx(tmp_path / name, nodes, {"logits": TensorProto.FLOAT})
        proto = onnx.load(str(path))
        proto.graph.initializer.extend([weights, scale])
        onnx.save(proto, str(path))
        return path

    as_int32 = helper.make_tensor("w", TensorProto.INT8, [2, 3, 1, 1], [-100, 5, 0, 1, 2, 3])
    assert not as_int32.raw_data and int8_weight_peak(dequantized("int32.onnx", as_int32)) == 100
    raw = helper.make_tensor("w", TensorProto.INT8, [2, 3, 1, 1], np.array([1, -64, 3, 4, 5, 6], np.int8).tobytes(),
                             raw=True)
    seven_bit = dequantized("raw.onnx", raw)
    assert int8_weight_peak(seven_bit) == 64
    outside = TensorProto(name="w", data_type=TensorProto.INT8, dims=[2, 3, 1, 1])
    outside.data_location = TensorProto.EXTERNAL
    outside.external_data.add(key="location", value="w.bin")
    (tmp_path / "w.bin").write_bytes(bytes(6))
    assert int8_weight_peak(dequantized("outside.onnx", outside)) is None
    assert int8_weight_peak(_ir(tmp_path, "FakeQuantize")) is None  # float weights under FakeQuantize layers
    assert int8_weight_peak(_ir(tmp_path, "Convolution")) == 0


def test_an_int8_file_without_a_record_saturates_by_its_weights(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import write_int8_of_elsewhere

    from unetrt.bundled import MODELS_DIR

    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: True)
    eight = read_model_file(write_int8_of_elsewhere(tiny_model_files["onnx"], tmp_path / "e.int8.onnx", "tensorrt"))
    seven = read_model_file(write_int8_of_elsewhere(tiny_model_files["onnx"], tmp_path / "s.int8.onnx", "cpu"))
    assert eight.quantization is None and seven.quantization is None
    assert int8_weights_saturate_here(eight) and not int8_weights_saturate_here(seven)
    assert not int8_weights_saturate_here(read_model_file(MODELS_DIR / "camvid.onnx"))
    assert int8_weights_saturate_here(read_model_file(_ir(tmp_path, "FakeQuantize")))  # not readable: 8-bit
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: False)
    assert not int8_weights_saturate_here(eight)


def test_int8_weights_held_in_constant_nodes_are_read_as_the_initializers_are(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Exporters that fold weights into Constant nodes (PyTorch without constant folding, tf2onnx) keep no INT8
    initializer: the peak read 0 there, so a file of 8-bit weights quantized elsewhere passed for 7-bit ones and ran
    fused and saturating on a CPU without VNNI."""
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.INT8, [2, 3, 1, 1],
                                 np.array([1, -127, 3, 4, 5, 6], np.int8).tobytes(), raw=True)
    nodes = [helper.make_node("Constant", [], ["w"], value=weights),
             helper.make_node("Constant", [], ["scale"], value=helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])),
             helper.make_node("DequantizeLinear", ["w", "scale"], ["wf"]),
             helper.make_node("Conv", ["image", "wf"], ["logits"])]
    path = write_described_onnx(tmp_path / "constant.int8.onnx", nodes, {"logits": TensorProto.FLOAT})
    assert int8_weight_peak(path) == 127
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: True)
    assert int8_weights_saturate_here(read_model_file(path))
