"""bench_concurrency: one short run writes both result files with every way measured; bad arguments are one-line
errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetrt.benchmarks.bench_concurrency import WAYS, main


def test_short_run_writes_markdown_and_json(tmp_path: Path) -> None:
    assert main(["--callers", "2", "--frames", "2", "--repeats", "1", "--backends", "onnxruntime:int8",
                 "--results-dir", str(tmp_path), "--name", "c"]) == 0
    result = json.loads((tmp_path / "c.json").read_text())
    (row,) = result["rows"]
    assert (row["backend"], row["precision"]) == ("onnxruntime", "int8")
    assert set(row["fps"]) == set(WAYS) and all(v > 0 for v in row["fps"].values())
    assert result["machine"]["cpu_model"] and result["load_average_before"] is not None
    assert "| onnxruntime | int8 |" in (tmp_path / "c.md").read_text()


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--callers", "1", "--results-dir", str(tmp_path)]) == 2
    assert "callers >= 2" in capsys.readouterr().err
    assert main(["--backends", "tensorrt:fp16", "--results-dir", str(tmp_path)]) == 2
    assert "unknown pair" in capsys.readouterr().err
