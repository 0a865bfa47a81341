"""The backend registry: a new backend is one module (toy_backend.py) plus one registration line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from unetrt.backends import Backend, choose_model, open_backend, registry
from unetrt.backends.registry import BackendSpec, BenchRow, backend_names, register_backend
from unetrt.segmenter import Segmenter


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test end with it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _help_texts() -> dict[str, str]:
    from unetrt.batch.cli import build_parser as batch_parser
    from unetrt.benchmarks.bench import build_parser as bench_parser
    from unetrt.doctor import build_parser as doctor_parser
    from unetrt.evaluate import build_parser as eval_parser
    from unetrt.stream.cli import build_parser as stream_parser

    parsers: dict[str, Callable[[], argparse.ArgumentParser]] = {"unet-stream": stream_parser, "unet-eval": eval_parser,
                                                "doctor": doctor_parser, "unet-batch": batch_parser,
                                                "unet-bench": bench_parser}
    # Words only: argparse wraps the help to the terminal's width.
    return {name: " ".join(make().format_help().split()) for name, make in parsers.items()}


def test_built_in_backends_are_registered() -> None:
    from unetrt.backends.openvino import PRECISION_HINTS

    assert backend_names() == ("onnxruntime", "openvino", "torch", "tensorrt")
    assert registry.backend_spec("openvino").hint_precisions == tuple(PRECISION_HINTS)
    for text in _help_texts().values():
        assert all(name in text for name in backend_names())


def test_a_new_backend_is_one_module_and_one_registration_line(private_registry: None,
                                                               tiny_model_files: dict[str, Path]) -> None:
    from unetrt.benchmarks.variants import all_variants, open_variant_backend

    model = tiny_model_files["onnx"]
    with pytest.raises(ValueError, match="unknown backend 'toy'"):
        open_backend(model, "toy")
    assert not any("toy" in text for text in _help_texts().values())

    register_backend(BackendSpec("toy", "toy_backend:open_model", "class 1 everywhere, for tests",
                                 also_runs=(".onnx",), bench_rows=(BenchRow("toy-fp32", "Toy FP32"),)))

    assert choose_model(model, "toy").precision == "fp32"
    with open_backend(model, "toy", threads=2) as backend:
        assert isinstance(backend, Backend)
        assert (backend.name, backend.precision, backend.path, backend.threads) == ("toy", "fp32", model, 2)
    with Segmenter(model, backend="toy") as segmenter:
        mask = segmenter.segment(np.zeros((20, 30, 3), np.uint8)).mask
        assert mask.shape == (20, 30) and (mask == 1).all()
    for name, text in _help_texts().items():
        assert "toy" in text, name
    assert "toy (class 1 everywhere, for tests)" in _help_texts()["unet-stream"]
    variant = all_variants("fp32")["toy-fp32"]
    assert (variant.backend, variant.label, variant.precision) == ("toy", "Toy FP32", "fp32")
    with open_variant_backend(variant, model, "cpu", 1) as backend:
        assert backend.name == "toy"
    with pytest.raises(ValueError, match=r"backend 'toy' cannot run tiny\.pt"):
        choose_model(tiny_model_files["pt"], "toy")


def test_unet_bench_runs_a_registered_backends_rows(private_registry: None, tiny_model_files: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from unetrt.benchmarks.bench import main as bench_main

    register_backend(BackendSpec("toy", "toy_backend:open_model", "class 1 everywhere, for tests",
                                 also_runs=(".onnx",), bench_rows=(BenchRow("toy-fp32", "Toy FP32"),)))
    out = tmp_path / "bench.json"
    assert bench_main(["--engine", str(tiny_model_files["onnx"]), "--backend", "toy", "--shape", "32x32",
                       "--warmup", "1", "--iterations", "2", "--trials", "1", "--threads", "1",
                       "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert (row["variant"], row["status"], row["model_file"]) == ("toy-fp32", "ok", str(tiny_model_files["onnx"]))


def test_a_suffix_a_backend_only_also_runs_does_not_pick_it(private_registry: None, tmp_path: Path) -> None:
    # also_runs: run when asked by name; only suffixes pick a backend under 'auto'.
    register_backend(BackendSpec("toy", "toy_backend:open_model", "class 1 everywhere, for tests",
                                 also_runs=(".toy",)))
    model = tmp_path / "m.toy"
    model.write_bytes(b"toy weights")
    assert registry.native_backend(".toy") is None
    with pytest.raises(ValueError, match=r"cannot tell the backend of '.*m\.toy'"):
        choose_model(model)


def test_registration_refuses_a_taken_name_and_a_bad_opener(private_registry: None) -> None:
    with pytest.raises(ValueError, match="'onnxruntime' is taken"):
        register_backend(BackendSpec("onnxruntime", "somewhere:open_model", "a second one"))
    with pytest.raises(ValueError, match="'auto' is taken"):
        register_backend(BackendSpec("auto", "somewhere:open_model", "a keyword"))
    with pytest.raises(ValueError, match="must be 'module:function'"):
        register_backend(BackendSpec("nowhere", "somewhere.open_model", "no colon"))
    register_backend(BackendSpec("broken", "toy_backend:NO_SUCH_FUNCTION", "an opener that is not there",
                                 also_runs=(".onnx",)))
    with pytest.raises(ValueError, match="opener 'toy_backend:NO_SUCH_FUNCTION' is not a function"):
        registry.backend_spec("broken").load_opener()
