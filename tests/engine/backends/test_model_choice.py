"""Which file, backend and precision a model request runs: the fastest accurate CPU path by default."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from unetrt import backends
from unetrt.backends import CPU_PREFERENCE, ModelChoice, choose_model, open_backend
from unetrt.backends.openvino import openvino_available
from unetrt.bundled import MODELS_DIR, bundled_model_names

needs_camvid_int8 = pytest.mark.skipif(not (MODELS_DIR / "camvid.int8.onnx").is_file(),
                                       reason="the bundled camvid INT8 variant is not in this checkout")


@needs_camvid_int8
@pytest.mark.parametrize("openvino, expected", [(True, ("openvino", "int8")), (False, ("onnxruntime", "int8"))])
def test_default_is_the_first_installed_of_the_cpu_preference(openvino: bool, expected: tuple[str, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: openvino)
    choice = choose_model("camvid", device="cpu")
    assert (choice.backend, choice.precision) == expected == CPU_PREFERENCE[0 if openvino else 1]
    assert choice.path == MODELS_DIR / "camvid.int8.onnx"


@needs_camvid_int8
@pytest.mark.parametrize("backend, precision, expected", [
    ("auto", "fp32", ("camvid.onnx", "onnxruntime", "fp32")),
    ("onnxruntime", "int8", ("camvid.int8.onnx", "onnxruntime", "int8")),
    ("openvino", "auto", ("camvid.int8.onnx", "openvino", "int8")),
    ("openvino", "bf16", ("camvid.onnx", "openvino", "bf16")),
    ("auto", "bf16", ("camvid.onnx", "openvino", "bf16")),
    ("torch", "auto", ("camvid.pt", "torch", "fp32")),
])
def test_explicit_requests(backend: str, precision: str, expected: tuple[str, str, str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: False)
    choice = choose_model("camvid", backend, precision, "cpu")
    assert (choice.path.name, choice.backend, choice.precision) == expected


def test_a_gpu_without_tensorrt_keeps_the_fp32_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # With TensorRT the GPU runs an engine built from it (tests/engine/backends/test_gpu_preference.py).
    monkeypatch.setattr("unetrt.backends.tensorrt_gpu_available", lambda: False)
    assert choose_model("camvid", device="cuda") == ModelChoice(MODELS_DIR / "camvid.onnx", "onnxruntime", "fp32")


@needs_camvid_int8
def test_an_asked_precision_runs_on_openvino_on_a_cpu_and_on_onnxruntime_on_a_gpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: True)
    monkeypatch.setattr("unetrt.backends.tensorrt_gpu_available", lambda: False)
    int8 = MODELS_DIR / "camvid.int8.onnx"
    assert choose_model("camvid", precision="int8", device="cpu") == ModelChoice(int8, "openvino", "int8")
    assert choose_model("camvid", precision="int8", device="cuda") == ModelChoice(int8, "onnxruntime", "int8")


@needs_camvid_int8
def test_device_cpu_keeps_the_cpu_preference_where_onnxruntime_has_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    # onnxruntime-gpu installed: 'auto' runs its CUDA provider, but device 'cpu' is the CPU list all the same.
    monkeypatch.setattr("unetrt.backends.onnxruntime_gpu_available", lambda: True)
    monkeypatch.setattr("unetrt.backends.tensorrt_gpu_available", lambda: False)
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: True)
    assert choose_model("camvid", device="cpu") == ModelChoice(MODELS_DIR / "camvid.int8.onnx", "openvino", "int8")
    assert choose_model("camvid") == ModelChoice(MODELS_DIR / "camvid.onnx", "onnxruntime", "fp32")


def test_a_path_without_a_suffix_is_not_taken_for_a_bundled_name(tmp_path: Path) -> None:
    # runs/best (a file saved without its suffix) is told which suffixes pick a backend, not that no model is bundled.
    with pytest.raises(ValueError, match=r"cannot tell the backend of '.*camvid': use a \.onnx, .* file or a bundled"):
        choose_model(tmp_path / "camvid")


def test_a_folder_is_named_a_folder_with_the_models_in_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # unet-train's run folder given for its checkpoint: 'runs/mine' and 'runs/mine/' were "no bundled model" (or
    # "cannot tell the backend"), which sends the user looking for a typo.
    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    for name in ("best.pt", "last.pt", "log.csv"):
        (run / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path / "runs")
    for given in ("mine", "mine/", str(run)):
        with pytest.raises(ValueError, match=rf"model '{re.escape(given)}' is a folder; give the model file in it "
                                             r"\(best\.pt, last\.pt\)"):
            choose_model(given)
    # A folder beside the user that is called like a bundled model does not hide the bundled model.
    (tmp_path / "runs" / "camvid").mkdir()
    assert choose_model("camvid", backend="torch").path == MODELS_DIR / "camvid.pt"


@pytest.mark.parametrize("backend, precision, message", [
    ("onnxruntime", "bf16", "OpenVINO's inference-precision hint"),
    ("torch", "int8", "runs in fp32 on torch"),
    ("auto", "int4", "unknown precision"),
    ("tensorflow", "auto", "unknown backend"),
])
def test_impossible_bundled_requests(backend: str, precision: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_model("camvid", backend, precision, "cpu")


def test_a_path_runs_at_its_own_precision(tiny_model_files: dict[str, Path]) -> None:
    assert choose_model(tiny_model_files["onnx"]).backend == "onnxruntime"
    assert choose_model(tiny_model_files["onnx"], "openvino", "bf16").precision == "bf16"
    with pytest.raises(ValueError, match="runs at the precision it was exported with"):
        choose_model(tiny_model_files["onnx"], precision="int8")
    with pytest.raises(ValueError, match="'onnxruntime' or 'openvino'"):
        choose_model(tiny_model_files["onnx"], "torch")


def test_a_path_asked_at_its_own_precision_runs(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                                tiny_fp16_onnx: Path) -> None:
    # unet-eval --model best.pt --precision fp32 and Segmenter("m.int8.onnx", precision="int8") were refused with
    # "pass ... the file of that precision", the very file given.
    for path, backend, own in ((tiny_model_files["pt"], "auto", "fp32"),
                               (tiny_model_files["onnx"], "onnxruntime", "fp32"),
                               (tiny_int8_onnx, "onnxruntime", "int8"), (tiny_int8_onnx, "openvino", "int8"),
                               (tiny_fp16_onnx, "onnxruntime", "fp16"), (tiny_fp16_onnx, "openvino", "fp16")):
        if backend == "openvino" and not openvino_available():
            continue
        assert choose_model(path, backend, own) == choose_model(path, backend), (path.name, backend)
        with open_backend(path, backend, "cpu", own) as net:
            assert net.precision == own
    # Another precision is refused naming the one the file runs at, the request that works.
    with pytest.raises(ValueError, match=r"tiny\.int8\.onnx runs at .* \(int8 on .*precision 'auto' or 'int8'"):
        choose_model(tiny_int8_onnx, precision="fp16")
    # An engine built from the file: 'bf16' is no build precision (the file's is not the point).
    with pytest.raises(ValueError, match=r"a TensorRT engine is built at auto, fp32, fp16, int8; precision 'bf16'"):
        choose_model(tiny_model_files["onnx"], "tensorrt", "bf16")


def test_a_path_asked_another_precision_names_the_file_unet_export_wrote_beside_it(
        tiny_model_files: dict[str, Path], tiny_int8_onnx: Path, tmp_path: Path) -> None:
    # unet-eval --model m.onnx --precision int8 said "or the file of that precision" with m.int8.onnx beside it, and
    # precision 'bf16' on ONNX Runtime was the file's precision's fault rather than the backend's.
    (tmp_path / "m.onnx").write_bytes(tiny_model_files["onnx"].read_bytes())
    (tmp_path / "m.int8.onnx").write_bytes(tiny_int8_onnx.read_bytes())
    with pytest.raises(ValueError, match=r"or the file of that precision \(m\.int8\.onnx, beside it\)$"):
        choose_model(tmp_path / "m.onnx", "onnxruntime", "int8")
    with pytest.raises(ValueError, match=r"or the file of that precision \(m\.onnx, beside it\)$"):
        choose_model(tmp_path / "m.int8.onnx", precision="fp32")
    with pytest.raises(ValueError, match=r"or the file of that precision$"):  # none written: none named
        choose_model(tmp_path / "m.onnx", precision="fp16")
    with pytest.raises(ValueError, match="precision 'bf16' is OpenVINO's inference-precision hint; use backend "
                                         "'openvino'"):
        choose_model(tmp_path / "m.onnx", "onnxruntime", "bf16")


@pytest.mark.parametrize("precision, export", [
    ("int8", "--precision int8 --calibration FRAMES --check-labels LABELS, then run tiny.int8.onnx"),
    ("fp16", "--precision fp16, then run tiny.fp16.onnx"),
    ("bf16", "then run tiny.onnx on backend 'openvino' at precision 'bf16'"),
])
def test_a_checkpoint_asked_another_precision_names_the_export(tiny_model_files: dict[str, Path], precision: str,
                                                               export: str) -> None:
    # Segmenter("best.pt", precision="int8") said best.pt "runs at the precision it was exported with" and to pass
    # "the file of that precision": a checkpoint is exported by nothing, and no such file exists until unet-export.
    refusal = (r"tiny\.pt is a checkpoint and runs at fp32 on backend 'torch': pass precision 'auto' or 'fp32', or "
               r"export it \(unet-export .*tiny\.pt -o .*tiny\.onnx")
    with pytest.raises(ValueError, match=refusal) as refused:
        choose_model(tiny_model_files["pt"], precision=precision)
    assert str(refused.value).endswith(f"{export})")


def test_openvino_asked_fp32_of_a_file_of_another_precision_refuses(tiny_int8_onnx: Path,
                                                                    tiny_fp16_onnx: Path) -> None:
    # ONNX Runtime refused precision 'fp32' for an INT8 or FP16 file; OpenVINO ran the file at INT8 / FP16 without a
    # word: the same request, another answer per backend.
    pytest.importorskip("openvino")
    for path, own in ((tiny_int8_onnx, "int8"), (tiny_fp16_onnx, "fp16")):
        with pytest.raises(ValueError, match=rf"runs at {own} on backend 'openvino', not 'fp32'"):
            open_backend(path, "openvino", "cpu", "fp32")


def test_a_model_file_whose_name_is_not_utf8_is_one_line_on_every_backend(tiny_model_files: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    # ONNX Runtime raised "TypeError: __init__(): incompatible constructor arguments" on such a name.
    for model, backend in (("onnx", "auto"), ("onnx", "onnxruntime"), ("onnx", "openvino"), ("pt", "torch")):
        path = tmp_path / os.fsdecode(b"m\xff." + model.encode())
        path.write_bytes(tiny_model_files[model].read_bytes())
        with pytest.raises(ValueError, match=r"model file '.*m\\xff\.\w+' has a name that is not valid UTF-8"):
            choose_model(path, backend)
    with pytest.raises(ValueError, match="not valid UTF-8"):
        open_backend(tmp_path / os.fsdecode(b"m\xff.onnx"), device="cpu")


def test_precision_variants_share_their_model_name() -> None:
    assert not any("." in name for name in bundled_model_names())
    assert backends.resolve_model("camvid", "onnxruntime", "fp32")[0].name == "camvid.onnx"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backends_report_the_precision_of_the_file_they_run(backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    from unetrt.backends import open_backend

    for precision in ("int8", "fp16", "fp32"):
        with open_backend("camvid", backend, device="cpu", precision=precision) as net:
            assert net.precision == precision, (backend, precision)


def test_a_refusal_names_a_file_beside_it_only_when_it_runs_at_the_precision_asked(
        tiny_model_files: dict[str, Path], tiny_int8_onnx: Path, tiny_fp16_onnx: Path, tmp_path: Path) -> None:
    # A file named like an export of another precision but holding something else (a renamed FP32 model, a damaged
    # download) is no fix to name; an FP16 export's siblings are named from the same NAME.
    (tmp_path / "m.int8.onnx").write_bytes(tiny_int8_onnx.read_bytes())
    (tmp_path / "m.fp16.onnx").write_bytes(tiny_model_files["onnx"].read_bytes())  # FP32 inside
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    for precision in ("fp16", "fp32"):
        with pytest.raises(ValueError, match=r"or the file of that precision$"):
            choose_model(tmp_path / "m.int8.onnx", "onnxruntime", precision)
    (tmp_path / "m.onnx").write_bytes(tiny_model_files["onnx"].read_bytes())
    (tmp_path / "m.fp16.onnx").write_bytes(tiny_fp16_onnx.read_bytes())
    with pytest.raises(ValueError, match=r"or the file of that precision \(m\.onnx, beside it\)$"):
        choose_model(tmp_path / "m.fp16.onnx", "onnxruntime", "fp32")
    with pytest.raises(ValueError, match=r"or the file of that precision \(m\.int8\.onnx, beside it\)$"):
        choose_model(tmp_path / "m.fp16.onnx", "onnxruntime", "int8")
