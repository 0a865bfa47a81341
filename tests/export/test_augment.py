"""Augmentation keeps image, label and weight map aligned; parameters and errors behave."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from unetrt.export.augment import AugmentConfig, augment, elastic_field


def _sample(height: int = 32, width: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    label = np.kron(rng.integers(0, 3, (height // 8, width // 8)), np.ones((8, 8))).astype(np.uint8)
    return (label * 60).astype(np.uint8), label, label.astype(np.float32)


@pytest.mark.parametrize("names", [("hflip",), ("vflip",), ("rot90",), ("hflip", "vflip", "rot90")])
def test_flips_and_turns_move_all_three_together(names: tuple[str, ...]) -> None:
    image, label, weights = _sample()
    for seed in range(8):
        out_image, out_label, out_weights = augment(image, label, weights, AugmentConfig(names),
                                                    np.random.default_rng(seed))
        np.testing.assert_array_equal(out_image, out_label * 60)
        assert out_weights is not None
        np.testing.assert_array_equal(out_weights, out_label.astype(np.float32))


def test_some_flip_happens_and_rot90_keeps_non_square_shape() -> None:
    image, label, _ = _sample(32, 48)
    outputs = [augment(image, label, None, AugmentConfig(("hflip", "rot90")), np.random.default_rng(s))[1]
               for s in range(10)]
    assert all(out.shape == (32, 48) for out in outputs)
    assert any(not np.array_equal(out, label) for out in outputs)


def test_elastic_and_scale_keep_label_and_weights_aligned() -> None:
    image, label, weights = _sample(64, 64)
    config = AugmentConfig(("scale", "elastic"), scale=0.2, shift=0.1, elastic_sigma=10)
    out_image, out_label, out_weights = augment(image, label, weights, config, np.random.default_rng(3))
    assert out_weights is not None
    assert not np.array_equal(out_label, label)
    # nearest vs bilinear resampling of the same field agree away from the class edges
    assert np.mean(np.abs(out_weights - out_label) < 0.5) > 0.9
    assert np.mean(np.abs(out_image.astype(int) - out_label.astype(int) * 60) < 30) > 0.9
    assert out_label.dtype == np.uint8 and out_weights.dtype == np.float32 and out_image.dtype == np.uint8


def test_elastic_is_reproducible_per_seed() -> None:
    image, label, weights = _sample()
    config = AugmentConfig(("elastic",))
    a = augment(image, label, weights, config, np.random.default_rng(1))
    b = augment(image, label, weights, config, np.random.default_rng(1))
    c = augment(image, label, weights, config, np.random.default_rng(2))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_elastic_field_is_smooth_with_the_grid_sigma() -> None:
    field = elastic_field(200, 200, 10.0, 3, np.random.default_rng(0))
    corners = np.concatenate([elastic_field(50, 50, 10.0, 3, np.random.default_rng(s))[[0, 0, -1, -1], [0, -1, 0, -1]]
                              for s in range(200)])
    assert 8 < corners.std() < 12  # the grid's corner vectors are the drawn ones
    assert np.abs(np.diff(field, axis=0)).max() < 2.0  # neighbouring pixels barely differ


def test_zoom_out_fills_with_ignore_index_and_zero_weight() -> None:
    image, label, weights = _sample()
    weights = weights + 1
    config = AugmentConfig(("scale",), scale=0.5, shift=0.0)
    for seed in range(20):
        _, out_label, out_weights = augment(image, label, weights, config, np.random.default_rng(seed), 255)
        assert out_weights is not None
        if (out_label == 255).any():
            assert np.all(out_weights[out_label == 255] == 0)
            return
    pytest.fail("a zoom-out by up to 2x never exposed the border")


def test_jitter_changes_only_the_image() -> None:
    image, label, weights = _sample()
    out_image, out_label, out_weights = augment(image, label, weights, AugmentConfig(("jitter",)),
                                                np.random.default_rng(0))
    np.testing.assert_array_equal(out_label, label)
    np.testing.assert_array_equal(out_weights, weights)
    assert not np.array_equal(out_image, image)


def test_bad_configuration_and_shapes_raise() -> None:
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentConfig.parse("hflip,twirl")
    with pytest.raises(ValueError, match="grid"):
        AugmentConfig(("elastic",), elastic_grid=1)
    assert AugmentConfig.parse("none").names == ()
    with pytest.raises(ValueError, match="label 5x4 must be the image's size 4x4 or an integer multiple"):
        augment(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), None, AugmentConfig(),
                np.random.default_rng(0))
    with pytest.raises(ValueError, match="label 12x8 must be the image's size 4x4 or an integer multiple"):
        augment(np.zeros((4, 4), np.uint8), np.zeros((8, 12), np.uint8), None, AugmentConfig(),
                np.random.default_rng(0))
    with pytest.raises(ValueError, match="weight map"):
        augment(np.zeros((4, 4), np.uint8), np.zeros((8, 8), np.uint8), np.zeros((4, 4), np.float32),
                AugmentConfig(), np.random.default_rng(0))


@pytest.mark.parametrize("names", [("hflip", "vflip"), ("rot90",), ("scale",), ("elastic",),
                                   ("hflip", "scale", "elastic")])
def test_a_label_at_twice_the_size_moves_as_the_image(names: tuple[str, ...]) -> None:
    # A label drawn at 2x the image must come out as the 2x drawing of the transformed image's own label: the
    # same transform applied to the image-size label and to its 2x copy agree on every 2x2 block's pixels,
    # save next to a class edge, where the finer grid samples the source more closely. A shift of one pixel
    # or more would put disagreements away from the edges.
    _, label, _ = _sample(64, 64)
    image = (label * 60).astype(np.uint8)
    fine = np.kron(label, np.ones((2, 2), np.uint8))
    config = AugmentConfig(names, scale=0.3, shift=0.1, elastic_sigma=6)
    for seed in range(6):
        out_image, out_label, _ = augment(image, label, None, config, np.random.default_rng(seed))
        _, out_fine, _ = augment(image, fine, None, config, np.random.default_rng(seed))
        assert out_fine.shape == (128, 128)
        disagree = (out_fine.reshape(64, 2, 64, 2) != out_label[:, None, :, None]).any(axis=(1, 3))
        kernel = np.ones((3, 3), np.uint8)
        near_edge = cv2.dilate(out_label, kernel) != cv2.erode(out_label, kernel)
        # Mirrored in from outside, each grid reflects about its own first pixel centre (half a pixel apart).
        near_edge[[0, 1, -2, -1], :] = near_edge[:, [0, 1, -2, -1]] = True
        assert disagree.any() or names == ("hflip", "vflip") or names == ("rot90",)
        assert not (disagree & ~near_edge).any(), (names, seed)
        # the image drawn in the same call follows the fine label too
        assert np.mean(np.abs(out_image.astype(int) - out_label.astype(int) * 60) < 30) > 0.9


def test_a_label_at_twice_the_size_is_not_the_image_size_label_upsampled_when_zoomed() -> None:
    # Under a zoom the 2x label is resampled on its own grid (finer detail), not copied from the 1x result.
    label = np.zeros((32, 32), np.uint8)
    label[:, 15] = 1  # a one-pixel pole
    fine = np.kron(label, np.ones((2, 2), np.uint8))
    config = AugmentConfig(("scale",), zoom=(0.5, 0.5), shift=0.0)
    _, out_label, _ = augment(label * 60, label, None, config, np.random.default_rng(0))
    _, out_fine, _ = augment(label * 60, fine, None, config, np.random.default_rng(0))
    # Halved, the pole is one fine pixel wide: the 2x label keeps it in every row, as half a coarse pixel.
    assert (out_fine == 1).sum(axis=1).min() >= 1
    assert (out_fine == 1).sum() < 2 * 2 * (out_label == 1).sum() or (out_label == 1).sum() == 0


def test_hflip_mirrors_left_right_vflip_top_bottom_each_half_the_time() -> None:
    image, label, _ = _sample(32, 48)
    for name, mirrored in (("hflip", label[:, ::-1]), ("vflip", label[::-1])):
        outcomes = []
        for seed in range(20):
            out = augment(image, label, None, AugmentConfig((name,)), np.random.default_rng(seed))[1]
            assert np.array_equal(out, label) or np.array_equal(out, mirrored), name
            outcomes.append(np.array_equal(out, mirrored))
        # a coin per sample: 20 draws give both sides
        assert 0 < sum(outcomes) < 20, name


def test_rot90_turns_a_square_sample_by_every_quarter() -> None:
    image, label, _ = _sample()
    turns = set()
    for seed in range(20):
        out = augment(image, label, None, AugmentConfig(("rot90",)), np.random.default_rng(seed))[1]
        turns |= {k for k in range(4) if np.array_equal(out, np.rot90(label, k))}
    assert turns == {0, 1, 2, 3}


def test_a_zoom_in_shifts_far_enough_to_show_every_border() -> None:
    # Zoomed in 2x without --shift, a 32x64 sample shows half its width; the shift grows to a quarter of each side
    # so the left-most columns (class 1) come into view on some draws. A non-square sample tells the sides apart.
    label = np.zeros((32, 64), np.uint8)
    label[:, :4] = 1
    config = AugmentConfig(("scale",), zoom=(2.0, 2.0), shift=0.0)
    seen = [(augment(label * 60, label, None, config, np.random.default_rng(seed), 9)[1] == 1).any()
            for seed in range(40)]
    assert any(seen)


def test_zoom_factors_are_log_uniform() -> None:
    # Log-uniform on [0.5, 2], the median zoom is 1: the median area of an 8x8 square is its own 64 px (sampled to
    # the nearest pixel). Uniform on [0.5, 2] would have a median of 1.25 and an area near 1.25**2 * 64 = 100.
    label = np.zeros((32, 32), np.uint8)
    label[12:20, 12:20] = 1
    config = AugmentConfig(("scale",), zoom=(0.5, 2.0), shift=0.0)
    areas = [int((augment(label * 60, label, None, config, np.random.default_rng(seed), 9)[1] == 1).sum())
             for seed in range(101)]
    assert 48 < np.median(areas) < 90


@pytest.mark.parametrize("names", [("scale",), ("elastic",), ("scale", "elastic")])
def test_resampled_labels_hold_only_their_own_ids(names: tuple[str, ...]) -> None:
    # Labels are resampled by nearest neighbour: between classes 0 and 2 no pixel may become 1.
    image, label, _ = _sample(64, 64)
    label = label // 2 * 2
    config = AugmentConfig(names, scale=0.3, shift=0.1, elastic_sigma=6)
    for seed in range(4):
        out = augment(image, label, None, config, np.random.default_rng(seed), ignore_index=255)[1]
        assert set(np.unique(out)) <= {0, 2, 255}, (names, seed)


def test_jitter_saturates_instead_of_wrapping_around() -> None:
    # 250 * (1 + 0.2) + 20 is past 255: it must stay white, never wrap to a dark value; the darkest result is
    # 250 * 0.8 - 20 = 180.
    image = np.full((8, 8), 250, np.uint8)
    label = np.zeros((8, 8), np.uint8)
    for seed in range(20):
        out = augment(image, label, None, AugmentConfig(("jitter",)), np.random.default_rng(seed))[0]
        assert out.min() >= 180, seed


def test_a_scale_of_one_or_more_is_refused() -> None:
    # A zoom range of [1 - 1, 1 + 1] would draw zoom 0 and divide by it.
    with pytest.raises(ValueError, match=r"need 0 <= scale < 1, .*, got 1\.0, "):
        AugmentConfig(("scale",), scale=1.0)


def test_a_zoom_of_one_leaves_a_label_at_twice_the_size_untouched() -> None:
    # Zoom 1 without a shift is the identity: every fine pixel centre must map back onto itself, so even a label
    # of random ids (no edge to hide a half-pixel shift) comes out unchanged.
    fine = np.random.default_rng(0).integers(0, 5, (64, 48)).astype(np.uint8)
    config = AugmentConfig(("scale",), zoom=(1.0, 1.0), shift=0.0)
    out = augment(np.zeros((32, 24), np.uint8), fine, None, config, np.random.default_rng(0))[1]
    np.testing.assert_array_equal(out, fine)
