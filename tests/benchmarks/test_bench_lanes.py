"""bench_lanes: one short run writes both result files with the three ways; bad arguments exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from unetrt.benchmarks import bench_lanes
from unetrt.benchmarks.bench_lanes import main
from unetrt.benchmarks.stats import LatencyStats, summarize
from unetrt.bundled import MODELS_DIR
from unetrt.geometry import nearest_legal_sizes

pytest.importorskip("openvino")


def test_short_run_writes_markdown_and_json(shared_data: Path, tmp_path: Path) -> None:
    assert main(["--frames", str(shared_data / "camvid" / "val"), "--images", "2", "--trials", "1",
                 "--iterations", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "lanes_cpu.json").read_text())
    assert set(result["latency_ms"]) == {"lanes", "one_request", "one_by_one"}
    width, height = json.loads((MODELS_DIR / "camvid.json").read_text())["working_size"]["stated"]
    # the network input is the working size mirror-padded to the next sizes the 5-level U-Net takes
    network_hw = [nearest_legal_sizes(side)[1] for side in (height, width)]
    assert result["lanes"] == 2 and result["network_input_hw"] == network_hw
    assert result["lanes_speedup_over_one_request"] == pytest.approx(
        result["per_image_ms"]["one_request"] / result["per_image_ms"]["lanes"])
    assert "Lanes:" in (tmp_path / "lanes_cpu.md").read_text()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    assert main(["--images", "1", "--out", str(tmp_path)]) == 2
    assert main(["--frames", str(tmp_path), "--out", str(tmp_path)]) == 2


def test_missing_frames_name_the_option_that_gives_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The default folder (../shared/data/camvid/val) missing was "image folder ... does not exist": no option named.
    missing = tmp_path / "camvid" / "val"
    assert main(["--frames", str(missing), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --frames folder {str(missing)!r} does not exist\n"


class _FakeBackend:
    """Stands in for OpenVinoBackend: records the lanes asked for and the batch size of every infer call."""

    made: ClassVar[list[_FakeBackend]] = []

    def __init__(self, model: Path, threads: int, lanes: int | None = None) -> None:
        from conftest import tiny_info

        self.asked_lanes, self.lanes, self.info = lanes, lanes or threads, tiny_info()
        self.calls: list[int] = []
        _FakeBackend.made.append(self)

    def __enter__(self) -> _FakeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        return np.zeros((len(batch), 3, *batch.shape[2:]), np.float32)


def test_each_way_runs_on_its_own_backend_and_figures_are_per_image(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(2):
        cv2.imwrite(str(tmp_path / f"frame{index}.png"), np.full((32, 48, 3), 60 * index, np.uint8))
    # per call: lanes 20 ms, one request 30 ms, one by one 60 ms for the 2 images
    per_call = {"lanes": 20.0, "one_request": 30.0, "one_by_one": 60.0}

    def fake_time_interleaved(actions: dict[str, Callable[[], object]], *args: object) -> dict[str, LatencyStats]:
        for action in actions.values():
            action()
        return {name: summarize([[per_call[name]]]) for name in actions}

    _FakeBackend.made = []
    monkeypatch.setattr(bench_lanes, "OpenVinoBackend", _FakeBackend)
    monkeypatch.setattr(bench_lanes, "time_interleaved", fake_time_interleaved)
    out = tmp_path / "out"
    assert main(["--frames", str(tmp_path), "--images", "2", "--trials", "1", "--iterations", "1", "--threads", "2",
                 "--out", str(out)]) == 0
    lanes, whole = _FakeBackend.made
    assert (lanes.asked_lanes, whole.asked_lanes) == (None, 1)  # the 'one request' way is one request
    # lanes: the equality check, then its timed call; one request: the check, its call, then each image alone
    assert lanes.calls == [2, 2] and whole.calls == [2, 2, 1, 1]
    result = json.loads((out / "lanes_cpu.json").read_text())
    assert result["per_image_ms"] == {"lanes": 10.0, "one_request": 15.0, "one_by_one": 30.0}
    # 15 / 10 and 30 / 10
    assert (result["lanes_speedup_over_one_request"], result["lanes_speedup_over_one_by_one"]) == (1.5, 3.0)
