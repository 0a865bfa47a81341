"""Fixtures shared by the whole suite: the shared data sets and tiny models made on the fly."""

from __future__ import annotations

import gc
import importlib.util
import os
import signal
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from unetrt.dropped import wait_for_releases
from unetrt.model_info import ModelInfo

_RUNNER = os.getpid()
_process_exit = os._exit


def _exit_outside_the_runner(code: int) -> None:
    """``os._exit`` for a forked child; in the test runner's own process, a test failure instead."""
    if os.getpid() != _RUNNER:
        _process_exit(code)
    raise AssertionError(f"os._exit({code}) in the test runner's process: a command's main() called in-process left "
                         "the interpreter (unet-stream after a hung read); the run would have ended there with that "
                         "exit code, every later test unrun")


def pytest_configure(config: pytest.Config) -> None:
    """Tests stop unet-stream children with Ctrl-C (SIGINT). A shell's background job starts with SIGINT ignored,
    and an ignored signal stays ignored across exec in every child, which then never stops; a handled one is reset
    to the default there. So the suite handles it, however it was started.

    Tests call the commands' ``main()`` in-process, and ``unet-stream``'s leaves with ``os._exit`` where a read is
    still hung: a defect that left one hung ended a run half-way with exit code 0 (found by a mutation audit), so
    the runner's own process turns ``os._exit`` into the failure of the test that reached it."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os._exit = _exit_outside_the_runner


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what the imports made (torch, OpenVINO, the test modules: about 200,000 objects, alive to the end) out
    of the collector's reach, so that a full collection scans only what the tests make: one took 0.15 s, and one
    runs after every GPU contract test (below) besides the interpreter's own (Python documentation, ``gc.freeze``:
    "move them to a permanent generation and ignore them in all the future collections")."""
    gc.collect()
    gc.freeze()


_FROZEN_BEFORE: set[Path] = set()  # the test files whose first GPU contract test froze the objects alive


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the first GPU contract test of a file (before its fixtures), freeze what earlier tests left alive and
    imported (the fakes, ONNX, the backends: in the whole suite a collection still took 0.13 s), so that the
    collection after each of its tests (below) scans only what this file's tests make."""
    if item.get_closest_marker("gpu_contract") is not None and item.path not in _FROZEN_BEFORE:
        _FROZEN_BEFORE.add(item.path)
        gc.collect()
        gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A segmenter a test drops without close() is released on unetrt's release thread: wait for that while the
    test's fakes are still installed, not during a later test (on the fake GPU also for segmenters in reference
    cycles, which only the collector finds: about 13 ms a collection with the imports' objects frozen, too much for
    every test)."""
    yield
    if item.get_closest_marker("gpu_contract") is not None:
        gc.collect()
    assert wait_for_releases(60), "a dropped object's release did not end within 60 s"


def tensorrt_gpu_present() -> bool:
    """Whether TensorRT's real bindings, pycuda and an NVIDIA GPU are all present."""
    from unetrt.backends.tensorrt import tensorrt_available

    if not tensorrt_available():
        return False
    import pycuda.driver as cuda

    try:
        cuda.init()
    except cuda.Error:
        return False
    return bool(cuda.Device.count() > 0)


requires_tensorrt_gpu = pytest.mark.skipif(not tensorrt_gpu_present(),
                                           reason="needs TensorRT, pycuda and an NVIDIA GPU")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def scratch_engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """TensorRT engines built by tests (on a GPU machine, any Segmenter of an .onnx) go to a scratch folder, never
    the user's cache (unetrt.plan_cache reads UNETRT_ENGINE_CACHE; subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("engines")
    patch = pytest.MonkeyPatch()
    patch.setenv("UNETRT_ENGINE_CACHE", str(folder))
    yield folder
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def outside_any_container() -> Iterator[None]:
    """The tests' engine caches are scratch folders: the note for a cache inside a throwaway container (this
    machine, or CI, may well be one) is tested where a test asks for it, not on every first build."""
    from unetrt import plan_cache

    patch = pytest.MonkeyPatch()
    patch.setattr(plan_cache, "CONTAINER_MARKERS", ())
    yield
    patch.undo()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def tiny_info(num_classes: int = 3, in_channels: int = 3, padding: str = "same", depth: int = 3,
              working_size: tuple[int, int] | None = None) -> ModelInfo:
    """A small model description for tests (base 4)."""
    names = tuple(f"class{i}" for i in range(num_classes))
    colors = tuple((40 * i % 256, 90 * i % 256, 160 * i % 256) for i in range(num_classes))
    return ModelInfo(class_names=names, colors=colors, in_channels=in_channels,
                     mean=(0.5,) * in_channels, std=(0.25,) * in_channels, padding=padding, depth=depth,
                     base=4, working_size=working_size, name="tiny", extra={"dropout": [0.0] * depth})


TINY_MODELS_ENV = "UNETRT_TEST_TINY_MODELS"


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random tiny multi-class U-Net saved as .pt and exported as .onnx (needs torch). Without torch, the .onnx
    made by another Python with torch (``scripts/check_python.sh``: a Python 3.10 or 3.12 venv as JetPack 6's or
    7's, where no CPU build of torch can be installed) from the folder in ``UNETRT_TEST_TINY_MODELS``; tests of the
    .pt skip."""
    made = os.environ.get(TINY_MODELS_ENV)
    if made and importlib.util.find_spec("torch") is None:
        return _OnnxOnly(onnx=Path(made) / "tiny.onnx")
    pytest.importorskip("torch")
    return write_tiny_model_files(tmp_path_factory.mktemp("tiny_model"))


class _OnnxOnly(dict[str, Path]):
    """The tiny model files without torch: asking for the .pt skips the test."""

    def __missing__(self, key: str) -> Path:
        pytest.skip(f"the tiny .{key} model needs torch")


def write_tiny_model_files(folder: Path) -> dict[str, Path]:
    """Write the tiny U-Net (seed 0) as ``folder/tiny.pt`` and ``folder/tiny.onnx`` (needs torch)."""
    import torch

    from unetrt.export.checkpoint import build_model, save_checkpoint
    from unetrt.export.onnx_export import export_onnx

    torch.manual_seed(0)
    info = tiny_info()
    model = build_model(info).eval()
    save_checkpoint(folder / "tiny.pt", model, info)
    export_onnx(model, info, folder / "tiny.onnx")
    return {"pt": folder / "tiny.pt", "onnx": folder / "tiny.onnx"}


@pytest.fixture(scope="session")
def tiny_int8_onnx(tiny_model_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model quantized to QDQ INT8 (MinMax) on random calibration batches, as ``tiny.int8.onnx`` in a
    folder of its own (beside tiny.onnx it would add INT8 rows wherever the tiny model is benchmarked)."""
    pytest.importorskip("onnx")
    import numpy as np

    from unetrt.export.quantize import quantize_onnx

    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 32, 48)).astype(np.float32) for _ in range(4)]
    folder = tmp_path_factory.mktemp("tiny_int8")
    return quantize_onnx(tiny_model_files["onnx"], folder / "tiny.int8.onnx", batches, "minmax")


def write_eight_bit_record(int8_onnx: Path, destination: Path, drop: tuple[str, ...] = ()) -> Path:
    """An INT8 file as unet-export wrote it before its CPU weights were 7 bits: the same graph, its quantization
    record saying 8-bit weights (without the entries in ``drop``)."""
    import json

    import onnx

    from unetrt.model_file import SEVEN_BIT_WEIGHTS

    proto = onnx.load(str(int8_onnx))
    for prop in proto.metadata_props:
        if prop.key == "unetrt.quantization":
            record = json.loads(prop.value)
            assert record["weights"] == SEVEN_BIT_WEIGHTS, record
            record = {key: value for key, value in record.items() if key not in drop}
            prop.value = json.dumps({**record, "weights": "int8 symmetric per channel"})
    onnx.save(proto, str(destination))
    return destination


def write_int8_of_elsewhere(tiny_fp32_onnx: Path, destination: Path, target: str) -> Path:
    """An INT8 file quantized elsewhere: the tiny model through ONNX Runtime's quantize_static (unet-export's
    quantization for ``target``: 7-bit weights for 'cpu', 8-bit for 'tensorrt') with its description written on, as
    docs/models.md's network from elsewhere, but no ``unetrt.quantization`` record."""
    import numpy as np
    import onnx

    from unetrt.export.quantize import quantize_onnx

    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 32, 48)).astype(np.float32) for _ in range(4)]
    quantize_onnx(tiny_fp32_onnx, destination, batches, "minmax", target)
    proto = onnx.load(str(destination))
    kept = [prop for prop in proto.metadata_props if prop.key != "unetrt.quantization"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(destination))
    return destination


@pytest.fixture(scope="session")
def tiny_fp16_onnx(tiny_model_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model converted to an FP16 graph (``unet-export --precision fp16``'s conversion), alone in a folder."""
    pytest.importorskip("onnxconverter_common")
    import onnx

    from unetrt.export.fp16 import convert_to_fp16

    path = tmp_path_factory.mktemp("tiny_fp16") / "tiny.fp16.onnx"
    onnx.save(convert_to_fp16(onnx.load(str(tiny_model_files["onnx"]))), str(path))
    return path


def write_described_onnx(path: Path, nodes: list[Any], outputs: dict[str, int], domains: tuple[str, ...] = (),
                         input_shape: Sequence[int | str] = (1, 3, 16, 16), input_type: int | None = None,
                         output_shape: Sequence[int | str] | None = None) -> Path:
    """An ONNX graph of ``nodes`` (opset 17, plus version 1 of each of ``domains``) from an input 'image' of
    ``input_shape`` (names are dynamic dimensions) and ONNX element type ``input_type`` (None: float) to ``outputs``
    (name: ONNX element type, each of ``output_shape``, by default the input's), described as the tiny model."""
    import onnx
    from onnx import TensorProto, helper

    from unetrt.model_file import write_onnx_description

    kind_in = TensorProto.FLOAT if input_type is None else input_type
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", kind_in, list(input_shape))],
                              [helper.make_tensor_value_info(name, kind, list(output_shape or input_shape))
                               for name, kind in outputs.items()])
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(domain, 1) for domain in domains)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # as the bundled models: older ONNX Runtimes (JetPack's, Python 3.10) refuse newer IRs first
    write_onnx_description(model, tiny_info())
    onnx.save(model, str(path))
    return path


def write_unparsable_onnx(path: Path) -> Path:
    """A model file with unetrt metadata whose one node ('mystery', op NoSuchOp) no ONNX importer knows."""
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["image"], ["logits"], name="mystery", domain="unetrt.test")
    return write_described_onnx(path, [node], {"logits": TensorProto.FLOAT}, domains=("unetrt.test",))
