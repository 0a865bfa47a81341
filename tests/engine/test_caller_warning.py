"""unetrt's warnings name the caller's own line, however deep in unetrt they are raised."""

from __future__ import annotations

import inspect
import threading
import warnings
from pathlib import Path

import pytest
from conftest import write_eight_bit_record

from unetrt import Segmenter
from unetrt.backends.onnxruntime import OnnxRuntimeBackend
from unetrt.caller_warning import warn_caller


@pytest.fixture
def eight_bit_file(tiny_int8_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An INT8 file of 8-bit weights on a CPU taken for one without VNNI: opening it on ONNX Runtime warns."""
    monkeypatch.setattr("unetrt.model_file.int8_products_saturate", lambda: True)
    return write_eight_bit_record(tiny_int8_onnx, tmp_path / "eight.int8.onnx")


def test_the_unfused_int8_warning_names_the_callers_line_from_segmenter_and_from_the_backend(
        eight_bit_file: Path) -> None:
    """The warning is raised four calls deep under OnnxRuntimeBackend and deeper under Segmenter (the registry's
    opener between): a fixed stacklevel named a line of unetrt's for at least one of them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        Segmenter(eight_bit_file, backend="onnxruntime").close()
        OnnxRuntimeBackend(eight_bit_file, device="cpu").close()
    said = [(warning.filename, warning.lineno) for warning in caught if "8-bit INT8 weights" in str(warning.message)]
    assert said == [(__file__, line), (__file__, line + 1)], said


def test_a_warning_in_a_thread_unetrt_started_names_unetrts_outermost_frame_not_threadings() -> None:
    caught: list[warnings.WarningMessage] = []

    def record() -> None:
        with warnings.catch_warnings(record=True) as inside:
            warnings.simplefilter("always")
            warn_caller("from a worker")
        caught.extend(inside)

    # A target of unetrt's own: warn_caller's module stands in for it (its folder is unetrt's).
    record.__code__ = record.__code__.replace(co_filename=inspect.getfile(warn_caller))
    worker = threading.Thread(target=record)
    worker.start()
    worker.join(60)
    assert [(w.filename, str(w.message)) for w in caught] == [(inspect.getfile(warn_caller), "from a worker")]
