"""What kind of number a value a user passes is: the checks every option of the API shares."""

from __future__ import annotations

import numbers
from typing import TypeGuard


def is_whole_number(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an integer (Python's or NumPy's), and not a bool.

    bool is an int to Python, but True as a size, a count or a shift is a mistake, not 1.

    Example:
        >>> is_whole_number(3), is_whole_number(3.0), is_whole_number(True)
        (True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real_number(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a real number (int or float, Python's or NumPy's), and not a bool.

    Example:
        >>> is_real_number(0.5), is_real_number("0.5"), is_real_number(False)
        (True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
