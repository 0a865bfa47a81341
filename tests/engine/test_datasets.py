from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from unetrt.datasets import find_class_table, paired_files, read_class_table, read_image, read_label


def write(folder: Path, names: list[str], value: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), np.full((4, 5), value, np.uint8))


def test_pairs_by_stem(tmp_path: Path) -> None:
    write(tmp_path / "img", ["a.png", "b.png"])
    write(tmp_path / "lab", ["b.png", "a.png"])
    pairs = paired_files(tmp_path / "img", tmp_path / "lab")
    assert [(i.name, lab.name) for i, lab in pairs] == [("a.png", "a.png"), ("b.png", "b.png")]


def test_mismatched_stems_listed(tmp_path: Path) -> None:
    write(tmp_path / "img", ["a.png", "b.png", "c.png"])
    write(tmp_path / "lab", ["a.png", "z.png"])
    with pytest.raises(ValueError, match=r"2 images have no label \(e.g. b, c\); 1 labels have no image \(e.g. z\)"):
        paired_files(tmp_path / "img", tmp_path / "lab")


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        paired_files(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        paired_files(tmp_path / "empty", tmp_path / "empty")


def test_read_binary_label_and_errors(tmp_path: Path) -> None:
    write(tmp_path, ["m.png"], value=255)
    assert read_label(tmp_path / "m.png", binary=True).max() == 1
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="cannot read label"):
        read_label(tmp_path / "bad.png", binary=False)


def test_camvid_class_table(shared_data: Path) -> None:
    table = read_class_table(find_class_table(shared_data / "camvid" / "valannot"))
    assert len(table.names) == 11 and table.ignore_index == 11 and table.names[0] == "sky"
