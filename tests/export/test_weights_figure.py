"""unet-weights draws a PNG for binary and multi-class folders and fails cleanly on bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from test_train import make_camvid, make_isbi  # pytest puts this folder on sys.path

from unetrt.export.weights_figure import main


def test_binary_and_multiclass_figures(tmp_path: Path) -> None:
    isbi = make_isbi(tmp_path / "isbi", slices=3)
    camvid = make_camvid(tmp_path / "camvid")
    for images, labels, out in ((isbi / "images", isbi / "labels", tmp_path / "isbi.png"),
                                (camvid / "train", camvid / "trainannot", tmp_path / "camvid.png")):
        assert main(["--images", str(images), "--labels", str(labels), "-o", str(out), "--samples", "2"]) == 0
        figure = cv2.imread(str(out))
        assert figure is not None and figure.shape[1] > figure.shape[0] > 100  # two rows of four panels


def test_missing_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--images", str(tmp_path / "nope"), "--labels", str(tmp_path), "-o", str(tmp_path / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "words"), [
    (["-o", "LABEL"], "is a file of the input folder"),
    (["--dpi", "100000"], "--dpi must be from 10 to 600"),
    (["--size", "100000x100000"], "--size 100000x100000 is too large"),
    (["--sigma", "nan"], "--sigma must be a finite number"),
    (["--w0", "inf"], "--w0 must be a finite number"),
    (["--samples", "0"], "--samples must be from 1 to 50"),
    (["-o", "FOLDER"], "it is an existing folder"),
])
def test_bad_settings_are_one_line_and_touch_no_file(flags: list[str], words: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    isbi = make_isbi(tmp_path / "isbi", slices=2)
    label = sorted((isbi / "labels").iterdir())[0]
    before = label.read_bytes()
    (tmp_path / "a-folder").mkdir()
    flags = [{"LABEL": str(label), "FOLDER": str(tmp_path / "a-folder")}.get(flag, flag) for flag in flags]
    argv = ["--images", str(isbi / "images"), "--labels", str(isbi / "labels"), "-o", str(tmp_path / "w.png"), *flags]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert label.read_bytes() == before and not (tmp_path / "w.png").exists()
