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
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    meta = {p.key: p.value for p in proto.metadata_props}
    info = ModelInfo.from_json(meta[METADATA_KEY])
    assert info.class_names == ("class0", "class1", "class2") and info.padding == "same"


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
