from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetrt.backends import open_backend, resolve_model


def test_suffix_picks_backend(tiny_model_files: dict[str, Path]) -> None:
    assert resolve_model(tiny_model_files["onnx"]) == (tiny_model_files["onnx"], "onnxruntime")
    assert resolve_model(tiny_model_files["pt"]) == (tiny_model_files["pt"], "torch")


@pytest.mark.parametrize(("model", "backend", "error", "message"), [
    ("missing.onnx", "auto", FileNotFoundError, "does not exist"),
    ("model.txt", "auto", ValueError, "cannot tell the backend"),
    ("no-such-bundled-model", "auto", ValueError, "no bundled model"),
    ("camvid", "caffe", ValueError, "unknown backend 'caffe'"),
])
def test_bad_requests(model: str, backend: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_model(model, backend)


def test_backend_suffix_mismatch(tiny_model_files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="runs on 'onnxruntime'"):
        resolve_model(tiny_model_files["onnx"], "torch")


def test_both_backends_agree_and_check_batches(tiny_model_files: dict[str, Path]) -> None:
    batch = np.random.default_rng(0).standard_normal((2, 3, 32, 48)).astype(np.float32)
    with open_backend(tiny_model_files["onnx"]) as ort_net, open_backend(tiny_model_files["pt"]) as torch_net:
        assert ort_net.name == "onnxruntime" and torch_net.name == "torch"
        a, b = ort_net.infer(batch), torch_net.infer(batch)
        assert a.shape == b.shape == (2, 3, 32, 48)
        assert np.abs(a - b).max() < 1e-4
        with pytest.raises(ValueError, match="channels"):
            ort_net.infer(batch[:, :1])
        with pytest.raises(ValueError, match="4-D"):
            torch_net.infer(batch[0])


def test_onnx_without_metadata_is_refused(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="no 'unetrt' metadata; export it with unet-export"):
        open_backend(path)
