"""Input-size rules of the U-Net: which sizes a network accepts and what it returns.

A 'same' U-Net of depth ``d`` halves its input ``d - 1`` times, so every side must
be a multiple of ``2 ** (d - 1)``. A 'valid' U-Net (the paper's) loses 4 px per
level of two 3x3 convolutions and needs every 2x2 max-pool to see an even size;
its output is smaller than its input by ``2 * margin`` (572 -> 388, margin 92).
"""

from __future__ import annotations

from dataclasses import dataclass

PADDING_MODES = ("same", "valid")


def _check_mode(padding: str, depth: int) -> None:
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")


def size_period(depth: int) -> int:
    """Legal input sides of either padding mode repeat with this period: ``2 ** (depth - 1)``.

    A 'same' side must be a multiple of it; a 'valid' side must leave an even size before every one of the
    ``depth - 1`` max-pools, which fixes it modulo the same power of two (and it must be large enough that no
    convolution runs out of pixels).

    Example:
        >>> size_period(5)
        16
    """
    return 2 ** (depth - 1)


def _smallest_valid_size(depth: int) -> int:
    """The smallest input side a 'valid' U-Net of this depth accepts.

    Every legal side is ``period * b + 4 * (period - 1)`` (four pixels lost before each pool, then halved);
    the sizes grow with ``b``, and ``b = 8`` always leaves every convolution enough pixels.
    """
    period = size_period(depth)
    for bottom in range(1, 9):
        size = period * bottom + 4 * (period - 1)
        if valid_output_size(size, depth) is not None:
            return size
    raise AssertionError("unreachable: a bottom side of 8 is legal at every depth")


def _legal_at_or_above(size: int, padding: str, depth: int) -> int:
    """The smallest legal side >= ``size`` (arithmetic: no search, so any depth answers at once)."""
    period = size_period(depth)
    first = period if padding == "same" else _smallest_valid_size(depth)
    if size <= first:
        return first
    return first + -(-(size - first) // period) * period


def _legal_at_or_below(size: int, padding: str, depth: int) -> int | None:
    """The largest legal side <= ``size``, or None when there is none."""
    period = size_period(depth)
    first = period if padding == "same" else _smallest_valid_size(depth)
    if size < first:
        return None
    return first + (size - first) // period * period


def valid_output_size(size: int, depth: int = 5) -> int | None:
    """Output side of a 'valid' U-Net for an input side, or None if ``size`` is illegal.

    Args:
        size: input side in pixels.
        depth: number of resolution levels (pools = depth - 1).

    Returns:
        The output side, or None when a convolution would reach size <= 0 or a
        max-pool would see an odd size.

    Example:
        >>> valid_output_size(572)
        388
    """
    for _ in range(depth - 1):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4
    if size <= 0:
        return None
    for _ in range(depth - 1):
        size = size * 2 - 4
        if size <= 0:
            return None
    return size


def is_legal_size(size: int, padding: str = "same", depth: int = 5) -> bool:
    """Whether a U-Net of this padding mode and depth accepts an input side of ``size``."""
    _check_mode(padding, depth)
    if size <= 0:
        return False
    if padding == "same":
        return size % (2 ** (depth - 1)) == 0
    return valid_output_size(size, depth) is not None


def nearest_legal_sizes(size: int, padding: str = "same", depth: int = 5) -> tuple[int | None, int]:
    """The legal input sides just below and at-or-above ``size``.

    Returns:
        ``(below, above)``: ``below`` is None when no smaller legal size exists.

    Example:
        >>> nearest_legal_sizes(500, "same", 5)
        (496, 512)
    """
    _check_mode(padding, depth)
    above = _legal_at_or_above(max(size, 1), padding, depth)
    return _legal_at_or_below(min(size, above) - 1, padding, depth), above


def legal_sizes(lo: int, hi: int, padding: str = "same", depth: int = 5) -> list[int]:
    """Every legal input side in ``[lo, hi]``.

    Example:
        >>> legal_sizes(560, 600, "valid")
        [572, 588]
    """
    _check_mode(padding, depth)
    return list(range(_legal_at_or_above(max(lo, 1), padding, depth), hi + 1, size_period(depth)))


def check_input_size(height: int, width: int, padding: str = "same", depth: int = 5) -> None:
    """Raise a ValueError naming the nearest legal sizes if ``height x width`` is not accepted.

    Raises:
        ValueError: when either side is illegal for this padding mode and depth.

    Example:
        >>> check_input_size(512, 512)
    """
    for name, size in (("height", height), ("width", width)):
        if not is_legal_size(size, padding, depth):
            below, above = nearest_legal_sizes(size, padding, depth)
            rule = (
                f"a multiple of {2 ** (depth - 1)}"
                if padding == "same"
                else "a size where every 2x2 max-pool sees an even size"
            )
            nearest = f"{below} or {above}" if below is not None else f"{above}"
            raise ValueError(
                f"input {name} {size} is not legal for a {padding!r} U-Net of depth {depth}: "
                f"it must be {rule}; nearest legal sizes: {nearest}"
            )


def output_margin(input_size: int, padding: str = "same", depth: int = 5) -> int:
    """Pixels lost on each side between input and output (0 for 'same').

    Example:
        >>> output_margin(572, "valid")
        92
    """
    _check_mode(padding, depth)
    if padding == "same":
        return 0
    out = valid_output_size(input_size, depth)
    if out is None:
        check_input_size(input_size, input_size, padding, depth)
        raise AssertionError("unreachable: check_input_size raises for illegal sizes")
    return (input_size - out) // 2


@dataclass(frozen=True)
class PaddedShape:
    """How a frame side is padded to reach a legal network input.

    Attributes:
        before: mirrored pixels added before the frame (left or top).
        after: mirrored pixels added after the frame (right or bottom).
        network_input: side length fed to the network.
        network_output: side length the network returns.
        crop_start: where the frame's own pixels start in the network output.
    """

    before: int
    after: int
    network_input: int
    network_output: int
    crop_start: int


def plan_padding(size: int, padding: str = "same", depth: int = 5) -> PaddedShape:
    """Mirror padding that lets a frame side of any length go through the network.

    In 'same' mode the frame is padded at the end up to the next multiple of
    ``2 ** (depth - 1)``. In 'valid' mode the frame gets the network's context
    margin on both sides and, at the end, whatever more the next legal size needs,
    so that the output covers every frame pixel.

    Example:
        >>> plan_padding(360, "same")
        PaddedShape(before=0, after=8, network_input=368, network_output=368, crop_start=0)
    """
    _check_mode(padding, depth)
    if size <= 0:
        raise ValueError(f"frame side must be positive, got {size}")
    if padding == "same":
        _, target = nearest_legal_sizes(size, padding, depth)
        return PaddedShape(0, target - size, target, target, 0)
    # Valid mode: the smallest legal input whose output covers the frame. Output = input - 2 * margin with a
    # margin that only grows with the input, so the first legal side >= size + 2 * (that side's margin)
    # is found within a few periods.
    candidate = _legal_at_or_above(size, padding, depth)
    while True:
        out = valid_output_size(candidate, depth)
        assert out is not None  # candidate is legal
        if out >= size:
            margin = (candidate - out) // 2
            return PaddedShape(margin, candidate - size - margin, candidate, out, 0)
        candidate = _legal_at_or_above(candidate + (size - out), padding, depth)
