"""tools/label_ceiling.py: the labels' own round trip through a working size, per class."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from tool_module import load_tool

label_ceiling = load_tool("label_ceiling")


def test_at_the_labels_own_size_both_round_trips_are_exact() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (12, 16), dtype=np.uint8)
    for method in label_ceiling.METHODS:
        np.testing.assert_array_equal(label_ceiling.round_trip(label, (16, 12), 4, method), label)


def test_fractions_keep_a_pole_that_nearest_neighbour_drops() -> None:
    label = np.zeros((30, 60), np.uint8)
    label[:, 4:6] = 1  # 2 px of 60; at 20 px, between nearest neighbour's source columns 3 and 6
    fractions = label_ceiling.round_trip(label, (20, 10), 2, "fractions")
    nearest = label_ceiling.round_trip(label, (20, 10), 2, "nearest")
    assert (fractions[:, 4] == 1).all() and nearest.sum() == 0
    # The finish is bilinear: small column 1 (frame columns 3-5) holds 2/3 pole; back at frame columns 3 and 5
    # it blends to 2/3 * 2/3 = 4/9 pole against 5/9 road, so only column 4 stays pole.
    assert fractions[0, 3:6].tolist() == [0, 1, 0]


def _camvid(root: Path) -> Path:
    classes = [{"id": i, "name": f"c{i}", "color": [60 * i, 0, 0]} for i in range(2)]
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    (root / "classes.json").write_text(json.dumps({"ignore_index": 2, "classes": classes}))
    for frame in (10, 11):
        label = np.zeros((30, 60), np.uint8)
        label[:, 4:6] = 1
        label[0, 0] = 2
        cv2.imwrite(str(root / "val" / f"0016E5_{frame:05d}.png"), np.zeros((30, 60, 3), np.uint8))
        cv2.imwrite(str(root / "valannot" / f"0016E5_{frame:05d}.png"), label)
    split = root / "split.json"
    split.write_text(json.dumps({"guard_frames": 0, "select": ["0016E5:00010-00010"],
                                 "report": ["0016E5:00011-00011"]}))
    return split


def test_the_command_prints_and_writes_both_ceilings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = _camvid(tmp_path / "camvid")
    out = tmp_path / "ceiling.json"
    assert label_ceiling.main(["--split", str(split), "--data", str(tmp_path / "camvid"), "--size", "20x10",
                               "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 labels of select,report, at 20x10 and back" in printed
    figures = json.loads(out.read_text())["iou"]
    assert figures["fractions"][1] > 0.3 and figures["nearest"][1] == 0.0
    # The printed mean is over both classes, as written to the file.
    for method, ious in figures.items():
        assert f"{method:9s} mean IoU {100 * float(np.mean(ious)):.1f}: c0 " in printed
    assert figures["fractions"][0] != figures["fractions"][1]


def test_a_bad_size_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = _camvid(tmp_path / "camvid")
    with pytest.raises(SystemExit) as raised:
        label_ceiling.main(["--split", str(split), "--data", str(tmp_path / "camvid"), "--size", "32"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "WIDTHxHEIGHT" in err and err.count("\n") == 1
