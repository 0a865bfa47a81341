"""unet-weights draws a PNG for binary and multi-class folders and fails cleanly on bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_train import make_camvid, make_isbi  # pytest puts this folder on sys.path

from unetrt.export.weights_figure import MAX_DPI, MAX_SAMPLES, MIN_DPI, check_figure_settings, main


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


def test_the_limits_themselves_are_accepted(tmp_path: Path) -> None:
    # Each bound is inclusive: 50 samples, 10 dpi, a w0 of 0 (no border term) are all drawable.
    check_figure_settings(tmp_path / "w.png", tmp_path / "images", tmp_path / "labels", MAX_SAMPLES, None, 0.0, 5.0,
                          MIN_DPI)
    check_figure_settings(tmp_path / "w.png", tmp_path / "images", tmp_path / "labels", 1, None, 10.0, 5.0, MAX_DPI)


def test_every_option_reaches_the_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isbi = make_isbi(tmp_path / "isbi", slices=2)
    module = sys.modules[main.__module__]
    shapes: list[tuple[int, ...]] = []
    settings: list[tuple[float, float]] = []

    def distance(label: np.ndarray, *args: object, w0: float, sigma: float, **kwargs: object) -> np.ndarray:
        shapes.append(label.shape)
        settings.append((w0, sigma))
        return np.ones(label.shape)

    monkeypatch.setattr(module, "distance_weight_map", distance)
    out = tmp_path / "w.png"
    assert main(["--images", str(isbi / "images"), "--labels", str(isbi / "labels"), "-o", str(out), "--samples", "1",
                 "--size", "24x16", "--w0", "3", "--sigma", "7", "--dpi", "20"]) == 0
    assert shapes == [(16, 24)] and settings == [(3.0, 7.0)]
    # One row of 16 x 3.6 inches at 20 dots an inch: 320 x 72 pixels.
    assert cv2.imread(str(out)).shape[:2] == (72, 320)
    # The figure is closed once written: a long-lived caller does not pile them up.
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


@pytest.mark.parametrize(("fill", "shade"), [(255, 1.0), (0, 0.0)])
def test_a_mask_of_one_value_is_drawn_in_that_values_shade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             fill: int, shade: float) -> None:
    # The panel says "white = cell". A label all cell (a crop inside one cell) has a single value, which imshow's
    # own scaling drew black, as if it were all membrane.
    import matplotlib.pyplot as plt

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "00.png"), np.full((16, 16), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "labels" / "00.png"), np.full((16, 16), fill, np.uint8))
    figures: list[plt.Figure] = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its panels
    assert main(["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                 "-o", str(tmp_path / "w.png"), "--samples", "1"]) == 0
    mask = figures[0].axes[1].images[0]
    assert mask.to_rgba(mask.get_array())[0, 0].tolist() == [shade, shade, shade, 1.0]


def test_a_mask_of_ids_0_and_1_is_drawn_as_the_cell_mask_training_reads(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # unet-train reads a label of ids 0 and 1 as a binary cell mask, as it reads a 0/255 one. The figure took it
    # for class ids: the mask panel all black ("black = ignored") and the border term inside the cells as well.
    import matplotlib.pyplot as plt

    from unetrt.export.weights import distance_weight_map

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[2:7, 2:7] = mask[2:7, 9:14] = 1  # two cells 2 px apart
    cv2.imwrite(str(tmp_path / "images" / "00.png"), np.full((16, 16), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "labels" / "00.png"), mask)
    figures: list[plt.Figure] = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its panels
    assert main(["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                 "-o", str(tmp_path / "w.png"), "--samples", "1"]) == 0
    panels = figures[0].axes
    assert panels[1].get_title() == "mask (white = cell)"
    np.testing.assert_array_equal(panels[2].images[0].get_array(), distance_weight_map(mask, binary=True))


def test_a_frame_of_one_class_in_a_data_set_with_a_class_table_stays_multi_class(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ids 0 alone look like an empty 0/255 mask, but a classes.json says these are class ids: drawn with its colours.
    import matplotlib.pyplot as plt

    camvid = make_camvid(tmp_path / "camvid")
    for label in (camvid / "trainannot").iterdir():
        cv2.imwrite(str(label), np.zeros((24, 32), np.uint8))
    figures: list[plt.Figure] = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its panels
    assert main(["--images", str(camvid / "train"), "--labels", str(camvid / "trainannot"),
                 "-o", str(tmp_path / "w.png"), "--samples", "1"]) == 0
    # Class c0 is black, so ignored pixels are drawn white (a colour no class of the table has).
    assert figures[0].axes[1].get_title() == "mask (white = ignored)"


def test_ignored_pixels_are_drawn_apart_from_a_black_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the class table of docs/own-data.md (background black), the panel drew background and ignored pixels
    # alike, black, under the title "black = ignored": every background pixel looked unlabelled.
    import json

    import matplotlib.pyplot as plt

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    (tmp_path / "labels" / "classes.json").write_text(json.dumps({"ignore_index": 255, "classes": [
        {"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "person", "color": [220, 20, 60]},
        {"id": 255, "name": "unlabelled", "color": [255, 255, 255]}]}))
    cv2.imwrite(str(tmp_path / "images" / "00.png"), np.full((8, 8, 3), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "labels" / "00.png"), np.array([[0, 1, 255] + [0] * 5] * 8, np.uint8))
    figures: list[plt.Figure] = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its panels
    assert main(["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                 "-o", str(tmp_path / "w.png"), "--samples", "1"]) == 0
    panel = figures[0].axes[1]
    assert panel.get_title() == "mask (white = ignored)"
    assert panel.images[0].get_array()[0, :3].tolist() == [[0, 0, 0], [220, 20, 60], [255, 255, 255]]
