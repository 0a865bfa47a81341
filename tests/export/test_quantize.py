"""INT8 export: QDQ layout, metadata, calibration through the runtime's data path, and the accuracy gate."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import tiny_info
from onnx import numpy_helper

from unetrt.export import quantize
from unetrt.export.onnx_export import main as export_main
from unetrt.export.quantize import (
    AccuracyCheck,
    calibration_batches,
    int8_path,
    pick_evenly,
    quantize_onnx,
)
from unetrt.model_file import QUANTIZATION_KEY, read_model_file
from unetrt.model_info import METADATA_KEY, ModelInfo


def test_int8_path_and_even_picks() -> None:
    assert int8_path(Path("a/b/camvid.onnx")) == Path("a/b/camvid.int8.onnx")
    items = [Path(str(i)) for i in range(10)]
    assert [p.name for p in pick_evenly(items, 4)] == ["0", "2", "5", "7"]
    assert pick_evenly(items, 50) == items
    with pytest.raises(ValueError, match="positive"):
        pick_evenly(items, 0)


def _load_with_initializers(path: Path) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    model = onnx.load(str(path))
    return model, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _check_layout(path: Path, fp32: Path, activation_dtype: type, symmetric_activations: bool) -> None:
    model, initializers = _load_with_initializers(path)
    producers = {out: node for node in model.graph.node for out in node.output}
    outputs = {value.name for value in model.graph.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(1 for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    for conv in convs:
        if outputs & set(conv.output):
            # The logit head stays FP32: no DequantizeLinear in front of its weights, no QuantizeLinear behind it.
            assert producers.get(conv.input[1]) is None or producers[conv.input[1]].op_type != "DequantizeLinear"
            continue
        weight_dq = producers[conv.input[1]]
        assert weight_dq.op_type == "DequantizeLinear"
        weights, scales = initializers[weight_dq.input[0]], initializers[weight_dq.input[1]]
        assert weights.dtype == np.int8
        assert scales.shape == (weights.shape[0],), "one scale per output channel"
        assert not initializers[weight_dq.input[2]].any(), "symmetric weights: zero points are 0"
        activation_dq = producers[conv.input[0]]
        assert activation_dq.op_type == "DequantizeLinear"
        zero = initializers[activation_dq.input[2]]
        assert zero.dtype == activation_dtype
        if symmetric_activations:
            assert not zero.any()
    props = {p.key: p.value for p in model.metadata_props}
    assert ModelInfo.from_json(props[METADATA_KEY]) == tiny_info()


def test_cpu_layout_uint8_activations_per_channel_int8_weights(tiny_model_files: dict[str, Path],
                                                               tiny_int8_onnx: Path) -> None:
    _check_layout(tiny_int8_onnx, tiny_model_files["onnx"], np.uint8, symmetric_activations=False)
    record = read_model_file(tiny_int8_onnx).quantization
    assert record is not None and record["method"] == "minmax" and record["frames"] == 4
    assert record["target"] == "cpu"


def test_tensorrt_layout_symmetric_int8_activations(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    from unetrt.export.tensorrt import asymmetric_quantizers

    batches = [np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    path = quantize_onnx(tiny_model_files["onnx"], tmp_path / "tiny.trt.int8.onnx", batches, "minmax", "tensorrt")
    _check_layout(path, tiny_model_files["onnx"], np.int8, symmetric_activations=True)
    assert asymmetric_quantizers(onnx.load(str(path))) == []


def test_float_model_has_no_quantization_record(tiny_model_files: dict[str, Path]) -> None:
    assert read_model_file(tiny_model_files["onnx"]).quantization is None


def test_int8_logits_follow_fp32(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path) -> None:
    import onnxruntime as ort

    batch = np.random.default_rng(5).standard_normal((1, 3, 32, 48)).astype(np.float32)
    fp32, int8 = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": batch})[0]
                  for p in (tiny_model_files["onnx"], tiny_int8_onnx))
    spread = np.abs(fp32).max()
    assert np.abs(fp32 - int8).max() < 0.2 * spread
    assert (fp32.argmax(1) == int8.argmax(1)).mean() > 0.8


def _frames(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(1)
    paths = []
    for index, (width, height) in enumerate(sizes):
        path = folder / f"{index:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_calibration_batches_are_what_the_segmenter_feeds(tiny_model_files: dict[str, Path],
                                                          tmp_path: Path) -> None:
    from unetrt.datasets import read_image
    from unetrt.frame_path import network_input

    frames = _frames(tmp_path / "frames", [(40, 30), (64, 48)])
    batches = calibration_batches(tiny_model_files["onnx"], frames)
    assert len(batches) == 2
    for path, batch in zip(frames, batches):
        np.testing.assert_array_equal(batch, network_input([read_image(path, 3)], tiny_info()))


def test_unknown_method_and_empty_calibration(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    batch = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match="calibration method"):
        quantize_onnx(tiny_model_files["onnx"], tmp_path / "x.onnx", [batch], "kl")
    with pytest.raises(ValueError, match="no calibration batch"):
        quantize_onnx(tiny_model_files["onnx"], tmp_path / "x.onnx", [], "minmax")


@pytest.mark.parametrize("metric, fp32, int8, passed", [
    ("mean_iou", 0.5642, 0.5550, True), ("mean_iou", 0.5642, 0.5500, False),
    ("challenge_pixel_error", 0.0507, 0.0550, True), ("challenge_pixel_error", 0.0507, 0.0600, False),
    # Just either side of the limits: 0.9 and 1.1 points of mean IoU, 0.0045 and 0.0055 of pixel error.
    ("mean_iou", 0.5642, 0.5552, True), ("mean_iou", 0.5642, 0.5532, False),
    ("challenge_pixel_error", 0.0507, 0.0552, True), ("challenge_pixel_error", 0.0507, 0.0562, False),
])
def test_accuracy_gate(metric: str, fp32: float, int8: float, passed: bool) -> None:
    limit = quantize.MAX_MEAN_IOU_LOSS if metric == "mean_iou" else quantize.MAX_PIXEL_ERROR_GAIN
    check = AccuracyCheck(metric, fp32, int8, limit, "openvino", {}, {})
    assert check.passed is passed
    text = check.describe()
    assert ("FP32" in text and "INT8 on openvino" in text) and (("within" in text) is passed)


@pytest.mark.parametrize("argv, message", [
    (["--int8"], "--precision int8 needs --calibration DIR"),
    (["--calibration", "x"], "--calibration only apply with --precision int8"),
    (["--int8", "--calibration", "x", "--check-labels", "y", "--calibration-method", "kl"],
     "--calibration-method must be one of"),
    (["--int8", "--calibration", "x", "--check-labels", "y", "--int8-target", "gpu"], "--int8-target must be one of"),
    (["--int8", "--calibration", "no-such-folder", "--check-labels", "y"], "no-such-folder"),
    (["--int8", "--calibration", "FRAMES", "--check-labels", "no-such-labels"],
     "--check-labels folder 'no-such-labels' does not exist"),
    (["--check-labels", "y"], "--check-labels only apply with --precision int8"),
    (["--calibration-method", "minmax", "--check-stems", "07"],
     "--calibration-method, --check-stems only apply with --precision int8"),
    (["--calibration-count", "8", "--int8-target", "tensorrt"],
     "--calibration-count, --int8-target only apply with --precision int8"),
    (["--int8", "--calibration", "x", "--check-labels", "y", "--calibration-count", "0"],
     "--calibration-count must be positive, got 0"),
    (["--int8", "--calibration", "FRAMES", "--check-labels", "FRAMES", "--check-stems", "07"],
     "--check-stems names files that are not in"),
])
def test_int8_arguments_are_checked_in_one_line(argv: list[str], message: str, tiny_model_files: dict[str, Path],
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _frames(tmp_path / "frames", [(48, 32)])
    argv = [str(tmp_path / "frames") if arg == "FRAMES" else arg for arg in argv]
    code = export_main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "m.onnx"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()  # nothing written before the refusal


def _labelled_folder(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    _frames(images, [(48, 32)] * 3)
    labels = tmp_path / "labels"
    labels.mkdir()
    rng = np.random.default_rng(2)
    for index in range(3):
        cv2.imwrite(str(labels / f"{index:02d}.png"), rng.integers(0, 3, (32, 48), dtype=np.uint8))
    return images, labels


@pytest.mark.parametrize("passes", [True, False], ids=["kept", "refused"])
def test_unet_export_int8_writes_or_refuses(passes: bool, tiny_model_files: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = _labelled_folder(tmp_path)
    real_check = quantize.check_accuracy

    def check(*args: object, **kwargs: object) -> list[AccuracyCheck]:
        # An untrained network's figures are noise: move INT8 to either side of the limit.
        return [AccuracyCheck(m.metric, m.fp32, m.fp32 - (0.001 if passes else 0.05), m.limit, m.engine,
                              m.fp32_figures, m.int8_figures) for m in real_check(*args, **kwargs)]  # type: ignore[arg-type]

    monkeypatch.setattr(quantize, "check_accuracy", check)
    output = tmp_path / "out" / "m.onnx"
    output.parent.mkdir()
    output.write_bytes(b"an earlier model")
    code = export_main([str(tiny_model_files["pt"]), "-o", str(output), "--int8", "--calibration", str(images),
                        "--calibration-count", "2", "--check-labels", str(labels)])
    captured = capsys.readouterr()
    if passes:
        assert code == 0 and int8_path(output).is_file() and output.read_bytes() != b"an earlier model"
        assert "mean IoU FP32" in captured.out and "INT8 on onnxruntime" in captured.out
        record = read_model_file(int8_path(output)).quantization
        assert record is not None and record["frames"] == 2 and record["method"] == "percentile"
    else:
        # The command failed: the earlier FP32 model stays, and neither new model is left behind.
        assert code == 2 and [path.name for path in output.parent.iterdir()] == ["m.onnx"]
        assert output.read_bytes() == b"an earlier model"
        assert "loses too much accuracy" in captured.err and "mean IoU FP32" in captured.err
        assert "nothing written" in captured.err and captured.err.count("\n") == 1


def test_unet_export_int8_passes_its_options_on(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The frames scored are --check-images, not the calibration frames; the record states the target and method.
    images, labels = _labelled_folder(tmp_path)
    calibration = tmp_path / "calibration"
    _frames(calibration, [(48, 32)] * 2)
    real_check = quantize.check_accuracy
    scored: list[object] = []

    def check(*args: object, **kwargs: object) -> list[AccuracyCheck]:
        scored.append(args[2])
        return [AccuracyCheck(m.metric, m.fp32, m.fp32, m.limit, m.engine, m.fp32_figures, m.int8_figures)
                for m in real_check(*args, **kwargs)]  # type: ignore[arg-type]

    monkeypatch.setattr(quantize, "check_accuracy", check)
    output = tmp_path / "m.onnx"
    assert export_main([str(tiny_model_files["pt"]), "-o", str(output), "--precision", "int8", "--calibration",
                        str(calibration), "--check-images", str(images), "--check-labels", str(labels),
                        "--calibration-method", "minmax", "--int8-target", "tensorrt"]) == 0
    assert scored == [str(images)]
    record = read_model_file(int8_path(output)).quantization
    assert record is not None and (record["target"], record["method"], record["frames"]) == ("tensorrt", "minmax", 2)


@pytest.mark.parametrize("saturates", [True, False], ids=["without-vnni", "with-vnni"])
def test_a_tensorrt_layout_export_is_checked_on_the_engines_that_run_it(tiny_model_files: dict[str, Path],
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        saturates: bool) -> None:
    """On a CPU without VNNI OpenVINO refuses a file of 8-bit weights (TensorRT's layout), whose products it
    saturates: the export's accuracy check stopped on that refusal (before it, on OpenVINO's saturated figure). It
    checks the file on ONNX Runtime there, and on both engines where OpenVINO runs it."""
    pytest.importorskip("openvino")
    images, labels = _labelled_folder(tmp_path)
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: saturates)
    checked: list[list[str]] = []
    real_check = quantize.check_accuracy

    def check(*args: object, **kwargs: object) -> list[AccuracyCheck]:
        found = real_check(*args, **kwargs)  # type: ignore[arg-type]
        checked.append([one.engine for one in found])
        return [AccuracyCheck(m.metric, m.fp32, m.fp32, m.limit, m.engine, m.fp32_figures, m.int8_figures)
                for m in found]

    monkeypatch.setattr(quantize, "check_accuracy", check)
    output = tmp_path / "m.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert export_main([str(tiny_model_files["pt"]), "-o", str(output), "--precision", "int8", "--calibration",
                            str(images), "--check-labels", str(labels), "--int8-target", "tensorrt"]) == 0
    assert checked == [["onnxruntime"] if saturates else ["onnxruntime", "openvino"]]
    # Without VNNI the check's ONNX Runtime ran the file unfused and said so: "m.int8.onnx has 8-bit INT8 weights
    # ... at about FP32's speed (a file exported by unet-export --int8 for the CPU has 7-bit weights ...)", a warning
    # line of the export asked for TensorRT's layout, about the speed of its own check.
    assert [str(warning.message) for warning in caught] == []


def test_quantization_record_is_json(tiny_int8_onnx: Path) -> None:
    props = {p.key: p.value for p in onnx.load(str(tiny_int8_onnx)).metadata_props}
    assert json.loads(props[QUANTIZATION_KEY])["format"] == "QDQ"


def test_calibration_frames_can_be_restricted_to_stems(tmp_path: Path) -> None:
    from unetrt.export.quantize import calibration_frames

    _frames(tmp_path / "slices", [(16, 16)] * 10)
    picked = calibration_frames(tmp_path / "slices", 3, [f"{i:02d}" for i in range(6)])
    assert [p.stem for p in picked] == ["00", "02", "04"]
    with pytest.raises(ValueError, match="calibration stems not in"):
        calibration_frames(tmp_path / "slices", 3, ["42"])


def test_accuracy_gate_allows_a_loss_of_exactly_the_limit() -> None:
    # "At most limit worse": 0.5 - 0.25 is exactly 0.25 in binary floating point.
    assert AccuracyCheck("mean_iou", 0.5, 0.25, 0.25, "onnxruntime", {}, {}).passed
    assert AccuracyCheck("challenge_pixel_error", 0.25, 0.5, 0.25, "onnxruntime", {}, {}).passed


def _head_name(fp32: Path) -> str:
    graph = onnx.load(str(fp32)).graph
    outputs = {value.name for value in graph.output}
    (head,) = [node.name for node in graph.node if outputs & set(node.output)]
    return head


def test_the_logit_head_itself_stays_fp32(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path) -> None:
    # Found by name, not by its output: a quantized head would write to a QuantizeLinear in front of the output.
    head = _head_name(tiny_model_files["onnx"])
    model = onnx.load(str(tiny_int8_onnx))
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {t.name for t in model.graph.initializer}
    (node,) = [n for n in model.graph.node if n.name == head]
    assert node.op_type == "Conv" and node.input[1] in initializers and node.input[1] not in producers
    assert producers[model.graph.output[0].name] is node  # no QuantizeLinear/DequantizeLinear behind the logits
    record = read_model_file(tiny_int8_onnx).quantization
    assert record is not None and record["fp32_nodes"] == [head]


def _weight_codes(path: Path) -> list[np.ndarray]:
    model, initializers = _load_with_initializers(path)
    return [initializers[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and initializers.get(n.input[0]) is not None
            and initializers[n.input[0]].dtype == np.int8 and initializers[n.input[0]].ndim == 4]


def test_cpu_weights_use_7_bits_and_tensorrt_weights_8(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                                      tmp_path: Path) -> None:
    # reduce_range: symmetric int8 weights in [-64, 64] for the CPU file (vpmaddubsw saturation), [-127, 127] for
    # TensorRT; each output channel's largest weight takes the end of the range.
    cpu = _weight_codes(tiny_int8_onnx)
    assert cpu and max(int(np.abs(w.astype(np.int32)).max()) for w in cpu) == 64
    batches = [np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    trt = quantize_onnx(tiny_model_files["onnx"], tmp_path / "t.int8.onnx", batches, "minmax", "tensorrt")
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in _weight_codes(trt)) == 127


def _input_scale(path: Path) -> float:
    model, initializers = _load_with_initializers(path)
    (node,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image"]
    return float(initializers[node.input[1]])


def test_every_calibration_batch_sets_the_ranges(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    # MinMax over both batches: the input spans [-3, 5], so the uint8 input scale is 8 / 255; the first batch
    # alone ([0, 1]) would give 1 / 255.
    first = np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)
    first[0, 0, 0, :2] = (0.0, 1.0)
    second = first.copy()
    second[0, 1, 3, :2] = (-3.0, 5.0)
    path = quantize_onnx(tiny_model_files["onnx"], tmp_path / "m.int8.onnx", [first, second], "minmax")
    assert _input_scale(path) == pytest.approx(8 / 255, rel=1e-3)


@pytest.mark.parametrize("count", [8, 9, 32])
def test_minmax_takes_the_range_of_every_frame_of_a_large_calibration(count: int, tiny_model_files: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    """`unet-export --precision int8 --calibration-method minmax` with the default 32 frames (any multiple of 8) ended
    in ONNX Runtime's "No data is collected.", and with 9 to 15 took the ranges of the frames past the 8th alone:
    unetrt asked ONNX Runtime to reduce every 8 frames (CalibMaxIntermediateOutputs), and its MinMaxCalibrater drops
    each full chunk without reducing it (microsoft/onnxruntime#18893, unfixed in 1.32)."""
    rng = np.random.default_rng(0)
    batches = [rng.random((1, 3, 16, 16)).astype(np.float32) for _ in range(count)]
    for batch in batches:
        batch[0, 0, 0, :2] = (0.0, 1.0)
    batches[0][0, 1, 3, :2] = (-3.0, 5.0)  # the first frame alone spans [-3, 5]
    path = quantize_onnx(tiny_model_files["onnx"], tmp_path / "m.int8.onnx", batches, "minmax")
    assert _input_scale(path) == pytest.approx(8 / 255, rel=1e-3)


def test_percentile_calibration_clips_an_outlier_that_minmax_keeps(tiny_model_files: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    # One input value of 1000 among about 200 000 standard normal ones: MinMax's input scale covers it (> 1000 / 255),
    # the 99.999th percentile does not.
    batch = np.random.default_rng(4).standard_normal((1, 3, 256, 256)).astype(np.float32)
    batch[0, 0, 10, 10] = 1000.0
    scales = {method: _input_scale(quantize_onnx(tiny_model_files["onnx"], tmp_path / f"{method}.int8.onnx",
                                                 [batch], method)) for method in ("minmax", "percentile")}
    assert scales["minmax"] > 1000 / 255 > 10 * scales["percentile"]


def test_check_accuracy_holds_a_multiclass_model_to_one_point_of_mean_iou(
        tiny_model_files: dict[str, Path], tiny_int8_onnx: Path, tmp_path: Path) -> None:
    images, labels = _labelled_folder(tmp_path)
    checks = quantize.check_accuracy(tiny_model_files["onnx"], tiny_int8_onnx, images, labels)
    assert checks and checks[0].engine == "onnxruntime"
    for check in checks:
        assert check.metric == "mean_iou" and check.limit == quantize.MAX_MEAN_IOU_LOSS == 0.01


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_quantizing_prints_nothing_of_onnx_runtimes_calibration(method: str, tiny_model_files: dict[str, Path],
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # ONNX Runtime's histogram calibrations (entropy, percentile: the default) printed "Collecting tensor data and
    # making histogram ...", the tensor and bin counts and the percentiles on stdout, five lines of a
    # `unet-export --precision int8` whose own line names the method and frames.
    batch = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    quantize_onnx(tiny_model_files["onnx"], tmp_path / "m.int8.onnx", [batch], method)
    assert capsys.readouterr().out == ""


def test_unet_export_int8_prints_its_own_lines_alone(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = _labelled_folder(tmp_path)
    real_check = quantize.check_accuracy

    def check(*args: object, **kwargs: object) -> list[AccuracyCheck]:
        # An untrained network's figures are noise: INT8 keeps FP32's, so the export writes.
        return [AccuracyCheck(m.metric, m.fp32, m.fp32, m.limit, m.engine, m.fp32_figures, m.int8_figures)
                for m in real_check(*args, **kwargs)]  # type: ignore[arg-type]

    monkeypatch.setattr(quantize, "check_accuracy", check)
    output = tmp_path / "m.onnx"
    assert export_main([str(tiny_model_files["pt"]), "-o", str(output), "--precision", "int8", "--calibration",
                        str(images), "--calibration-count", "2", "--check-labels", str(labels)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [["wrote", str(output)], ["wrote", str(int8_path(output))]]
    assert "(percentile calibration on 2 frames, for cpu)" in lines[1]
