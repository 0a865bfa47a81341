"""Training samples: labels kept finer than the network's input stay aligned with it through crops."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

from unetrt.export.augment import AugmentConfig
from unetrt.export.data import SegmentationDataset, camvid_split, isbi_split, median_frequency_weights, random_crop


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_random_crop_takes_the_same_window_of_a_finer_label(scale: int) -> None:
    image = np.arange(8 * 10, dtype=np.uint8).reshape(8, 10)
    label = np.kron(image, np.ones((scale, scale), np.uint8))
    for seed in range(10):
        cropped_image, cropped_label, cropped_weights = random_crop(
            image, label, label.astype(np.float32), (4, 3), np.random.default_rng(seed))
        assert cropped_image.shape == (3, 4)
        np.testing.assert_array_equal(cropped_label, np.kron(cropped_image, np.ones((scale, scale), np.uint8)))
        assert cropped_weights is not None
        np.testing.assert_array_equal(cropped_weights, cropped_label)


def test_random_crop_refuses_a_label_that_is_no_multiple_of_the_image() -> None:
    with pytest.raises(ValueError, match="label 15x12 must be the image's size 10x8 or an integer multiple"):
        random_crop(np.zeros((8, 10)), np.zeros((12, 15)), None, (4, 3), np.random.default_rng(0))


def _write_pair(folder: Path, width: int, height: int) -> tuple[Path, Path]:
    label = np.zeros((height, width), np.uint8)
    label[:, min(29, width - 1)] = 1  # a one-pixel pole
    image = np.stack([label * 200] * 3, -1).astype(np.uint8)
    cv2.imwrite(str(folder / "f.png"), image)
    cv2.imwrite(str(folder / "l.png"), label)
    return folder / "f.png", folder / "l.png"


def test_a_finer_label_keeps_a_pole_the_working_size_loses(tmp_path: Path) -> None:
    # 60 px wide, a one-pixel pole at x = 29: resized to 32 px by nearest neighbour (source columns 28, 30) it is
    # gone; resized to 64 px it is still there in every row
    pair = _write_pair(tmp_path, 60, 40)
    coarse = SegmentationDataset([pair], 3, (0, 0, 0), (1, 1, 1), False, size=(32, 24))
    fine = SegmentationDataset([pair], 3, (0, 0, 0), (1, 1, 1), False, size=(32, 24), label_scale=2)
    assert coarse.labels[0].shape == (24, 32) and fine.labels[0].shape == (48, 64)
    assert coarse.labels[0].sum() == 0
    assert (fine.labels[0] == 1).any(axis=1).all()
    image, target = fine[0]
    assert tuple(image.shape) == (3, 24, 32) and tuple(target.shape) == (48, 64)


def test_augmented_crops_of_a_finer_label_have_twice_the_crop_size(tmp_path: Path) -> None:
    pair = _write_pair(tmp_path, 64, 48)
    data = SegmentationDataset([pair], 3, (0, 0, 0), (1, 1, 1), False, size=(32, 24),
                               augment=AugmentConfig(("hflip", "scale"), zoom=(0.8, 1.25)), crop=(16, 16),
                               ignore_index=255, label_scale=2)
    for _ in range(5):
        image, target = data[0]
        assert tuple(image.shape) == (3, 16, 16) and tuple(target.shape) == (32, 32)


def test_label_scale_below_one_is_refused_with_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label_scale must be a positive integer, got 0"):
        SegmentationDataset([_write_pair(tmp_path, 8, 8)], 3, (0, 0, 0), (1, 1, 1), False, label_scale=0)


def test_an_isbi_image_not_named_by_its_slice_is_named(tmp_path: Path) -> None:
    # int() of the stem ended the run with "invalid literal for int() with base 10: 'extra'".
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        for stem in ("00", "01", "02", "extra"):
            cv2.imwrite(str(tmp_path / folder / f"{stem}.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"ISBI image '.*extra\.png' is not named by its slice number: .* NN\.png"):
        isbi_split(tmp_path, val_slices=(2,))


def test_a_class_table_nested_too_deep_is_named(tmp_path: Path) -> None:
    # json.loads ended in RecursionError's traceback.
    (tmp_path / "classes.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"class table '.*classes\.json' nests its JSON deeper than can be read"):
        camvid_split(tmp_path)


def test_median_frequency_weights_by_hand_over_the_present_classes() -> None:
    # Present frequencies 0.2, 0.3, 0.5: median 0.3, so weights 0.3/0.2, 0.3/0.3, 0.3/0.5; the absent class gets 0
    # and does not pull the median down to 0.25.
    weights = median_frequency_weights(np.array([0.0, 0.2, 0.3, 0.5]))
    np.testing.assert_allclose(weights, [0.0, 1.5, 1.0, 0.6], rtol=1e-12)


def test_a_class_table_of_one_class_is_refused(tmp_path: Path) -> None:
    # One class made a binary model named for the foreground (ids 1 or 255) though the table gave the name to id 0,
    # and labels holding 2, 3, ... were never checked: it trained on in silence.
    (tmp_path / "classes.json").write_text(json.dumps(
        {"ignore_index": 255, "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]}]}))
    with pytest.raises(ValueError, match=r"classes\.json' lists one class \('background'\); a model needs at least "
                                         r"two: add background as id 0 and number your classes 1, 2"):
        camvid_split(tmp_path)
