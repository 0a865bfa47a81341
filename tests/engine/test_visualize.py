"""unetrt.visualize: the overlay's blend weight and size check, and the legend, without a model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from unetrt.visualize import blend, check_alpha, draw_legend


def test_alpha_takes_both_ends_of_0_to_1_and_names_what_it_refuses() -> None:
    assert check_alpha(0) == 0.0 and check_alpha(1) == 1.0 and check_alpha(np.float32(0.25)) == 0.25
    for bad in (-0.01, 1.01, True, "0.5"):
        with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\] .*got " + re.escape(repr(bad))):
            check_alpha(bad)


def test_blend_weighs_the_mask_by_alpha() -> None:
    frame = np.full((2, 3, 3), 100, np.uint8)
    colored = np.full((2, 3, 3), 200, np.uint8)
    # 0.25 * 200 + 0.75 * 100 = 125
    assert (blend(frame, colored, 0.25) == 125).all()


def test_a_mask_of_another_width_or_height_is_refused_with_both_sizes() -> None:
    frame = np.zeros((3, 4, 3), np.uint8)
    for colored in (np.zeros((3, 5, 3), np.uint8), np.zeros((2, 4, 3), np.uint8)):
        height, width = colored.shape[:2]
        with pytest.raises(ValueError, match=f"^frame is 4x3 but the mask is {width}x{height}$"):
            blend(frame, colored, 0.5)


def test_a_legend_of_no_classes_leaves_the_image_as_it_is() -> None:
    image = np.full((40, 60, 3), 90, np.uint8)
    assert draw_legend(image, [], []) is image and (image == 90).all()
