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
