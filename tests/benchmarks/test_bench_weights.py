"""bench_weights: the label files and trials asked for, each map kind timed as itself, size and objects named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from unetrt.benchmarks import bench_weights


def _labels(folder: Path) -> Path:
    """Three 40x30 masks (0/255) holding 2, 3 and 4 square cells, named so they list in that order."""
    folder.mkdir()
    for index, cells in enumerate((2, 3, 4)):
        mask = np.zeros((30, 40), np.uint8)
        for cell in range(cells):
            mask[2:8, 2 + 9 * cell : 8 + 9 * cell] = 255
        cv2.imwrite(str(folder / f"{index:02d}.png"), mask)
    return folder


def test_each_kind_times_its_own_map_over_the_maps_and_trials_asked(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    kinds: list[str] = []
    real = bench_weights.weight_map

    def recording(mask: np.ndarray, kind: str, **kwargs: Any) -> np.ndarray:
        kinds.append(kind)
        return real(mask, kind, **kwargs)

    monkeypatch.setattr(bench_weights, "weight_map", recording)
    data = bench_weights.bench(_labels(tmp_path / "labels"), maps=2, trials=3)
    # 2 maps x 3 trials of the distance map, then as many of the size map.
    assert kinds == ["distance"] * 6 + ["size"] * 6
    assert data["maps"] == 2 and data["size"] == "40x30"
    # The first two files hold 2 and 3 cells; the third (4) is beyond --maps.
    assert data["objects_per_map"] == {"min": 2, "max": 3}
    timing = data["ms_per_map"]
    assert isinstance(timing, dict) and len(timing["size"]["trial_medians"]) == 3


def test_the_command_writes_both_files_naming_the_machine(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert bench_weights.main(["--labels", str(_labels(tmp_path / "labels")), "--maps", "3", "--trials", "1",
                               "--out", str(out)]) == 0
    (json_path,) = out.glob("weights_*.json")
    data = json.loads(json_path.read_text())
    assert data["maps"] == 3 and data["objects_per_map"] == {"min": 2, "max": 4}
    report = json_path.with_suffix(".md").read_text()
    assert "40x30 ISBI labels (3 maps, 2-4 objects)" in report and data["machine"]["cpu_model"] in report


@pytest.mark.parametrize(("argv", "words"), [(["--maps", "0"], "got 0 and 1"), (["--trials", "0"], "got 1 and 0")])
def test_nothing_to_time_is_one_line_naming_the_flags(argv: list[str], words: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # It was summarize's message, which told the user to raise --iterations or --duration: flags of unet-bench.
    out = tmp_path / "results"
    assert bench_weights.main(["--labels", str(_labels(tmp_path / "labels")), "--maps", "1", "--trials", "1", *argv,
                               "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --maps and --trials must be at least 1, {words}\n"
    assert not out.exists()


def test_missing_labels_name_the_option_that_gives_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Its default, ../shared/data/isbi2012-em/labels, missing was "image folder ... does not exist".
    missing = tmp_path / "labels"
    assert bench_weights.main(["--labels", str(missing), "--out", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err == f"error: --labels folder {str(missing)!r} does not exist\n"
