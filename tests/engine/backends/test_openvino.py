"""OpenVINO backend: agreement with ONNX Runtime on FP32, INT8 QDQ and IR, shape cache, errors in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_described_onnx, write_eight_bit_record, write_int8_of_elsewhere

from unetrt.backends import open_backend
from unetrt.backends.openvino import MISSING_OPENVINO, OpenVinoBackend, openvino_available, require_openvino
from unetrt.bundled import bundled_model_path

requires_openvino = pytest.mark.skipif(not openvino_available(), reason="needs openvino (pip install openvino)")


def _ort_logits(path: Path, batch: np.ndarray) -> np.ndarray:
    with open_backend(path, "onnxruntime") as backend:
        return backend.infer(batch)


def test_without_openvino_the_message_says_how_to_install(tiny_model_files: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError) as caught:
        open_backend(tiny_model_files["onnx"], "openvino")
    assert str(caught.value) == MISSING_OPENVINO
    assert "pip install" in str(caught.value) and "\n" not in str(caught.value)


@requires_openvino
def test_fp32_onnx_matches_onnxruntime_and_caches_per_shape(tiny_model_files: dict[str, Path]) -> None:
    rng = np.random.default_rng(0)
    with OpenVinoBackend(tiny_model_files["onnx"], threads=1) as backend:
        assert backend.name == "openvino" and backend.info.name == "tiny" and backend.threads == 1
        for shape in ((1, 3, 32, 48), (2, 3, 16, 16), (1, 3, 32, 48)):
            batch = rng.standard_normal(shape).astype(np.float32)
            logits = backend.infer(batch)
            assert logits.dtype == np.float32 and logits.shape == (shape[0], 3, *shape[2:])
            np.testing.assert_allclose(logits, _ort_logits(tiny_model_files["onnx"], batch), atol=1e-4, rtol=1e-4)
        assert len(backend._requests) == 2, "one compiled model per input shape"


@requires_openvino
def test_int8_qdq_model_runs_close_to_onnxruntime(tiny_int8_onnx: Path) -> None:
    batch = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with open_backend(tiny_int8_onnx, "openvino") as backend:
        logits = backend.infer(batch)
    reference = _ort_logits(tiny_int8_onnx, batch)
    assert (logits.argmax(1) == reference.argmax(1)).mean() > 0.9


@requires_openvino
def test_eight_bit_weights_are_refused_where_int8_products_saturate(tiny_int8_onnx: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    old = write_eight_bit_record(tiny_int8_onnx, tmp_path / "old.int8.onnx")
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: True)
    with pytest.raises(ValueError, match=r"8-bit INT8 weights, which OpenVINO saturates.*backend 'onnxruntime'"):
        OpenVinoBackend(old)
    # A record without 'target' is a CPU one: quantization for TensorRT is the one that says so.
    with pytest.raises(ValueError, match="8-bit INT8 weights"):
        OpenVinoBackend(write_eight_bit_record(tiny_int8_onnx, tmp_path / "untargeted.int8.onnx", drop=("target",)))
    with OpenVinoBackend(tiny_int8_onnx) as backend:  # 7-bit weights: safe on every CPU
        assert backend.precision == "int8"
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: False)
    with OpenVinoBackend(old) as backend:  # a CPU with VNNI adds in int32
        assert backend.precision == "int8"


@requires_openvino
def test_an_int8_file_of_elsewhere_with_eight_bit_weights_is_refused_where_int8_products_saturate(
        tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An INT8 file quantized elsewhere has no unetrt.quantization record: one of 8-bit weights ran on OpenVINO on a
    CPU without VNNI, its products saturating, without a word (only the record was read). Its weights say it now:
    refused there naming what runs it, 7-bit ones run, and any runs where products add in int32."""
    eight_bit = write_int8_of_elsewhere(tiny_model_files["onnx"], tmp_path / "eight.int8.onnx", "tensorrt")
    seven_bit = write_int8_of_elsewhere(tiny_model_files["onnx"], tmp_path / "seven.int8.onnx", "cpu")
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: True)
    with pytest.raises(ValueError, match=r"^eight\.int8\.onnx has 8-bit INT8 weights, which OpenVINO saturates on "
                                         r"this CPU without VNNI .*: quantize its weights to 7 bits .*, or run it "
                                         r"with backend 'onnxruntime', which computes it unfused at about FP32's "
                                         r"speed$"):
        OpenVinoBackend(eight_bit)
    with OpenVinoBackend(seven_bit) as backend:
        assert backend.precision == "int8"
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: False)
    with OpenVinoBackend(eight_bit) as backend:
        assert backend.precision == "int8"


@requires_openvino
def test_the_refusal_of_an_int8_file_of_elsewhere_reads_its_weights_once(
        tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check judged the file by its weights, then its message read them all again to say whether they could be
    read: the weights are read once per opening."""
    import unetrt.model_file

    eight_bit = write_int8_of_elsewhere(tiny_model_files["onnx"], tmp_path / "eight.int8.onnx", "tensorrt")
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: True)
    reads: list[int] = []
    read_graph = unetrt.model_file._graph_int8_peak
    monkeypatch.setattr("unetrt.model_file._graph_int8_peak",
                        lambda *graph: reads.append(len(reads)) or read_graph(*graph))
    with pytest.raises(ValueError, match=r"^eight\.int8\.onnx has 8-bit INT8 weights, which OpenVINO saturates"):
        OpenVinoBackend(eight_bit)
    assert len(reads) == 1


@requires_openvino
def test_an_ir_of_eight_bit_weights_refused_names_its_onnx_file_for_onnx_runtime(
        tiny_int8_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An IR converted from a file in TensorRT's layout or of 8-bit CPU weights was refused naming 'this file' (or
    'it') for backend 'onnxruntime', which refuses an .xml file in turn: the refusal names the .onnx file it came
    from, as it does for an IR quantized elsewhere."""
    from unetrt.backends.openvino import write_ir
    from unetrt.bundled import MODELS_DIR, TENSORRT_INT8_SUFFIX

    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: True)
    tensorrt_ir = write_ir(MODELS_DIR / f"camvid{TENSORRT_INT8_SUFFIX}", tmp_path / "camvid.int8.tensorrt.xml")
    old_ir = write_ir(write_eight_bit_record(tiny_int8_onnx, tmp_path / "old.int8.onnx"), tmp_path / "old.int8.xml")
    for ir in (tensorrt_ir, old_ir):
        with pytest.raises(ValueError, match=r"8-bit (INT8 )?weights") as refused:
            OpenVinoBackend(ir)
        assert str(refused.value).endswith(", or run its .onnx file with backend 'onnxruntime', which computes it "
                                           "unfused at about FP32's speed"), str(refused.value)


@requires_openvino
def test_tensorrt_layout_int8_is_refused_where_int8_products_saturate(monkeypatch: pytest.MonkeyPatch) -> None:
    """camvid.int8.tensorrt.onnx (8-bit weights, for TensorRT's kernels) ran on OpenVINO on a Zen 3 EPYC without a
    word at 53.80 mean IoU, against 62.41 at FP32: its record's target let it past the weight check. Refused
    there, naming the CPU file; where products add in int32 it runs; the automatic choice takes ONNX Runtime, which
    computes it unfused there."""
    from unetrt.bundled import MODELS_DIR, TENSORRT_INT8_SUFFIX
    from unetrt.segmenter import Segmenter

    tensorrt_file = MODELS_DIR / f"camvid{TENSORRT_INT8_SUFFIX}"
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: True)
    with pytest.raises(ValueError, match=r"TensorRT's layout, whose 8-bit weights OpenVINO saturates on this CPU "
                                         r"without VNNI .*: run camvid\.int8\.onnx here \(7-bit weights\), or this "
                                         r"file with backend 'onnxruntime', which computes it unfused at about FP32's "
                                         r"speed$"):
        OpenVinoBackend(tensorrt_file)
    with pytest.warns(RuntimeWarning, match=r"^camvid\.int8\.tensorrt\.onnx has 8-bit INT8 weights, which ONNX "
                                            r"Runtime's fused INT8 kernels saturate .*: it runs unfused"), \
            Segmenter(tensorrt_file, warm_up=False) as segmenter:
        assert (segmenter.backend.name, segmenter.backend.precision) == ("onnxruntime", "int8")
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: False)
    with OpenVinoBackend(tensorrt_file) as backend:  # a CPU with VNNI adds in int32
        assert backend.precision == "int8"


@requires_openvino
def test_ir_keeps_the_model_description(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    from unetrt.backends.openvino import write_ir

    xml = write_ir(tiny_model_files["onnx"], tmp_path / "tiny.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    batch = np.random.default_rng(2).standard_normal((1, 3, 16, 32)).astype(np.float32)
    with open_backend(xml) as backend:
        assert backend.name == "openvino" and backend.info.class_names == ("class0", "class1", "class2")
        np.testing.assert_allclose(backend.infer(batch), _ort_logits(tiny_model_files["onnx"], batch), atol=1e-4)


@requires_openvino
def test_bf16_hint_where_the_cpu_has_it(tiny_model_files: dict[str, Path]) -> None:
    from unetrt.backends.openvino import cpu_has_bf16

    if not cpu_has_bf16():
        with pytest.raises(ValueError, match="no native BF16"):
            OpenVinoBackend(tiny_model_files["onnx"], precision="bf16")
        return
    batch = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with OpenVinoBackend(tiny_model_files["onnx"], precision="bf16") as backend:
        logits = backend.infer(batch)
        compiled = backend._requests[batch.shape][0].get_compiled_model()
        assert backend.precision == "bf16"
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == require_openvino().Type.bf16
    reference = _ort_logits(tiny_model_files["onnx"], batch)
    assert (logits.argmax(1) == reference.argmax(1)).mean() > 0.9


@requires_openvino
@pytest.mark.parametrize("content, message", [(b"not a model at all", "OpenVINO cannot read"),
                                              (b"\x08\x07\x12\x03abc", "OpenVINO cannot read")])
def test_corrupt_file_is_one_value_error(content: bytes, message: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        OpenVinoBackend(broken)
    # The last line of OpenVINO's nested report is the reason; the first ones name its source files.
    assert "\n" not in str(caught.value) and "Exception from" not in str(caught.value)


@requires_openvino
def test_onnx_without_metadata_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["logits"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="unet-export"):
        OpenVinoBackend(tmp_path / "bare.onnx")


@requires_openvino
@pytest.mark.parametrize("kwargs, message", [({"device": "cuda"}, "runs on the CPU"), ({"precision": "int4"}, "fp32"),
                                             ({"threads": 0}, "threads"), ({"lanes": 0}, "lanes")])
def test_bad_options(kwargs: dict[str, object], message: str, tiny_model_files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=message):
        OpenVinoBackend(tiny_model_files["onnx"], **kwargs)  # type: ignore[arg-type]


@requires_openvino
def test_closed_backend_and_bad_batch(tiny_model_files: dict[str, Path]) -> None:
    backend = OpenVinoBackend(tiny_model_files["onnx"])
    with pytest.raises(ValueError, match="channels"):
        backend.infer(np.zeros((1, 1, 16, 16), np.float32))
    backend.close()
    with pytest.raises(ValueError, match="closed"):
        backend.infer(np.zeros((1, 3, 16, 16), np.float32))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_backend(tmp_path / "nothing.xml")


@requires_openvino
def test_backends_share_one_core_so_ctrl_c_after_closing_them_is_a_keyboard_interrupt() -> None:
    # Two INT8 camvid backends alive on one thread, closed in the order they were opened, then Ctrl-C: on a CPU
    # with AMX (where the CPU plugin sets up its alternate signal stack) a Core per backend left the thread's
    # signal stack on freed memory, a segmentation fault.
    model = bundled_model_path("camvid", ".int8.onnx")
    script = f"""
import gc, os, signal, time
import numpy as np
# Python's own Ctrl-C handler even where the test runs in a background job, which starts with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
from unetrt.backends.openvino import OpenVinoBackend
first, second = OpenVinoBackend({str(model)!r}), OpenVinoBackend({str(model)!r})
first.infer(np.zeros((1, 3, 288, 384), np.float32))
second.infer(np.zeros((1, 3, 288, 384), np.float32))
first.close(); second.close()
del first, second
gc.collect()
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
except KeyboardInterrupt:
    print("interrupted")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "interrupted", (done.returncode, done.stderr[-500:])


@requires_openvino
def test_a_batch_is_spread_over_single_threaded_lanes_with_the_same_logits() -> None:
    from unetrt.frame_path import network_input

    path = bundled_model_path("camvid", ".int8.onnx")
    rng = np.random.default_rng(2)
    with OpenVinoBackend(path, threads=2) as backend:
        assert backend.lanes == 2
        frames = [rng.integers(0, 256, (192, 256, 3), dtype=np.uint8) for _ in range(3)]
        batch = network_input(frames, backend.info)
        together = backend.infer(batch)
        lane_shape = tuple(batch.shape[1:])  # one image: channels, height, width
        assert list(backend._lane_requests) == [(lane_shape, 2)], "several images run in the lanes"
        assert len(backend._lane_requests[(lane_shape, 2)][0]) == 2
        alone = np.concatenate([backend.infer(batch[i : i + 1]) for i in range(3)])
        assert list(backend._requests) == [(1, *lane_shape)], "one image runs on every thread at once"
    np.testing.assert_array_equal(together, alone)


@requires_openvino
@pytest.mark.parametrize("options", [{"threads": 1}, {"threads": 2, "lanes": 1}])
def test_one_lane_runs_a_batch_whole(options: dict[str, int], tiny_model_files: dict[str, Path]) -> None:
    with OpenVinoBackend(tiny_model_files["onnx"], **options) as backend:  # type: ignore[arg-type]
        assert backend.lanes == 1
        backend.infer(np.zeros((2, 3, 16, 16), np.float32))
        assert list(backend._requests) == [(2, 3, 16, 16)] and not backend._lane_requests


@requires_openvino
def test_never_more_lanes_than_images(tiny_model_files: dict[str, Path]) -> None:
    batch = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with OpenVinoBackend(tiny_model_files["onnx"], threads=4) as backend:
        assert backend.lanes == 4
        together = backend.infer(batch)
        assert list(backend._lane_requests) == [((3, 16, 16), 2)]
        np.testing.assert_array_equal(together, np.concatenate([backend.infer(batch[:1]), backend.infer(batch[1:])]))


@requires_openvino
@pytest.mark.parametrize("options", [{"threads": 1}, {"threads": 2}])
def test_each_result_is_the_callers_own_array_written_in_place(options: dict[str, int],
                                                               tiny_int8_onnx: Path) -> None:
    rng = np.random.default_rng(4)
    first, second = (rng.standard_normal((2, 3, 32, 48)).astype(np.float32) for _ in range(2))
    with OpenVinoBackend(tiny_int8_onnx, **options) as backend:  # type: ignore[arg-type]
        results = [backend.infer(first), backend.infer(second), backend.infer(first[:1]), backend.infer(second[:1])]
        kept = [result.copy() for result in results]
        backend.infer(first)
        backend.infer(first[:1])
    for result, copy in zip(results, kept):
        assert result.dtype == np.float32 and result.flags.c_contiguous and result.flags.writeable
        np.testing.assert_array_equal(result, copy)  # later calls never write into an earlier result
    assert not any(np.shares_memory(a, b) for i, a in enumerate(results) for b in results[i + 1 :])
    np.testing.assert_array_equal(results[2], results[0][:1])
    with OpenVinoBackend(tiny_int8_onnx, **options) as backend:  # type: ignore[arg-type]
        # A request of the same settings read the way OpenVINO's documentation shows: its own output tensor.
        request = backend.profiled_request((1, 3, 32, 48))
        request.infer({0: second[:1]})
        np.testing.assert_array_equal(results[3], request.get_output_tensor(0).data)


class _CompileSpy:
    """The process's OpenVINO Core, recording the configuration of every compile, and optionally reporting other
    optimisation capabilities (a CPU without BF16) than the host's."""

    def __init__(self, core: Any, capabilities: list[str] | None = None) -> None:
        self.core = core
        self.capabilities = capabilities
        self.configs: list[dict[str, Any]] = []

    def compile_model(self, model: Any, device: str, config: dict[str, Any]) -> Any:
        self.configs.append(dict(config))
        return self.core.compile_model(model, device, config)

    def get_property(self, device: str, name: str) -> Any:
        if name == "OPTIMIZATION_CAPABILITIES" and self.capabilities is not None:
            return self.capabilities
        return self.core.get_property(device, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


def _spy_on_compiles(monkeypatch: pytest.MonkeyPatch, capabilities: list[str] | None = None) -> _CompileSpy:
    from unetrt.backends.openvino import shared_core

    spy = _CompileSpy(shared_core(), capabilities)
    monkeypatch.setattr("unetrt.backends.openvino.shared_core", lambda: spy)
    return spy


@requires_openvino
def test_threads_precision_and_profiling_reach_every_compile(tiny_model_files: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _spy_on_compiles(monkeypatch)
    batch = np.zeros((2, 3, 16, 16), np.float32)
    # 4 threads whatever the host's cores: two images take two lanes, which share the 4 threads out.
    with OpenVinoBackend(tiny_model_files["onnx"], threads=4) as backend:
        backend.infer(batch[:1])
        backend.infer(batch)
        backend.profiled_request((1, 3, 16, 16))
    single, lanes, profiled = spy.configs
    # Unpinned: pinned threads cannot step aside for the capture, writer and other processes of the machine.
    assert single == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32",
                      "ENABLE_CPU_PINNING": False, "INFERENCE_NUM_THREADS": 4}
    assert lanes == {**single, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2", "INFERENCE_NUM_THREADS": 4}
    assert profiled == {**single, "PERF_COUNT": True}


@requires_openvino
def test_bf16_is_refused_on_a_cpu_without_native_bf16(tiny_model_files: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _spy_on_compiles(monkeypatch, ["FP32", "INT8"])  # an AVX2 CPU's capabilities
    with pytest.raises(ValueError, match="precision 'bf16' asked, but this CPU has no native BF16"):
        OpenVinoBackend(tiny_model_files["onnx"], precision="bf16")


@requires_openvino
@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_a_file_precision_other_than_the_files_is_refused(precision: str, tiny_model_files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=rf"tiny.onnx runs at fp32 on backend 'openvino', not '{precision}'"):
        OpenVinoBackend(tiny_model_files["onnx"], precision=precision)


@requires_openvino
def test_close_drops_every_compiled_model(tiny_model_files: dict[str, Path]) -> None:
    backend = OpenVinoBackend(tiny_model_files["onnx"], threads=2)
    backend.infer(np.zeros((1, 3, 16, 16), np.float32))
    backend.infer(np.zeros((2, 3, 16, 16), np.float32))
    assert backend._requests and backend._lane_requests
    backend.close()
    assert not backend._requests and not backend._lane_requests


@requires_openvino
def test_frames_of_ever_new_sizes_keep_a_bounded_number_of_compiled_models(tiny_model_files: dict[str, Path],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every input shape's compiled model was kept for good: a model without a working size (isbi) fed a folder of
    mixed sizes held one more for each new size (about 100 MB each for isbi, 1.5 GB after 12 sizes)."""
    from unetrt.backends.openvino import COMPILED_SHAPES

    spy = _spy_on_compiles(monkeypatch)
    rng = np.random.default_rng(3)
    sides = [16 + 16 * k for k in range(COMPILED_SHAPES + 3)]
    with OpenVinoBackend(tiny_model_files["onnx"], threads=2) as backend:
        for side in sides:
            backend.infer(np.zeros((1, 3, side, side), np.float32))
            backend.infer(np.zeros((2, 3, side, side), np.float32))  # in lanes
        assert len(backend._requests) == COMPILED_SHAPES and len(backend._lane_requests) == COMPILED_SHAPES
        # Two cameras' sizes alternating: each compiled once, then reused.
        front, rear = (rng.standard_normal((1, 3, side, side)).astype(np.float32) for side in (32, 48))
        answers = [backend.infer(batch) for batch in (front, rear)]
        compiled = len(spy.configs)
        for _ in range(3):
            assert all(np.array_equal(backend.infer(batch), answer)
                       for batch, answer in zip((front, rear), answers, strict=True))
        assert len(spy.configs) == compiled
        # A shape dropped long ago is compiled again, with the same logits.
        backend.infer(np.zeros((1, 3, sides[0], sides[0]), np.float32))
        assert len(spy.configs) == compiled + 1
        np.testing.assert_allclose(backend.infer(front), _ort_logits(tiny_model_files["onnx"], front), atol=1e-4,
                                   rtol=1e-4)


@requires_openvino
def test_a_model_of_two_outputs_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    path = write_described_onnx(tmp_path / "two.onnx", [helper.make_node("Relu", ["image"], ["logits"]),
                                                        helper.make_node("Neg", ["image"], ["extra"])],
                                {"logits": TensorProto.FLOAT, "extra": TensorProto.FLOAT})
    with pytest.raises(ValueError, match="has 1 inputs and 2 outputs; a unetrt U-Net has one of each"):
        OpenVinoBackend(path)


@requires_openvino
def test_float16_logits_come_back_as_float32(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    path = write_described_onnx(tmp_path / "half.onnx", [helper.make_node("Relu", ["image"], ["positive"]),
                                                         helper.make_node("Cast", ["positive"], ["logits"],
                                                                          to=TensorProto.FLOAT16)],
                                {"logits": TensorProto.FLOAT16})
    # Multiples of 1/8 below 4: exact in float16, so the logits are max(batch, 0) exactly.
    batch = np.random.default_rng(6).integers(-32, 32, (1, 3, 16, 16)).astype(np.float32) / 8
    with OpenVinoBackend(path) as backend:
        logits = backend.infer(batch)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits, np.maximum(batch, 0))


class _LaneRequest:
    """An infer request of a lane that counts its waits, and whose wait fails when asked to (an inference error)."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.waits = 0

    def set_output_tensor(self, index: int, tensor: Any) -> None:
        pass

    def start_async(self, inputs: dict[int, np.ndarray], share_inputs: bool) -> None:
        pass

    def wait(self) -> None:
        self.waits += 1
        if self.fails:
            raise RuntimeError("inference failed")


@requires_openvino
def test_a_failed_lane_leaves_no_request_running_after_the_call(tiny_model_files: dict[str, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The requests read the caller's batch and write the result in place: the other lane's must be waited for
    # before the error reaches the caller, who may then free or reuse the batch.
    failing, running = _LaneRequest(fails=True), _LaneRequest(fails=False)
    with OpenVinoBackend(tiny_model_files["onnx"], threads=2) as backend:
        monkeypatch.setattr(backend, "_lane_requests_for", lambda shape, count: ([failing, running], (1, 3, 16, 16)))
        with pytest.raises(RuntimeError, match="inference failed"):
            backend.infer(np.zeros((2, 3, 16, 16), np.float32))
    assert failing.waits == 1 and running.waits == 1


@requires_openvino
def test_a_channels_last_input_is_refused_at_open_in_one_line(tmp_path: Path) -> None:
    # Before, OpenVINO's multi-line shape-inference report came at the first frame.
    from onnx import TensorProto, helper

    path = write_described_onnx(tmp_path / "nhwc.onnx",
                                [helper.make_node("Transpose", ["image"], ["logits"], perm=[0, 3, 1, 2])],
                                {"logits": TensorProto.FLOAT}, input_shape=("n", "h", "w", 3),
                                output_shape=("n", 3, "h", "w"))
    with pytest.raises(ValueError, match=r"takes its channels last \(N x H x W x C") as caught:
        OpenVinoBackend(path)
    assert "\n" not in str(caught.value)


@requires_openvino
def test_a_float16_input_network_gives_onnx_runtimes_logits(tmp_path: Path) -> None:
    # Both backends now take a float16 network; before, ONNX Runtime failed on the float32 batch.
    from onnx import TensorProto, helper

    path = write_described_onnx(tmp_path / "half.onnx", [helper.make_node("Relu", ["image"], ["logits"])],
                                {"logits": TensorProto.FLOAT16}, input_shape=("n", 3, "h", "w"),
                                input_type=TensorProto.FLOAT16)
    batch = np.random.default_rng(0).standard_normal((1, 3, 8, 12)).astype(np.float32)
    with OpenVinoBackend(path) as backend:
        np.testing.assert_array_equal(backend.infer(batch), _ort_logits(path, batch))
