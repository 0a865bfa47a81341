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
