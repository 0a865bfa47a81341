from __future__ import annotations

import importlib.util
import sys
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


@pytest.mark.parametrize("backend, suffix", [
    ("onnxruntime", "onnx"),
    pytest.param("torch", "pt", marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                                         reason="torch is not installed")),
])
def test_a_close_from_another_thread_after_the_check_leaves_the_call_its_answer(
        backend: str, suffix: str, tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """close() landing between infer's closed check and its run: the call that was let in finishes with the
    right logits (it used to read the dropped session again: AttributeError / TypeError)."""
    from unetrt.backends import base

    net = open_backend(tiny_model_files[suffix], backend=backend)
    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    expected = net.infer(batch)
    module = sys.modules[type(net).__module__]

    def check_then_close(batch: np.ndarray, info: object) -> np.ndarray:
        net.close()
        return base.check_batch(batch, info)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "check_batch", check_then_close)
    np.testing.assert_array_equal(net.infer(batch), expected)
    with pytest.raises(ValueError, match="closed"):
        net.infer(batch)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed")
def test_openvino_compiles_nothing_after_a_close_from_another_thread(tiny_model_files: dict[str, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from unetrt.backends import base, openvino

    net = open_backend(tiny_model_files["onnx"], backend="openvino")
    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)

    def check_then_close(batch: np.ndarray, info: object) -> np.ndarray:
        net.close()
        return base.check_batch(batch, info)  # type: ignore[arg-type]

    monkeypatch.setattr(openvino, "check_batch", check_then_close)
    with pytest.raises(ValueError, match="closed"):
        net.infer(batch)
    assert not net._requests  # type: ignore[attr-defined]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_takes_a_cuda_ordinal_like_the_other_backends(tiny_model_files: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from unetrt.backends.torch import TorchBackend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'cuda:1' asked, but torch sees no CUDA GPU"):
        TorchBackend(tiny_model_files["pt"], device="cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"CUDA device 1 does not exist; torch sees 1 CUDA device"):
        TorchBackend(tiny_model_files["pt"], device="cuda:1")
