"""FP16 conversion of exported U-Nets: graph structure, ONNX Runtime agreement, and unet-export --fp16."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from unetrt.export.compact import compact_onnx
from unetrt.export.fp16 import (
    compare_fp16,
    convert_file,
    convert_to_fp16,
    expand_stored_weights,
    fp16_path_for,
    fp32_nodes,
    is_fp16_model,
)
from unetrt.export.onnx_export import main as export_main
from unetrt.model_file import file_precision, read_model_file

# Stated tolerances of the FP16 graph against FP32 on ONNX Runtime's CPU provider.
MAX_LOGIT_DIFF = 0.1
# FP16 keeps 11 significant bits; through the network's 23 convolutions the logits may drift by up to 1% of
# their largest magnitude (the bundled camvid's reach about 17).
MAX_RELATIVE_LOGIT_DIFF = 0.01
MIN_PIXEL_AGREEMENT = 0.995
CAMVID_FRAMES = 6


def _elem_types(values: Any) -> list[int]:
    return [v.type.tensor_type.elem_type for v in values]


def test_tiny_unet_converts_with_fp32_io_and_head(tiny_model_files: dict[str, Path]) -> None:
    model = onnx.load(str(tiny_model_files["onnx"]))
    converted = convert_to_fp16(model)
    onnx.checker.check_model(converted, full_check=True)
    assert _elem_types(converted.graph.input) == [TensorProto.FLOAT]
    assert _elem_types(converted.graph.output) == [TensorProto.FLOAT]
    dtypes = {init.name: init.data_type for init in converted.graph.initializer}
    assert dtypes["head.weight"] == dtypes["head.bias"] == TensorProto.FLOAT
    body = {name: t for name, t in dtypes.items() if not name.startswith("head.")}
    assert body and set(body.values()) == {TensorProto.FLOAT16}
    assert fp32_nodes(model) == ["/head/Conv"]
    assert is_fp16_model(converted) and not is_fp16_model(model)
    # the source graph is left untouched
    assert all(init.data_type == TensorProto.FLOAT for init in model.graph.initializer)


def test_a_graph_that_stores_its_weights_as_float16_computes_in_fp32_and_converts(
        tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """An FP32 graph whose weights are stored as float16 (the bundled models) is no FP16 graph: taken for one, a
    TensorRT build ran it strongly typed, in FP32, as an FP16 engine. Its conversion is that of its float32 twin."""
    import onnxruntime as ort

    compact = onnx.load(str(compact_onnx(tiny_model_files["onnx"], tmp_path / "compact.onnx")))
    assert any(init.data_type == TensorProto.FLOAT16 for init in compact.graph.initializer)
    assert not is_fp16_model(compact)
    plain = expand_stored_weights(compact)
    assert not any(node.op_type == "Cast" for node in plain.graph.node)
    assert {init.data_type for init in plain.graph.initializer} == {TensorProto.FLOAT}
    converted = convert_to_fp16(compact)
    assert is_fp16_model(converted)
    onnx.save(converted, str(tmp_path / "converted.onnx"))
    assert file_precision(tmp_path / "converted.onnx") == "fp16"  # the storage mark does not carry over
    image = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    logits = {name: ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"image": image})[0] for name, graph in (("compact", compact), ("plain", plain),
                                                      ("converted", converted),
                                                      ("twin", convert_to_fp16(plain)))}
    np.testing.assert_array_equal(logits["plain"], logits["compact"])
    np.testing.assert_array_equal(logits["converted"], logits["twin"])


def test_conversion_keeps_metadata_and_refuses_fp16_input(tiny_model_files: dict[str, Path],
                                                           tmp_path: Path) -> None:
    target = convert_file(tiny_model_files["onnx"], tmp_path / "tiny.fp16.onnx")
    assert read_model_file(target).info == read_model_file(tiny_model_files["onnx"]).info
    with pytest.raises(ValueError, match="FP16 weights already"):
        convert_to_fp16(onnx.load(str(target)))


def test_reductions_stay_fp32_inside_the_graph() -> None:
    # x -> Mul(w) -> ReduceMean -> Add(b) -> y: Mul goes FP16, the reduction and the output node stay FP32.
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 2, 1, 1], [0.5, 2.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [0.25])
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["scaled"], name="scale"),
        helper.make_node("ReduceMean", ["scaled"], ["mean"], name="mean", axes=[1], keepdims=1),
        helper.make_node("Add", ["mean", "b"], ["y"], name="shift"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fp32_nodes(model) == ["mean", "shift"]
    converted = convert_to_fp16(model)
    dtypes = {init.name: init.data_type for init in converted.graph.initializer}
    assert dtypes == {"w": TensorProto.FLOAT16, "b": TensorProto.FLOAT}
    producers = {out: node for node in converted.graph.node for out in node.output}
    mean = next(node for node in converted.graph.node if node.op_type == "ReduceMean")
    cast = producers[mean.input[0]]
    assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
    assert _elem_types(converted.graph.output) == [TensorProto.FLOAT]


def test_unnamed_kept_node_is_reported() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ValueError, match="has no name"):
        fp32_nodes(helper.make_model(graph))


def test_tiny_unet_fp16_agrees_with_fp32(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    fp16 = convert_file(tiny_model_files["onnx"], tmp_path / "tiny.fp16.onnx")
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    agreement = compare_fp16(tiny_model_files["onnx"], fp16, batch)
    assert agreement.pixels == 2 * 64 * 64
    assert agreement.max_abs_logit_diff < MAX_LOGIT_DIFF
    assert agreement.pixel_agreement >= MIN_PIXEL_AGREEMENT


def test_compare_detects_a_different_model(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    # A graph whose weights were perturbed must not pass as an FP16 copy: the check can fail.
    model = onnx.load(str(tiny_model_files["onnx"]))
    for init in model.graph.initializer:
        if init.name == "head.bias":
            values = onnx.numpy_helper.to_array(init) + np.array([3.0, 0.0, -3.0], dtype=np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    onnx.save(model, str(tmp_path / "other.onnx"))
    batch = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    agreement = compare_fp16(tiny_model_files["onnx"], tmp_path / "other.onnx", batch)
    assert agreement.max_abs_logit_diff > 2.9
    assert agreement.pixel_agreement < MIN_PIXEL_AGREEMENT


def test_unet_export_fp16_writes_both_models(tiny_model_files: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "tiny.onnx"
    assert export_main([str(tiny_model_files["pt"]), "-o", str(output), "--fp16"]) == 0
    fp16 = fp16_path_for(output)
    assert fp16 == tmp_path / "tiny.fp16.onnx" and fp16.is_file() and output.is_file()
    assert not is_fp16_model(onnx.load(str(output))) and is_fp16_model(onnx.load(str(fp16)))
    out = capsys.readouterr().out
    assert "tiny.fp16.onnx" in out and "% of pixels" in out


@pytest.mark.data
def test_bundled_camvid_fp16_agrees_on_val_frames(shared_data: Path) -> None:
    from unetrt.bundled import bundled_model_path
    from unetrt.datasets import list_images, read_image
    from unetrt.frame_path import network_input

    try:
        fp32 = bundled_model_path("camvid", ".onnx")
    except ValueError:
        pytest.skip("the bundled camvid model is not in engine/models yet")
    info = read_model_file(fp32).info
    assert info.working_size is not None
    frames = list_images(shared_data / "camvid" / "val")
    picked = frames[:: max(1, len(frames) // CAMVID_FRAMES)][:CAMVID_FRAMES]
    batch = np.concatenate([network_input([read_image(f)], info) for f in picked])
    # The shipped FP16 file: converted from the float32 export (a camvid.onnx that stores its weights as float16
    # is no conversion's input).
    agreement = compare_fp16(fp32, bundled_model_path("camvid", ".fp16.onnx"), batch)
    assert agreement.max_abs_logit_diff < MAX_RELATIVE_LOGIT_DIFF * agreement.max_abs_logit, agreement
    assert agreement.pixel_agreement >= MIN_PIXEL_AGREEMENT


def test_weights_are_clamped_into_the_stated_fp16_range_with_one_warning_for_the_large_ones() -> None:
    # x -> Mul(w) -> Add(b) -> y: Mul runs FP16, so w is stored as float16 within [1e-7, 1e4] in magnitude. 2e4 and
    # 3e4 are above the range (stored as 1e4), -5e4 below it (-1e4): 3 values changed, in one warning (the converter
    # gives 3 for this tensor); 1e-9 too small is raised to 1e-7 (an FP16 subnormal), a change of less than 1e-7 that
    # goes unsaid; 1e-5 is inside (about 1.0014e-5), 0 stays 0.
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 6, 1, 1], [2e4, 1e-5, 3e4, -5e4, 1e-9, 0.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [0.25])
    nodes = [helper.make_node("Mul", ["x", "w"], ["scaled"], name="scale"),
             helper.make_node("Add", ["scaled", "b"], ["y"], name="shift")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 4, 4])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.warns(UserWarning) as caught:
        converted = convert_to_fp16(model)
    assert [str(warning.message) for warning in caught] == [
        "FP16 conversion clamped 3 weight value(s) larger than 10000 in magnitude to 10000: the FP16 network computes "
        "with changed weights; compare its answers with FP32's, and keep FP32 where they differ"]
    stored = next(init for init in converted.graph.initializer if init.name == "w")
    assert stored.data_type == TensorProto.FLOAT16
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(stored).ravel(),
                                  np.array([1e4, 1e-5, 1e4, -1e4, 1e-7, 0.0], dtype=np.float16))


def test_a_binary_model_that_flips_its_answer_does_not_pass_as_its_fp16_copy(tmp_path: Path) -> None:
    # One logit channel: the class is logit > 0, so a graph whose logits are negated disagrees on every pixel whose
    # logit is not exactly 0 (an argmax over one channel would agree everywhere).
    import torch

    from tests.conftest import tiny_info
    from unetrt.export.checkpoint import build_model
    from unetrt.export.onnx_export import export_onnx

    torch.manual_seed(0)
    info = tiny_info(num_classes=1)
    model = build_model(info).eval()
    export_onnx(model, info, tmp_path / "binary.onnx")
    with torch.no_grad():
        model.head.weight.neg_()
        model.head.bias.neg_()
    export_onnx(model, info, tmp_path / "flipped.onnx")
    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    agreement = compare_fp16(tmp_path / "binary.onnx", tmp_path / "flipped.onnx", batch)
    assert agreement.pixels == 32 * 32
    assert agreement.pixel_agreement < 0.01
