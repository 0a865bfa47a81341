"""unetrt.values: the number checks every option shares; bool is never a number to them."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from unetrt.values import is_real_number, is_whole_number


@pytest.mark.parametrize(("value", "whole", "real"), [
    (3, True, True), (np.int64(3), True, True), (np.uint8(0), True, True),
    (3.0, False, True), (np.float32(0.5), False, True), (Fraction(1, 2), False, True),
    (True, False, False), (np.bool_(True), False, False), ("3", False, False), (None, False, False),
])
def test_whole_and_real_numbers(value: object, whole: bool, real: bool) -> None:
    assert is_whole_number(value) is whole
    assert is_real_number(value) is real
