"""A bundled model's statement (NAME.json) as the runtime reads it: the CPU precision and the stated clean-up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unetrt import bundled
from unetrt.backends import choose_model
from unetrt.postprocess import BinaryCleanup, resolve_cleanup, stated_cleanup

WATERSHED = {"mode": "watershed", "max_hole_area": 400, "seed_threshold": 0.2, "min_seed_area": 10,
             "threshold": 0.1, "lines_threshold": 0.1}
SHIPPED = bundled.MODELS_DIR  # the package's models folder; each test's own is a copy (models_dir)


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder with the bundled isbi's FP32 and INT8 files, whose statement each test writes."""
    for suffix in (".onnx", ".int8.onnx"):
        shutil.copy(bundled.MODELS_DIR / f"isbi{suffix}", tmp_path / f"membranes{suffix}")
    monkeypatch.setattr(bundled, "MODELS_DIR", tmp_path)
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: True)
    return tmp_path


def _state(folder: Path, statement: object) -> None:
    (folder / "membranes.json").write_text(json.dumps(statement))


def test_a_model_without_a_stated_cpu_precision_runs_int8(models_dir: Path) -> None:
    _state(models_dir, {"selected_on": "slices 18-20"})
    assert bundled.bundled_cpu_precision("membranes") == "int8"
    choice = choose_model("membranes", device="cpu")
    assert (choice.path.name, choice.backend, choice.precision) == ("membranes.int8.onnx", "openvino", "int8")


def test_a_model_stated_fp32_runs_fp32_on_a_cpu_unless_int8_is_asked(models_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _state(models_dir, {"cpu_precision": {"precision": "fp32", "why": "INT8 loses the cleaned Rand error"}})
    choice = choose_model("membranes", device="cpu")
    assert (choice.path.name, choice.backend, choice.precision) == ("membranes.onnx", "openvino", "fp32")
    assert choose_model("membranes", "onnxruntime", device="cpu").precision == "fp32"
    assert choose_model("membranes", precision="int8", device="cpu").path.name == "membranes.int8.onnx"
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: False)
    assert choose_model("membranes", device="cpu").backend == "onnxruntime"


def test_tensorrt_builds_int8_from_the_tensorrt_layout_and_a_cpu_runs_the_cpu_layout(models_dir: Path) -> None:
    # Before: TensorRT was handed NAME.int8.onnx, the CPU layout (uint8 with zero points), which it refuses.
    shutil.copy(SHIPPED / "camvid.int8.tensorrt.onnx", models_dir / "membranes.int8.tensorrt.onnx")
    choice = choose_model("membranes", "tensorrt", "int8")
    assert (choice.path.name, choice.backend, choice.precision) == ("membranes.int8.tensorrt.onnx", "tensorrt", "int8")
    assert choose_model("membranes", "tensorrt").path.name == "membranes.onnx"
    for backend in ("onnxruntime", "openvino"):
        assert choose_model("membranes", backend, "int8", device="cpu").path.name == "membranes.int8.onnx"
    assert bundled.bundled_precision_path("membranes", "fp16", "tensorrt") is None  # one FP16 file, not shipped here
    with pytest.raises(ValueError, match="INT8 target must be one of cpu, tensorrt, got 'gpu'"):
        bundled.bundled_precision_path("membranes", "int8", "gpu")


def test_a_model_without_the_tensorrt_layout_offers_its_cpu_int8_file(models_dir: Path) -> None:
    # The build refuses it in one line naming the export that makes one (unetrt.plan_build.check_int8_request).
    assert bundled.bundled_precision_path("membranes", "int8", "tensorrt") is None
    assert choose_model("membranes", "tensorrt", "int8").path.name == "membranes.int8.onnx"


def test_an_unknown_bundled_name_is_one_line_listing_the_bundled_ones(models_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"no bundled model 'membrane' in format '\.onnx'; bundled models: membranes$"):
        choose_model("membrane", device="cpu")


def test_a_model_without_a_statement_runs_int8_and_has_no_cleanup(models_dir: Path) -> None:
    assert bundled.bundled_statement("membranes") == {}
    assert bundled.bundled_cpu_precision("membranes") == "int8"
    assert stated_cleanup("membranes") is None


def test_a_statement_the_runtime_cannot_follow_is_one_line(models_dir: Path) -> None:
    _state(models_dir, {"cpu_precision": {"precision": "int4"}})
    with pytest.raises(ValueError, match="names CPU precision 'int4'"):
        bundled.bundled_cpu_precision("membranes")
    _state(models_dir, {"cleanup": {"settings": {"mode": "watershed", "radius": 3}}})
    with pytest.raises(ValueError, match=r"the statement of 'membranes' .* names a clean-up unetrt does not know"):
        stated_cleanup("membranes")


@pytest.mark.parametrize("statement", [[], "int8", None])
def test_a_statement_that_is_no_json_object_states_nothing(models_dir: Path, statement: object) -> None:
    _state(models_dir, statement)
    assert bundled.bundled_statement("membranes") == {}
    assert bundled.bundled_cpu_precision("membranes") == "int8" and stated_cleanup("membranes") is None


def test_a_statement_that_is_not_json_names_the_file(models_dir: Path) -> None:
    (models_dir / "membranes.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"membranes\.json' is not valid JSON"):
        bundled.bundled_statement("membranes")


def test_stated_resolves_to_the_statements_cleanup_for_a_bundled_name_only(models_dir: Path) -> None:
    _state(models_dir, {"cleanup": {"settings": WATERSHED}})
    assert resolve_cleanup("stated", "membranes") == BinaryCleanup(**WATERSHED)
    assert resolve_cleanup("stated", models_dir / "membranes.onnx") is None  # a file: the user's own model
    assert resolve_cleanup(None, "membranes") is None
    own = BinaryCleanup("fill-holes", max_hole_area=50)
    assert resolve_cleanup(own, "membranes") == own
    assert resolve_cleanup(BinaryCleanup("none"), "membranes") is None  # changes nothing
    with pytest.raises(ValueError, match="cleanup must be a BinaryCleanup, None or 'stated', got 'watershed'"):
        resolve_cleanup("watershed", "membranes")


def test_is_bundled_name() -> None:
    assert bundled.is_bundled_name("isbi") and bundled.is_bundled_name("camvid")
    assert not bundled.is_bundled_name("isbi.onnx") and not bundled.is_bundled_name("models/isbi")
    assert not bundled.is_bundled_name("kitti")


def test_the_segmenter_applies_the_bundled_isbi_cleanup_by_default() -> None:
    import numpy as np

    from unetrt import Segmenter
    from unetrt.stream.stats import describe_runtime, describe_runtime_line

    frame = np.random.default_rng(0).integers(0, 256, (96, 80), dtype=np.uint8)
    stated = stated_cleanup("isbi")
    assert stated is not None
    with Segmenter("isbi", device="cpu", precision="fp32", backend="onnxruntime") as seg:
        assert seg.cleanup == stated
        # A stream's summary says so.
        assert describe_runtime(seg)["cleanup"] == "watershed + cell lines"
        assert describe_runtime_line(describe_runtime(seg)).endswith(", masks cleaned by watershed + cell lines")
        result = seg.segment(frame, probabilities=True)
        assert np.array_equal(result.mask, stated.apply(result.probabilities[0]))
    with Segmenter("isbi", device="cpu", precision="fp32", backend="onnxruntime", cleanup=None) as plain:
        assert plain.cleanup is None
        result = plain.segment(frame, probabilities=True)
        assert np.array_equal(result.mask, (result.probabilities[0] > 0.5).astype(np.uint8))


def test_working_size_probabilities_with_the_stated_cleanup_say_how_to_turn_it_off() -> None:
    import numpy as np

    from unetrt import Segmenter

    frame = np.zeros((64, 64), np.uint8)
    refusal = r"does not go with a cleanup \(watershed, the model's stated one .*cleanup=None\)"
    with Segmenter("isbi", device="cpu", backend="onnxruntime", precision="fp32") as seg, \
            pytest.raises(ValueError, match=refusal):
        seg.segment(frame, probabilities=True, probabilities_size="working")
    with Segmenter("isbi", device="cpu", backend="onnxruntime", precision="fp32", cleanup=None) as seg:
        assert seg.segment(frame, probabilities=True, probabilities_size="working").probabilities is not None
