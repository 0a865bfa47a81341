"""bench_host_path: one short run writes both result files for every kind of frame; bad arguments are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unetrt.benchmarks import bench_host_path
from unetrt.benchmarks.bench_host_path import KINDS, frame_kinds, main
from unetrt.device import resize_frame


def test_short_run_writes_markdown_and_json(tmp_path: Path) -> None:
    out = tmp_path / "host"
    assert main(["--frames", "1", "--trials", "2", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["frame_hw"] == [360, 480] and result["working_hw"] == [168, 224]
    assert set(result["ms"]) == {f"{stage} {kind}" for stage in ("path", "resize") for kind in KINDS}
    assert all(stats["median"] > 0 for stats in result["ms"].values())
    text = out.with_suffix(".md").read_text()
    assert all(f"| {kind} |" in text for kind in KINDS)


@pytest.mark.parametrize("option", ["--frames", "--trials", "--threads"])
def test_bad_counts_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    assert main([option, "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_each_kind_is_the_frame_a_camera_of_that_kind_gives() -> None:
    """uint16 spans 0..65535 (a 16-bit camera's white is 65535, not 65280), float32 0..1, and the gray kind is one
    channel."""
    kinds = frame_kinds(np.full((2, 2, 3), 255, np.uint8))
    assert int(kinds["uint16"].max()) == 65535 and float(kinds["float32"].max()) == 1.0
    assert kinds["gray uint8"].shape == (2, 2) and kinds["uint8"].shape == (2, 2, 3)


def test_the_kinds_alternate_their_order_and_resize_to_the_working_size(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The resize alone is timed at camvid's working size for each kind, in the order of KINDS on even trials and
    reversed on odd ones (so a change in a shared machine's load hits every kind alike), and the Markdown rows give
    the JSON's medians and p90s in their columns."""
    calls: list[tuple[str, tuple[int, int]]] = []
    kind_of = {("uint8", 3): "uint8", ("uint16", 3): "uint16", ("float32", 3): "float32", ("uint8", 2): "gray uint8"}

    def recorded(frame: np.ndarray, work_hw: tuple[int, int], threads: int = 1) -> np.ndarray:
        calls.append((kind_of[(frame.dtype.name, frame.ndim)], work_hw))
        return resize_frame(frame, work_hw, threads)

    monkeypatch.setattr(bench_host_path, "resize_frame", recorded)
    out = tmp_path / "host"
    assert main(["--frames", "1", "--trials", "2", "--out", str(out)]) == 0
    assert [kind for kind, _ in calls] == [*KINDS, *KINDS[::-1]]
    assert {work_hw for _, work_hw in calls} == {(168, 224)}
    ms = json.loads(out.with_suffix(".json").read_text())["ms"]
    text = out.with_suffix(".md").read_text()
    for kind in KINDS:
        path, resize = ms[f"path {kind}"], ms[f"resize {kind}"]
        assert (f"| {kind} | {path['median']:.3f} | {path['p90']:.3f} | {resize['median']:.3f} | "
                f"{resize['p90']:.3f} |") in text, text
