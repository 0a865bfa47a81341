from __future__ import annotations

import errno
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from unetrt.export.checkpoint import load_model  # noqa: E402
from unetrt.export.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, main, max_abs_difference  # noqa: E402
from unetrt.model_info import METADATA_KEY, ModelInfo  # noqa: E402


def test_export_graph_io_metadata_and_checker(tiny_model_files: dict[str, Path]) -> None:
    proto = onnx.load(str(tiny_model_files["onnx"]))
    onnx.checker.check_model(proto, full_check=True)
    # Opset 17, the one the TensorRT 10 parser on JetPack is stated for (a constant that drifts is no check).
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET] == [17]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME) == ("image", "logits")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    # A traced 64x64 output would tell TensorRT and shape inference a fixed size for every frame.
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert out_dims == ["batch", 3, "out_height", "out_width"]
    meta = {p.key: p.value for p in proto.metadata_props}
    info = ModelInfo.from_json(meta[METADATA_KEY])
    assert info.class_names == ("class0", "class1", "class2") and info.padding == "same"
    # the whole description travels (mean and std included), not just the class names
    assert info == load_model(tiny_model_files["pt"])[1]


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (3, 3, 40, 72)])
def test_dynamic_shapes_match_pytorch(tiny_model_files: dict[str, Path], shape: tuple[int, ...]) -> None:
    model, info = load_model(tiny_model_files["pt"])
    batch = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert max_abs_difference(model, info, tiny_model_files["onnx"], batch) <= 1e-4


def test_cli_prints_difference(
    tiny_model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    assert main([str(tiny_model_files["pt"]), "-o", str(out)]) == 0
    assert "max |PyTorch - ONNX Runtime|" in capsys.readouterr().out
    assert out.is_file()


def test_cli_states_another_working_size(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    assert main([str(tiny_model_files["pt"]), "-o", str(out), "--working-size", "40x28"]) == 0
    stated = {p.key: p.value for p in onnx.load(str(out)).metadata_props}[METADATA_KEY]
    _, trained = load_model(tiny_model_files["pt"])
    assert ModelInfo.from_json(stated).working_size == (40, 28) and trained.working_size is None


def test_the_check_batch_is_the_seeded_draw_at_the_padded_working_size(
        tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.export import onnx_export

    checked: list[np.ndarray] = []

    def recording(model: object, info: ModelInfo, path: Path, batch: np.ndarray) -> float:
        checked.append(batch.copy())
        return max_abs_difference(model, info, path, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx_export, "max_abs_difference", recording)
    assert main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "m.onnx"), "--working-size", "30x18",
                 "--seed", "7"]) == 0
    # 30 wide, 18 high: a depth-3 'same' network takes multiples of 4, so 32 wide and 20 high (H before W).
    (batch,) = checked
    np.testing.assert_array_equal(batch, np.random.default_rng(7).standard_normal((2, 3, 20, 32)).astype(np.float32))
    assert "on a random 2x3x20x32 batch" in capsys.readouterr().out


def test_an_export_beyond_the_tolerance_is_refused_and_nothing_written(
        tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.export import onnx_export

    # Twice the 1e-4 tolerance: a graph this far from PyTorch is a wrong export.
    monkeypatch.setattr(onnx_export, "max_abs_difference", lambda *args: 2e-4)
    assert main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "differs from PyTorch by 2.00e-04 > 1e-04" in err and err.count("\n") == 1
    assert _names(tmp_path) == []


@pytest.mark.parametrize(("agreement", "code"), [(0.99, 0), (0.985, 2)])
def test_the_fp16_model_must_agree_on_99_percent_of_pixels(
        agreement: float, code: int, tiny_model_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.export import onnx_export
    from unetrt.export.fp16 import Fp16Agreement

    monkeypatch.setattr(onnx_export, "compare_fp16", lambda *args: Fp16Agreement(0.01, 10.0, agreement, 100))
    assert main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "m.onnx"), "--precision", "fp16"]) == code
    assert (_names(tmp_path) == ["m.fp16.onnx", "m.onnx"]) is (code == 0)
    if code:
        assert "agrees with FP32 on only 98.50% of pixels (< 99%)" in capsys.readouterr().err


def test_the_largest_difference_is_reported_not_a_typical_one(tiny_model_files: dict[str, Path],
                                                              tmp_path: Path) -> None:
    # Class 0's bias moved by 0.5 moves each of its logits by 0.5 and no other: the largest difference is 0.5
    # wherever the pixels are (an average over the 3 classes would say about 0.17).
    model = onnx.load(str(tiny_model_files["onnx"]))
    for init in model.graph.initializer:
        if init.name == "head.bias":
            values = onnx.numpy_helper.to_array(init) + np.array([0.5, 0.0, 0.0], dtype=np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    onnx.save(model, str(tmp_path / "moved.onnx"))
    torch_model, info = load_model(tiny_model_files["pt"])
    batch = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    assert max_abs_difference(torch_model, info, tmp_path / "moved.onnx", batch) == pytest.approx(0.5, abs=1e-4)


def test_precisions_are_read_case_and_space_insensitively() -> None:
    from unetrt.export.export_options import parse_export_precisions

    assert parse_export_precisions(" FP16 , Int8") == ("fp16", "int8")


def test_int8_calibrates_on_the_32_frames_its_help_promises_unless_told() -> None:
    # --calibration-count's help says 32 frames by default: the parser (torch-free, for --help) must give that many.
    from unetrt.export.export_options import build_parser

    parser = build_parser()
    common = ["camvid", "-o", "m.onnx", "--precision", "int8", "--calibration", "frames", "--check-labels", "labels"]
    assert parser.parse_args(common).calibration_count == 32
    assert parser.parse_args([*common, "--calibration-count", "8"]).calibration_count == 8
    assert "(default 32;" in " ".join(parser.format_help().split())

def test_an_fp16_output_that_is_a_folder_is_refused_before_the_fp32_file_is_replaced(
        tiny_model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.fp16.onnx").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"an earlier model")
    assert main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "m.onnx"), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "m.fp16.onnx" in err and "is an existing folder" in err
    assert (tmp_path / "m.onnx").read_bytes() == b"an earlier model"


@pytest.mark.parametrize(("args", "message"), [
    (["missing.pt", "-o", "x.onnx"], "does not exist"),
    (["{pt}", "-o", "x.txt"], "must end in .onnx"),
    (["{pt}", "-o", "/no/such/folder/x.onnx"], "does not exist"),
    (["{onnx}", "-o", "x.onnx"], "is not a valid unetrt checkpoint"),
])
def test_cli_bad_input_one_line_exit_2(tiny_model_files: dict[str, Path], tmp_path: Path, args: list[str],
                                       message: str) -> None:
    argv = [a.format(pt=tiny_model_files["pt"], onnx=tiny_model_files["onnx"]) for a in args]
    proc = subprocess.run([sys.executable, "-m", "unetrt.export.onnx_export", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_an_output_that_is_a_folder_is_refused_before_the_export(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # torch.onnx.export ended in IsADirectoryError's traceback.
    (tmp_path / "dir.onnx").mkdir()
    assert main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "dir.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an existing folder; give a file name" in err


def test_an_output_name_that_is_not_utf8_is_refused(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # The name of b"ex\xff.onnx" as Python gives it (PEP 383) reached torch.onnx.export: a TypeError with a tensor dump.
    assert main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "ex\udcff.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ex\\xff.onnx' has a name that is not valid UTF-8" in err
    assert _names(tmp_path) == []


def test_an_output_folder_without_write_permission_is_named(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # A bare "[Errno 13] Permission denied: 'noread.onnx'" came from deep in the export (root writes anywhere, so
    # the refusal is simulated where the check creates its probe file).
    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("unetrt.stream.output_path.tempfile.mkstemp", refuse)
    assert main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no permission to write in" in err and "choose a folder you can write to" in err


def test_a_bad_seed_is_refused_before_the_output_is_replaced(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # --seed -1 was refused by NumPy after the export had replaced the file.
    output = tmp_path / "keep.onnx"
    output.write_bytes(b"an earlier model")
    with pytest.raises(SystemExit) as stopped:
        main([str(tiny_model_files["pt"]), "-o", str(output), "--seed", "-1"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and "--seed" in err and "from 0 to 4294967295" in err
    assert output.read_bytes() == b"an earlier model"


def test_an_unreadable_calibration_frame_is_refused_before_anything_is_written(
        tiny_model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The FP32 export replaced keep.onnx, then calibration failed on the frame.
    for folder in ("frames", "labels"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(b"junk")
    output = tmp_path / "keep.onnx"
    output.write_bytes(b"an earlier model")
    code = main([str(tiny_model_files["pt"]), "-o", str(output), "--precision", "int8", "--calibration",
                 str(tmp_path / "frames"), "--check-labels", str(tmp_path / "labels")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot read calibration frame" in err and "a.png" in err
    assert output.read_bytes() == b"an earlier model"


def test_a_failed_check_leaves_every_earlier_file_as_it_was(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # The FP16 check runs after both models are written: they must not have replaced the earlier ones.
    from unetrt.export import onnx_export
    from unetrt.export.fp16 import Fp16Agreement

    monkeypatch.setattr(onnx_export, "compare_fp16", lambda *args: Fp16Agreement(5.0, 10.0, 0.5, 100))
    earlier = {"m.onnx": b"earlier FP32", "m.fp16.onnx": b"earlier FP16"}
    for name, data in earlier.items():
        (tmp_path / name).write_bytes(data)
    assert main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "m.onnx"), "--precision", "fp16"]) == 2
    captured = capsys.readouterr()
    assert "agrees with FP32 on only 50.00% of pixels" in captured.err and "wrote" not in captured.out
    assert {name: (tmp_path / name).read_bytes() for name in _names(tmp_path)} == earlier  # no temporary left


def test_a_passed_export_replaces_the_earlier_files(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    for name in ("m.onnx", "m.fp16.onnx"):
        (tmp_path / name).write_bytes(b"earlier")
    assert main([str(tiny_model_files["pt"]), "-o", str(tmp_path / "m.onnx"), "--precision", "fp16"]) == 0
    assert _names(tmp_path) == ["m.fp16.onnx", "m.onnx"]
    for name in ("m.onnx", "m.fp16.onnx"):
        onnx.checker.check_model(onnx.load(str(tmp_path / name)))


def test_a_bundled_models_name_exports_its_checkpoint(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Every other command takes a bundled name; unet-export said "checkpoint 'tiny' does not exist".
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.pt").write_bytes(tiny_model_files["pt"].read_bytes())
    monkeypatch.setattr("unetrt.bundled.MODELS_DIR", models)
    monkeypatch.chdir(tmp_path)
    assert main(["tiny", "-o", "tiny.onnx"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "tiny.onnx")).metadata_props}
    assert ModelInfo.from_json(meta[METADATA_KEY]) == load_model(tiny_model_files["pt"])[1]


def test_a_checkpoint_file_named_like_a_bundled_model_is_the_file_exported(tiny_model_files: dict[str, Path],
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A file the user names is read, as before bundled names were taken: here the bundled tiny.pt is no checkpoint
    # at all, so only the local file ./tiny exports.
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.pt").write_bytes(b"not the checkpoint the user named")
    monkeypatch.setattr("unetrt.bundled.MODELS_DIR", models)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_bytes(tiny_model_files["pt"].read_bytes())
    assert main(["tiny", "-o", "tiny.onnx"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "tiny.onnx")).metadata_props}
    assert ModelInfo.from_json(meta[METADATA_KEY]) == load_model(tiny_model_files["pt"])[1]


def test_a_torchscript_file_is_one_line_without_torch_warning(tmp_path: Path) -> None:
    # torch.load printed a two-line UserWarning before the error line.
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script and torch.jit.save
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "lin.pt"))
    proc = subprocess.run([sys.executable, "-m", "unetrt.export.onnx_export", "lin.pt", "-o", "x.onnx"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "it is a TorchScript archive (torch.jit.save)" in lines[0], proc.stderr
