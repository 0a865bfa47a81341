"""tools/state_bundled_model.py: ``--add-tensorrt-int8`` takes everything from the statement and nothing else."""

from __future__ import annotations

import pytest
from tool_module import load_tool

pytest.importorskip("torch")


def test_add_tensorrt_int8_refuses_other_options_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool("state_bundled_model")
    with pytest.raises(SystemExit) as stopped:
        tool.main(["camvid", "--add-tensorrt-int8", "--images", "camvid/val", "--calibration-count", "8"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("--add-tensorrt-int8 takes everything from the statement; drop --images, "
                          "--calibration-count")


def test_a_full_statement_still_names_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool("state_bundled_model")
    with pytest.raises(SystemExit):
        tool.main(["camvid", "--images", "camvid/val"])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "the following arguments are required: --run or --checkpoint, --selected-on, --labels, --calibration")


def test_add_tensorrt_int8_refuses_a_model_stated_fp32_on_cpus(capsys: pytest.CaptureFixture[str]) -> None:
    """isbi runs FP32 on CPUs (INT8 costs its cleaned Rand error): it ships no TensorRT INT8 file either."""
    tool = load_tool("state_bundled_model")
    assert tool.main(["isbi", "--add-tensorrt-int8"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "'isbi' is stated fp32 on CPUs (its INT8 costs what cpu_precision.why says): it ships no TensorRT INT8 file; "
        "export one with unet-export --int8 --int8-target tensorrt")
