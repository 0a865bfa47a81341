"""unetrt.export.compact: FP32 model files with float16-stored weights compute what they computed before."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from unetrt.export.compact import MIN_ELEMENTS, compact_onnx  # noqa: E402
from unetrt.model_file import file_precision, read_model_file  # noqa: E402


def _rounded_copy(source: Path, destination: Path) -> Path:
    """The FP32 graph with every float32 weight that compact_onnx stores as float16 rounded to a float16 value,
    stored as float32."""
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(source))
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT and int(np.prod(tensor.dims)) >= MIN_ELEMENTS:
            rounded = numpy_helper.to_array(tensor).astype(np.float16).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(rounded, tensor.name))
    onnx.save(model, str(destination))
    return destination


def _run_onnxruntime(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: batch})[0])


def test_compact_onnx_halves_the_file_and_computes_the_rounded_weights_exactly(
        tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    source = tiny_model_files["onnx"]
    compact = compact_onnx(source, tmp_path / "tiny.onnx")
    assert file_precision(compact) == "fp32"
    assert read_model_file(compact).info == read_model_file(source).info
    weight_bytes = sum(4 * int(np.prod(t.dims)) for t in onnx.load(str(source)).graph.initializer if t.data_type == 1)
    assert compact.stat().st_size < source.stat().st_size - 0.45 * weight_bytes  # half of each weight's 4 bytes
    batch = np.random.default_rng(0).standard_normal((2, 3, 32, 48)).astype(np.float32)
    want = _run_onnxruntime(_rounded_copy(source, tmp_path / "rounded.onnx"), batch)
    np.testing.assert_array_equal(_run_onnxruntime(compact, batch), want)
    # the rounding itself moves the logits very little
    np.testing.assert_allclose(want, _run_onnxruntime(source, batch), atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs OpenVINO")
def test_openvino_reads_the_compact_graph_as_fp32(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    from unetrt.backends.openvino import OpenVinoBackend

    compact = compact_onnx(tiny_model_files["onnx"], tmp_path / "tiny.onnx")
    batch = np.random.default_rng(1).standard_normal((1, 3, 32, 48)).astype(np.float32)
    with OpenVinoBackend(compact, precision="fp32") as backend:
        assert backend.precision == "fp32"
        have = backend.infer(batch)
    np.testing.assert_allclose(have, _run_onnxruntime(compact, batch), atol=1e-4)


def test_quantizing_the_compact_graph_quantizes_its_weights(tiny_model_files: dict[str, Path],
                                                            tmp_path: Path) -> None:
    from unetrt.export.quantize import quantize_onnx

    compact = compact_onnx(tiny_model_files["onnx"], tmp_path / "tiny.onnx")
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 32, 48)).astype(np.float32) for _ in range(2)]
    quantized = quantize_onnx(compact, tmp_path / "tiny.int8.onnx", batches, "minmax")
    assert file_precision(quantized) == "int8"
    convs = [node for node in onnx.load(str(quantized)).graph.node if node.op_type in ("Conv", "ConvTranspose")]
    producers = {out: node.op_type for node in onnx.load(str(quantized)).graph.node for out in node.output}
    assert convs and all(producers.get(conv.input[1]) == "DequantizeLinear" for conv in convs[:-1])


def test_only_fp32_graphs_are_compacted(tiny_int8_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is int8"):
        compact_onnx(tiny_int8_onnx, tmp_path / "x.onnx")


def test_a_compact_graph_of_a_batch_norm_network_computes_what_its_compact_checkpoint_does(tmp_path: Path) -> None:
    import dataclasses

    import torch

    from tests.conftest import tiny_info
    from unetrt.export.checkpoint import build_model, load_model, save_checkpoint
    from unetrt.export.compact import compact_checkpoint
    from unetrt.export.onnx_export import export_onnx

    torch.manual_seed(1)
    info = dataclasses.replace(tiny_info(), extra={"dropout": [0.0] * 3, "batch_norm": True})
    model = build_model(info)
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            # Trained statistics, not the identity a fresh layer starts as.
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.05, 3.0)
            layer.weight.data.uniform_(0.5, 2.0)
    save_checkpoint(tmp_path / "full.pt", model.eval(), info)
    compact, _ = load_model(compact_checkpoint(tmp_path / "full.pt", tmp_path / "half.pt"))
    batch = np.random.default_rng(2).standard_normal((2, 3, 32, 48)).astype(np.float32)
    with torch.inference_mode():
        want = compact.eval()(torch.from_numpy(batch)).numpy()
    differences = {}
    for fold in (False, True):
        path = compact_onnx(export_onnx(compact, info, tmp_path / f"fold_{fold}.onnx", fold_batch_norm=fold),
                            tmp_path / f"fold_{fold}.compact.onnx")
        kinds = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert ("BatchNormalization" in kinds) is not fold
        differences[fold] = float(np.abs(_run_onnxruntime(path, batch) - want).max())
    # Unfolded, the float16 values are the checkpoint's own: float32 rounding alone. Folded, each folded weight is
    # rounded to float16 a second time.
    assert differences[False] < 1e-4 * max(1.0, float(np.abs(want).max()))
    assert differences[True] > 10 * differences[False]


def test_an_fp16_graph_is_not_compacted(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    # Its weights are float16 already; stored "as float16" it would be marked as an FP32 graph.
    from unetrt.export.fp16 import convert_file

    fp16 = convert_file(tiny_model_files["onnx"], tmp_path / "tiny.fp16.onnx")
    with pytest.raises(ValueError, match="is fp16"):
        compact_onnx(fp16, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_weights_of_16_elements_and_more_are_stored_as_float16(tiny_model_files: dict[str, Path],
                                                               tmp_path: Path) -> None:
    # The tiny model's untrained biases are zeros, which float16 holds exactly, so the outputs cannot tell whether
    # they were stored as float16: the file can. 16 elements (the bottom level's bias) is the smallest stored so.
    from onnx import TensorProto

    compact = onnx.load(str(compact_onnx(tiny_model_files["onnx"], tmp_path / "tiny.onnx")))
    types = {tensor.name: (tensor.data_type, int(np.prod(tensor.dims))) for tensor in compact.graph.initializer}
    assert types["encoder.2.0.bias.float16"] == (TensorProto.FLOAT16, MIN_ELEMENTS) == (TensorProto.FLOAT16, 16)
    assert types["encoder.1.0.bias"] == (TensorProto.FLOAT, 8)
    assert types["head.bias"] == (TensorProto.FLOAT, 3)
