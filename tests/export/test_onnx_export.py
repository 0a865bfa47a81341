from __future__ import annotations

import subprocess
import sys
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
