from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_info, write_unparsable_onnx

from unetrt.backends import open_backend, resolve_model
from unetrt.backends.base import check_batch, invalid_model_file, network_output_shape


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


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_device_entry_after_close_says_closed(tiny_model_files: dict[str, Path]) -> None:
    # The check comes before any CUDA call, so it holds on a CPU-only torch too: a close from another thread
    # used to surface as torch's own error about a stream (or 'NoneType' is not callable) instead.
    net = open_backend(tiny_model_files["pt"], backend="torch", device="cpu")
    net.close()
    with pytest.raises(ValueError, match="this backend is closed"):
        net.enqueue(0, (1, 3, 32, 32), 0, 0)


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


@pytest.mark.parametrize(("batch", "words"), [
    (np.zeros((1, 1, 3, 16, 16), np.float32), "4-D N x C x H x W numpy array, got shape (1, 1, 3, 16, 16)"),
    (np.zeros((1, 4, 16, 16), np.float32), "batch has 4 channels; the model expects 3"),
    (np.zeros((1, 3, 16, 16), np.uint8), "dtype must be float32, got uint8"),  # raw pixels, not normalised
    (np.zeros((1, 3, 16, 16), np.float64), "dtype must be float32, got float64"),
])
def test_a_bad_batch_is_one_value_error_naming_what_is_wrong(batch: np.ndarray, words: str,
                                                             tiny_model_files: dict[str, Path]) -> None:
    # Every backend runs the same check: one too many channels must not reach ONNX Runtime's own error.
    with pytest.raises(ValueError) as caught:
        check_batch(batch, tiny_info())
    assert str(caught.value).endswith(words)
    with open_backend(tiny_model_files["onnx"], "onnxruntime", device="cpu") as net, \
            pytest.raises(ValueError, match=re.escape(words)):
        net.infer(batch)


def test_a_float16_batch_runs_as_float32(tiny_model_files: dict[str, Path]) -> None:
    # Values exactly representable in float16 (multiples of 1/8 below 4), so both batches hold the same numbers.
    batch = np.random.default_rng(5).integers(-32, 32, (1, 3, 16, 16)).astype(np.float32) / 8
    checked = check_batch(batch.astype(np.float16), tiny_info())
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
    with open_backend(tiny_model_files["onnx"], "onnxruntime", device="cpu") as net:
        np.testing.assert_array_equal(net.infer(batch.astype(np.float16)), net.infer(batch))


def test_a_backend_opened_directly_reports_and_checks_the_precision_of_its_file(tiny_int8_onnx: Path) -> None:
    from unetrt.backends.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(tiny_int8_onnx) as net:  # precision 'auto': the file's own
        assert net.precision == "int8"
    with pytest.raises(ValueError, match=r"tiny.int8.onnx runs at int8 on backend 'onnxruntime', not 'fp32'"):
        OnnxRuntimeBackend(tiny_int8_onnx, precision="fp32")


def test_an_invalid_model_file_error_is_one_line() -> None:
    error = invalid_model_file("m.onnx", "ONNX model", "the graph\n  has no   output\n")
    assert str(error) == "model file 'm.onnx' is not a valid ONNX model: the graph has no output"


def test_valid_networks_lose_their_margin_on_both_sides() -> None:
    # By hand, depth 3 (two pools): 92 -4 /2 = 44, -4 /2 = 20, -4 = 16, *2 -4 = 28, *2 -4 = 52;
    # 140 -> 68 -> 32 -> 28 -> 52 -> 100.
    assert network_output_shape(tiny_info(padding="valid"), (2, 3, 92, 140)) == (2, 3, 52, 100)


def test_onnxruntime_runs_with_the_threads_asked_and_unetrt_session_options(tiny_model_files: dict[str, Path]) -> None:
    import onnxruntime as ort

    with open_backend(tiny_model_files["onnx"], "onnxruntime", device="cpu", threads=1) as net:
        options = net._session.get_session_options()  # type: ignore[attr-defined]
        assert net.threads == 1 and options.intra_op_num_threads == 1
        # Idle threads block instead of spinning: spinning ones take cores from the rest of a streaming pipeline.
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_onnxruntime_without_a_cuda_provider_refuses_device_cuda(tiny_model_files: dict[str, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from unetrt.backends.onnxruntime import OnnxRuntimeBackend

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match=r"device 'cuda' asked, but this onnxruntime has no CUDA provider"):
        OnnxRuntimeBackend(tiny_model_files["onnx"], device="cuda")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_takes_its_options_and_runs_on_the_cpu_it_is_asked_for(tiny_model_files: dict[str, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # so that threads=1 shows whatever the machine's default
    try:
        with open_backend(tiny_model_files["pt"], "torch", device="cpu", threads=1, channels_last=True) as net:
            assert net.threads == 1 and torch.get_num_threads() == 1
            # A 3x3 convolution's weight over several channels: laid out differently in channels-last.
            weight = next(p for p in net._model.parameters()  # type: ignore[attr-defined]
                          if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1)
            assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    finally:
        torch.set_num_threads(before)
    # 'cpu' stays on the CPU where torch sees a GPU, and FP16 is refused there.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with open_backend(tiny_model_files["pt"], "torch", device="cpu") as net:
        assert net.device == "cpu"
    with pytest.raises(ValueError, match=r"FP16 \(half=True\) needs a CUDA device"):
        open_backend(tiny_model_files["pt"], "torch", device="cpu", half=True)


def test_an_onnx_runtime_load_error_is_its_reason_in_one_line(tmp_path: Path) -> None:
    path = write_unparsable_onnx(tmp_path / "mystery.onnx")
    with pytest.raises(ValueError) as caught:
        open_backend(path, "onnxruntime", device="cpu")
    message = str(caught.value)
    # ONNX Runtime's reason names the unknown op, after its own 'Load model from PATH failed:' preamble.
    assert message.startswith(f"model file {str(path)!r} is not a valid ONNX model") and "NoSuchOp" in message
    assert "Load model from" not in message and "\n" not in message
