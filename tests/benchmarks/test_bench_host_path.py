"""bench_host_path: one short run writes both result files for every kind of frame; bad arguments are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetrt.benchmarks.bench_host_path import KINDS, main


def test_short_run_writes_markdown_and_json(tmp_path: Path) -> None:
    out = tmp_path / "host"
    assert main(["--frames", "1", "--trials", "2", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["frame_hw"] == [360, 480] and result["working_hw"] == [168, 224]
    assert set(result["ms"]) == {f"{stage} {kind}" for stage in ("path", "resize") for kind in KINDS}
    assert all(stats["median"] > 0 for stats in result["ms"].values())
    # The resize is a part of the path's work.
    assert all(result["ms"][f"resize {kind}"]["median"] < result["ms"][f"path {kind}"]["max"] for kind in KINDS)
    text = out.with_suffix(".md").read_text()
    assert all(f"| {kind} |" in text for kind in KINDS)


@pytest.mark.parametrize("option", ["--frames", "--trials", "--threads"])
def test_bad_counts_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    assert main([option, "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
