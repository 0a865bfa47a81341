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
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")


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
    above = max(size, 1)
    while not is_legal_size(above, padding, depth):
        above += 1
    below: int | None = min(size, above) - 1
    while below is not None and not is_legal_size(below, padding, depth):
        below = below - 1 if below > 1 else None
    return below, above


def legal_sizes(lo: int, hi: int, padding: str = "same", depth: int = 5) -> list[int]:
    """Every legal input side in ``[lo, hi]``.

    Example:
        >>> legal_sizes(560, 600, "valid")
        [572, 588]
    """
    _check_mode(padding, depth)
    return [s for s in range(max(lo, 1), hi + 1) if is_legal_size(s, padding, depth)]


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
    # Valid mode: find the smallest legal input whose output covers the frame.
    candidate = size
    while True:
        out = valid_output_size(candidate, depth)
        if out is not None and out >= size:
            margin = (candidate - out) // 2
            return PaddedShape(margin, candidate - size - margin, candidate, out, 0)
        candidate += 1
