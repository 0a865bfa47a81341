from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    tiny_info,
    write_described_onnx,
    write_eight_bit_record,
    write_int8_of_elsewhere,
    write_unparsable_onnx,
)

from unetrt.backends import open_backend, resolve_model
from unetrt.backends.base import check_batch, invalid_model_file, network_output_shape, network_run_error


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


def test_device_cuda_on_a_machine_without_a_gpu_names_the_cpu(tiny_model_files: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Segmenter("camvid", device="cuda") on a CPU-only machine said "install onnxruntime-gpu", which brings no GPU;
    # unet-bench said "use --device cpu" for the same request.
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    monkeypatch.setattr("unetrt.backends.onnxruntime.cuda_device_count", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # set, the line names it and the process, not the machine
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=rf"device '{device}' asked, but this machine has no CUDA GPU.*"
                                             r"use device 'cpu'") as refused:
            open_backend(tiny_model_files["onnx"], "onnxruntime", device)
        assert "onnxruntime-gpu" not in str(refused.value)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_asked_cuda_without_a_gpu_names_the_cpu(tiny_model_files: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"torch sees no CUDA GPU; use device 'cpu'"):
        open_backend(tiny_model_files["pt"], "torch", "cuda")


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
    monkeypatch.setattr("unetrt.backends.onnxruntime.cuda_device_count", lambda: 1)  # a GPU the build cannot use
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


# --- ONNX networks made outside unetrt: each runs as its file says, or is refused in one line naming the change --


def _identity_onnx(path: Path, input_shape: tuple[int | str, ...], input_type: int | None = None) -> Path:
    """A described graph whose logits are its input: each pixel's class is the frame's strongest RGB channel."""
    from onnx import TensorProto, helper

    kind = TensorProto.FLOAT if input_type is None else input_type
    return write_described_onnx(path, [helper.make_node("Identity", ["image"], ["logits"])], {"logits": kind},
                                input_shape=input_shape, input_type=input_type)


def _red_and_blue(height: int, width: int) -> np.ndarray:
    """A BGR frame, red on the left half and blue on the right: class 0 (R) there, class 2 (B) here."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, : width // 2, 2] = 255
    frame[:, width // 2 :, 0] = 255
    return frame


def _red_and_blue_classes(height: int, width: int) -> np.ndarray:
    """The mask of :func:`_red_and_blue` where every pixel keeps its own class: 0 left of the middle, 2 from it."""
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2 :] = 2
    return mask


def test_onnxruntime_refuses_a_network_of_two_outputs_as_openvino_does(tmp_path: Path) -> None:
    # ONNX Runtime read the first output whatever it was; OpenVINO refused the same file.
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    path = write_described_onnx(tmp_path / "two.onnx", [helper.make_node("Relu", ["image"], ["logits"]),
                                                        helper.make_node("Neg", ["image"], ["extra"])],
                                {"logits": TensorProto.FLOAT, "extra": TensorProto.FLOAT})
    with pytest.raises(ValueError, match="has 1 inputs and 2 outputs; a unetrt U-Net has one of each: ") as caught:
        open_backend(path, "onnxruntime")
    assert "\n" not in str(caught.value)


def test_onnxruntime_refuses_a_channels_last_input_at_open(tmp_path: Path) -> None:
    # Before, the first frame failed with ONNX Runtime's multi-line INVALID_ARGUMENT (a traceback in the commands).
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    path = write_described_onnx(tmp_path / "nhwc.onnx",
                                [helper.make_node("Transpose", ["image"], ["logits"], perm=[0, 3, 1, 2])],
                                {"logits": TensorProto.FLOAT}, input_shape=("n", "h", "w", 3),
                                output_shape=("n", 3, "h", "w"))
    with pytest.raises(ValueError, match=r"takes its channels last \(N x H x W x C") as caught:
        open_backend(path, "onnxruntime")
    assert "\n" not in str(caught.value) and "channels first" in str(caught.value)


def test_onnxruntime_refuses_an_input_that_is_not_float(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto

    path = _identity_onnx(tmp_path / "bytes.onnx", ("n", 3, "h", "w"), TensorProto.UINT8)
    with pytest.raises(ValueError, match=r"network input of type tensor\(uint8\)"):
        open_backend(path, "onnxruntime")


def test_onnxruntime_refuses_an_output_that_is_not_float(tmp_path: Path) -> None:
    # Opened, a network that casts its logits to int64 would run, its logits cast back truncated to whole numbers.
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    path = write_described_onnx(tmp_path / "ints.onnx", [helper.make_node("Cast", ["image"], ["logits"],
                                                                          to=TensorProto.INT64)],
                                {"logits": TensorProto.INT64}, input_shape=("n", 3, "h", "w"))
    with pytest.raises(ValueError, match=r"network output of type tensor\(int64\)"):
        open_backend(path, "onnxruntime")


def test_onnxruntime_runs_a_float16_network_on_the_batch_cast_to_float16(tmp_path: Path) -> None:
    # The identity network returns its float16 input: the logits are the batch rounded to float16, as float32.
    pytest.importorskip("onnx")
    from onnx import TensorProto

    path = _identity_onnx(tmp_path / "half.onnx", ("n", 3, "h", "w"), TensorProto.FLOAT16)
    batch = np.random.default_rng(0).standard_normal((2, 3, 8, 12)).astype(np.float32)
    with open_backend(path, "onnxruntime") as backend:
        logits = backend.infer(batch)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits, batch.astype(np.float16).astype(np.float32))


def test_onnxruntime_pads_a_frame_smaller_than_a_fixed_input_up_to_it(tmp_path: Path) -> None:
    # A 1 x 3 x 16 x 16 input and a 12 x 14 frame without a working size: the frame is mirror-padded to 16 x 16 and
    # the scores cropped back, as a TensorRT engine does under its profile's minimum (it was refused in one line).
    pytest.importorskip("onnx")
    from unetrt import Segmenter

    path = _identity_onnx(tmp_path / "fixed.onnx", (1, 3, 16, 16))
    with Segmenter(path) as seg:
        assert seg.backend.min_input_hw == (16, 16)
        mask = seg.segment(_red_and_blue(12, 14)).mask
    np.testing.assert_array_equal(mask, _red_and_blue_classes(12, 14))


def test_onnxruntime_still_names_the_fixed_input_for_a_batch_of_another_shape(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    path = _identity_onnx(tmp_path / "fixed.onnx", (1, 3, 16, 16))
    with (open_backend(path, "onnxruntime") as backend,
          pytest.raises(ValueError, match=r"working_size=\(16, 16\)") as caught):
        backend.infer(np.zeros((1, 3, 12, 14), np.float32))
    assert "\n" not in str(caught.value) and "fixed input of 1 x 3 x 16 x 16" in str(caught.value)


def test_onnxruntime_runs_a_fixed_input_at_its_size_one_frame_at_a_time_and_tiles_larger_frames(
        tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from unetrt import Segmenter

    path = _identity_onnx(tmp_path / "fixed.onnx", (1, 3, 16, 16))
    small = _red_and_blue(20, 24)
    with Segmenter(path, working_size=(16, 16)) as seg:
        assert seg.backend.max_batch == 1 and seg.backend.max_input_hw == (16, 16)
        first, second = seg.segment_batch([small, small])
    # Resized to 16 x 16 and back, the halves blur only near the middle column: columns 0-7 are red, 16-23 blue.
    for result in (first, second):
        assert (result.mask[:, :8] == 0).all() and (result.mask[:, 16:] == 2).all()
    # Not resized (no working size), a 40 x 48 frame is tiled at 16 x 16: every pixel keeps its own class.
    with Segmenter(path) as seg:
        mask = seg.segment(_red_and_blue(40, 48)).mask
    np.testing.assert_array_equal(mask, _red_and_blue_classes(40, 48))


def test_onnxruntime_takes_a_fixed_input_of_another_height_than_width_the_right_way_round(tmp_path: Path) -> None:
    # A 1 x 3 x 16 x 24 input (N x C x H x W): the largest input is 16 high and 24 wide, and --size is W x H.
    pytest.importorskip("onnx")
    from unetrt import Segmenter

    path = _identity_onnx(tmp_path / "wide.onnx", (1, 3, 16, 24))
    with Segmenter(path) as seg:
        assert seg.backend.max_input_hw == (16, 24)
        # Smaller on both axes, a 12 x 14 frame is mirror-padded to 16 x 24, not to 24 x 16.
        np.testing.assert_array_equal(seg.segment(_red_and_blue(12, 14)).mask, _red_and_blue_classes(12, 14))
        # Tiled at 16 x 24, a 40 x 60 frame keeps every pixel's class: red (0) left, blue (2) right of column 30.
        mask = seg.segment(_red_and_blue(40, 60)).mask
    np.testing.assert_array_equal(mask, _red_and_blue_classes(40, 60))


def test_onnxruntime_device_entry_refuses_a_shape_the_fixed_input_does_not_take(tmp_path: Path) -> None:
    # The CUDA path asks output_shape before it binds buffers: a batch of 2 for a batch-1 file is refused there,
    # in the line that names the fix, not inside ONNX Runtime's IO binding.
    pytest.importorskip("onnx")
    path = _identity_onnx(tmp_path / "fixed.onnx", (1, 3, 16, 16))
    with open_backend(path, "onnxruntime") as backend:
        assert backend.output_shape((1, 3, 16, 16)) == (1, 3, 16, 16)
        with pytest.raises(ValueError, match=r"not 2 x 3 x 16 x 16: .*run batches of exactly 1"):
            backend.output_shape((2, 3, 16, 16))


def test_a_run_error_is_one_line_whatever_the_runtime_reports() -> None:
    # Runtimes report over several lines (OpenVINO: where, which check, the problem); a command prints one.
    message = str(network_run_error("OpenVINO", Path("/models/m.onnx"), (1, 3, 5, 6), "Check failed\n  at x.cpp:1\n"))
    assert message.startswith("OpenVINO cannot run m.onnx on a 1 x 3 x 5 x 6 batch (Check failed at x.cpp:1); ")


def _pool_and_upsample_onnx(path: Path) -> Path:
    """A described graph of a 2x2 max pool upsampled back and added to its input: it runs on even sides only."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("MaxPool", ["image"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Constant", [], ["scales"], value=helper.make_tensor("s", TensorProto.FLOAT, [4],
                                                                                   [1, 1, 2, 2])),
             helper.make_node("Resize", ["pooled", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Add", ["image", "up"], ["logits"])]
    return write_described_onnx(path, nodes, {"logits": TensorProto.FLOAT}, input_shape=("n", 3, "h", "w"))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_network_that_cannot_run_a_shape_is_one_line_naming_the_depth(backend: str, tmp_path: Path) -> None:
    # A network from elsewhere described with too small a depth: its runtime's multi-line report (a traceback in the
    # commands) became one line naming the description's depth.
    pytest.importorskip("onnx")
    if backend == "openvino":
        pytest.importorskip("openvino")
    path = _pool_and_upsample_onnx(tmp_path / "pool.onnx")
    with open_backend(path, backend) as net:
        assert net.infer(np.zeros((1, 3, 4, 6), np.float32)).shape == (1, 3, 4, 6)
        with pytest.raises(ValueError, match=r"cannot run pool\.onnx on a 1 x 3 x 5 x 6 batch \(") as caught:
            net.infer(np.zeros((1, 3, 5, 6), np.float32))
    assert "\n" not in str(caught.value) and "describe it with depth k + 1" in str(caught.value)
    if backend == "openvino":
        # OpenVINO's report opens with where its check failed; its last line is the problem, the one given.
        problem = str(caught.value.__cause__).strip().splitlines()[-1].strip()
        assert f"batch ({problem}); " in str(caught.value)
        # A batch spread over lanes reshapes the network to one image: the same line.
        from unetrt.backends.openvino import OpenVinoBackend

        with OpenVinoBackend(path, threads=2, lanes=2) as lanes, \
                pytest.raises(ValueError, match=r"cannot run pool\.onnx on a 1 x 3 x 5 x 6 batch \("):
            lanes.infer(np.zeros((2, 3, 5, 6), np.float32))


@pytest.mark.parametrize("saturates", [True, False], ids=["without-vnni", "with-vnni"])
def test_onnx_runtime_leaves_eight_bit_int8_weights_unfused_where_its_kernels_saturate(
        tiny_int8_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saturates: bool) -> None:
    """camvid.int8.tensorrt.onnx (8-bit weights) scored 61.29 mean IoU on ONNX Runtime on a Zen 3 EPYC without a
    word, against 62.28 for the same graph computed as written: the fused INT8 convolutions add uint8 x int8 pairs
    in int16 there. Such a file runs at the basic graph optimisation level there, with one warning; a file of 7-bit
    weights, or any file on a CPU with VNNI, keeps the full optimisation."""
    import warnings

    import onnxruntime as ort

    from unetrt.backends.onnxruntime import OnnxRuntimeBackend

    eight_bit = write_eight_bit_record(tiny_int8_onnx, tmp_path / "eight.int8.onnx")
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: saturates)
    full, basic = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    for model, unfused in ((eight_bit, saturates), (tiny_int8_onnx, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with OnnxRuntimeBackend(model, device="cpu") as backend:
                level = backend._session.get_session_options().graph_optimization_level  # type: ignore[union-attr]
                assert backend.precision == "int8"
        assert level == (basic if unfused else full), model.name
        said = [str(warning.message) for warning in caught if "8-bit INT8 weights" in str(warning.message)]
        assert said == ([f"{model.name} has 8-bit INT8 weights, which ONNX Runtime's fused INT8 kernels saturate on "
                         "this CPU without VNNI: it runs unfused, with the file's own answers at about FP32's speed "
                         "(a file exported by unet-export --int8 for the CPU has 7-bit weights and runs at INT8's)"]
                        if unfused else []), said


@pytest.mark.parametrize("saturates", [True, False], ids=["without-vnni", "with-vnni"])
def test_onnx_runtime_judges_an_int8_file_of_elsewhere_by_its_weights_where_int8_products_saturate(
        tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saturates: bool) -> None:
    """An INT8 file quantized elsewhere (ONNX Runtime's quantize_static, a description written on as for a network
    from elsewhere) has no unetrt.quantization record: one of 8-bit weights ran fused on a CPU without VNNI, its
    products saturating, without a word, since only the record was read. Its weights say it now: 8-bit ones run
    unfused with the warning, 7-bit ones keep the full optimisation."""
    import warnings

    import onnxruntime as ort

    from unetrt.backends.onnxruntime import OnnxRuntimeBackend

    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: saturates)
    full, basic = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    for target, unfused in (("tensorrt", saturates), ("cpu", False)):
        model = write_int8_of_elsewhere(tiny_model_files["onnx"], tmp_path / f"{target}.int8.onnx", target)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with OnnxRuntimeBackend(model, device="cpu") as backend:
                level = backend._session.get_session_options().graph_optimization_level  # type: ignore[union-attr]
                assert backend.precision == "int8"
        assert level == (basic if unfused else full), target
        said = [str(warning.message) for warning in caught if "INT8 weights" in str(warning.message)]
        assert said == ([f"{model.name} has 8-bit INT8 weights, which ONNX Runtime's fused INT8 kernels saturate on "
                         "this CPU without VNNI: it runs unfused, with the file's own answers at about FP32's speed "
                         "(a file exported by unet-export --int8 for the CPU has 7-bit weights and runs at INT8's)"]
                        if unfused else []), said
