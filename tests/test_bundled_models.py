"""The bundled models: PyTorch and ONNX Runtime agree, and unet-eval reproduces the stated figures of every
precision on every installed CPU engine (the TensorRT-layout INT8 file on ONNX Runtime, its stated stand-in);
INT8 keeps the accuracy of FP32."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unetrt.backends.openvino import openvino_available
from unetrt.bundled import MODELS_DIR, TENSORRT_INT8_SUFFIX, TENSORRT_INT8_VARIANT, bundled_model_names
from unetrt.datasets import list_images, read_image

# Within 1 point of mean IoU; binary models: within 0.005 of the ISBI challenge pixel error.
MAX_MEAN_IOU_LOSS = 0.01
MAX_PIXEL_ERROR_GAIN = 0.005


def _stated(name: str) -> dict[str, Any]:
    return dict(json.loads((MODELS_DIR / f"{name}.json").read_text()))


def _stated_variants() -> list[tuple[str, str, str]]:
    runs = []
    for name in bundled_model_names():
        for precision, entry in _stated(name).get("variants", {}).items():
            runs += [(name, precision, engine) for engine in ("onnxruntime", "openvino") if engine in entry]
    return runs


@pytest.mark.parametrize("name", bundled_model_names())
def test_torch_and_onnxruntime_logits_agree(name: str, shared_data: Path) -> None:
    pytest.importorskip("torch")
    from unetrt.backends import open_backend
    from unetrt.frame_path import network_input

    with open_backend(name, "onnxruntime", precision="fp32") as onnx_net, \
            open_backend(name, "torch", device="cpu") as torch_net:
        info = onnx_net.info
        folder = shared_data / ("camvid/val" if name == "camvid" else "isbi2012-em/images")
        for path in list_images(folder)[::25]:
            batch = network_input([read_image(path, info.in_channels)], info)
            difference = np.abs(onnx_net.infer(batch) - torch_net.infer(batch)).max()
            assert difference <= 1e-4, f"{path.name}: max |logit difference| {difference:.2e}"


@functools.cache  # ONNX Runtime FP32 is checked twice, against the validation figures and the FP32 variant's
def _evaluate(name: str, backend: str, precision: str, shared_data: Path) -> dict[str, Any]:
    """The figures of the model run so over its stated split; each run once (the tests only read them)."""
    from unetrt.evaluate import evaluate_stated
    from unetrt.segmenter import Segmenter

    # The TensorRT layout is no CPU precision of the name: its file runs at its own (INT8).
    model, precision = ((MODELS_DIR / f"{name}{TENSORRT_INT8_SUFFIX}", "auto") if precision == TENSORRT_INT8_VARIANT
                        else (name, precision))
    # The plain masks: a stated clean-up has its own record.
    with Segmenter(model, backend=backend, precision=precision, device="cpu", cleanup=None) as segmenter:
        return evaluate_stated(segmenter, _stated(name), shared_data)


@pytest.mark.parametrize("name", bundled_model_names())
def test_unet_eval_reproduces_stated_validation_figures(name: str, shared_data: Path) -> None:
    figures = _evaluate(name, "onnxruntime", "fp32", shared_data)
    for key, value in _stated(name)["validation"].items():
        # ONNX Runtime's CPU kernels differ in the last bits between processors; a handful of
        # pixels may flip, which moves a split-level figure by far less than this.
        assert figures[key] == pytest.approx(value, abs=5e-4), key


@pytest.mark.slow
@pytest.mark.parametrize("name, precision, engine", _stated_variants())
def test_every_precision_reproduces_its_stated_figures(name: str, precision: str, engine: str,
                                                       shared_data: Path) -> None:
    if engine == "openvino" and not openvino_available():
        pytest.skip("needs openvino (pip install 'unetrt[openvino]')")
    if precision == "bf16":
        from unetrt.backends.openvino import cpu_has_bf16

        if not cpu_has_bf16():
            pytest.skip("this CPU has no native BF16")
    figures = _evaluate(name, engine, precision, shared_data)
    # INT8 and BF16 kernels round differently on CPUs with and without VNNI / AVX-512 BF16: allow more there.
    tolerance = 5e-4 if precision in ("fp32", "fp16") else 3e-3
    for key, value in _stated(name)["variants"][precision][engine].items():
        if isinstance(value, float):
            assert figures[key] == pytest.approx(value, abs=tolerance), key


@pytest.mark.parametrize("name", bundled_model_names())
def test_stated_int8_keeps_the_fp32_accuracy(name: str) -> None:
    stated = _stated(name)
    assert (MODELS_DIR / f"{name}.int8.onnx").is_file(), "every bundled model ships an INT8 variant"
    int8 = stated["variants"]["int8"]
    assert int8["quantization"]["target"] == "cpu" and int8["quantization"]["format"] == "QDQ"
    fp32 = stated["validation"]
    for engine in ("onnxruntime", "openvino"):
        if engine not in int8:
            continue
        if "mean_iou" in fp32:
            assert fp32["mean_iou"] - int8[engine]["mean_iou"] <= MAX_MEAN_IOU_LOSS, engine
        else:
            assert int8[engine]["challenge_pixel_error"] - fp32["challenge_pixel_error"] <= MAX_PIXEL_ERROR_GAIN, engine


def _with_tensorrt_int8() -> list[str]:
    return [n for n in bundled_model_names() if TENSORRT_INT8_VARIANT in _stated(n)["variants"]]


@pytest.mark.parametrize("name", bundled_model_names())
def test_a_model_ships_a_tensorrt_int8_file_when_it_is_stated_int8_on_cpus(name: str) -> None:
    """isbi runs FP32 on CPUs (INT8 costs its cleaned Rand error) and ships none: every file counts against the
    64 MiB a GPU check carries (tools/gpu_check_bundle.sh)."""
    stated_int8 = _stated(name).get("cpu_precision", {}).get("precision", "int8") == "int8"
    shipped = (MODELS_DIR / f"{name}{TENSORRT_INT8_SUFFIX}").is_file()
    assert (name in _with_tensorrt_int8()) == stated_int8 == shipped


@pytest.mark.parametrize("name", _with_tensorrt_int8())
def test_stated_tensorrt_int8_is_the_same_calibration_in_tensorrt_layout(name: str) -> None:
    """NAME.int8.tensorrt.onnx, the file TensorRT builds INT8 from, is stated like the others: calibrated as the CPU
    file, symmetric int8, within the INT8 bound of FP32 on the reported data (ONNX Runtime's arithmetic of it)."""
    from unetrt.model_file import read_model_file

    stated = _stated(name)
    entry = stated["variants"][TENSORRT_INT8_VARIANT]
    file = MODELS_DIR / f"{name}{TENSORRT_INT8_SUFFIX}"
    assert entry["file"] == file.name and entry["runs_on"] == "tensorrt" and "ONNX Runtime" in entry["computed_by"]
    quantization = read_model_file(file).quantization
    assert quantization == entry["quantization"]
    assert (quantization["target"], quantization["activations"]) == ("tensorrt", "int8 symmetric per tensor")
    cpu = stated["variants"]["int8"]["quantization"]
    for key in ("method", "frames", "fp32_nodes"):
        assert quantization[key] == cpu[key], key
    assert (quantization["method"], quantization["frames"]) == (stated["calibration"]["method"],
                                                                stated["calibration"]["count"])
    fp32, int8 = stated["validation"], entry["onnxruntime"]
    if "mean_iou" in fp32:
        assert fp32["mean_iou"] - int8["mean_iou"] <= MAX_MEAN_IOU_LOSS
    else:
        assert int8["challenge_pixel_error"] - fp32["challenge_pixel_error"] <= MAX_PIXEL_ERROR_GAIN


@pytest.mark.parametrize("name", [n for n in bundled_model_names() if "cleanup" in _stated(n)])
def test_stated_cleanup_reproduces_its_report_figures(name: str, shared_data: Path) -> None:
    """The Segmenter of a bundled name applies the statement's clean-up by default: the challenge figures of its
    masks and those of the one mask it returns are the statement's report."""
    from unetrt.datasets import paired_files, read_image, read_label
    from unetrt.evaluate import evaluate
    from unetrt.metrics import IsbiChallengeScorer
    from unetrt.postprocess import BinaryCleanup
    from unetrt.segmenter import Segmenter

    stated = _stated(name)
    cleanup = stated["cleanup"]
    assert not set(cleanup["selected_on_stems"]) & set(stated["stems"]), "chosen and reported on other slices"
    images, labels = shared_data / stated["images"], shared_data / stated["labels"]
    with Segmenter(name, backend="onnxruntime", precision="fp32", device="cpu") as segmenter:
        assert segmenter.cleanup == BinaryCleanup(**cleanup["settings"])
        figures = evaluate(segmenter, images, labels, stems=stated["stems"])
        one_mask = IsbiChallengeScorer(thresholds=(segmenter.cleanup.threshold,), binarize=segmenter.cleanup.apply)
        for image, label in paired_files(images, labels):
            if image.stem in stated["stems"]:
                result = segmenter.segment(read_image(image, 1), probabilities=True)
                assert np.array_equal(result.mask, segmenter.cleanup.apply(result.probabilities[0]))
                one_mask.update(result.probabilities[0], read_label(label, True))
    cleaned, mask = cleanup["report"]["cleaned"], cleanup["report"]["mask"]
    assert figures["challenge_rand_error"] == pytest.approx(cleaned["rand_error"], abs=5e-4)
    assert figures["challenge_pixel_error"] == pytest.approx(cleaned["pixel_error"], abs=5e-4)
    assert one_mask.scores().rand_error == pytest.approx(mask["rand_error"], abs=5e-4)
    assert one_mask.scores().pixel_error == pytest.approx(mask["pixel_error"], abs=5e-4)


@pytest.mark.parametrize("name", bundled_model_names())
def test_a_cpu_runs_the_stated_precision(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A statement that moves its model off INT8 on CPUs says why; the choice follows it."""
    from unetrt.backends import choose_model

    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: True)
    stated = _stated(name).get("cpu_precision", {"precision": "int8"})
    assert stated["precision"] == "int8" or len(stated.get("why", "")) > 40
    assert choose_model(name, device="cpu").precision == stated["precision"]


@pytest.mark.parametrize("name", bundled_model_names())
def test_a_stated_prior_correction_is_in_every_file(name: str) -> None:
    # The correction lives in the head's biases: each file must say it carries the tau the statement chose, or
    # one precision would answer as the uncorrected network.
    from unetrt.bundled import PRECISION_SUFFIXES
    from unetrt.model_file import read_model_file

    stated = _stated(name).get("prior_correction")
    suffixes = [*PRECISION_SUFFIXES.values(), TENSORRT_INT8_SUFFIX,
                *([".pt"] if importlib.util.find_spec("torch") else [])]
    files = [MODELS_DIR / f"{name}{suffix}" for suffix in suffixes]
    corrections = {path.name: read_model_file(path).info.extra.get("prior_correction") for path in files
                   if path.is_file()}
    assert f"{name}.onnx" in corrections
    for file, correction in corrections.items():
        if stated is None:
            assert correction is None, file
        else:
            assert correction is not None and correction["tau"] == stated["tau"], file
