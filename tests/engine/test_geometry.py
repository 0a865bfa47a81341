from __future__ import annotations

import itertools

import pytest

from unetrt.geometry import (
    check_input_size,
    is_legal_size,
    legal_sizes,
    nearest_legal_sizes,
    output_margin,
    plan_padding,
    valid_output_size,
)


def test_paper_valid_sizes() -> None:
    assert valid_output_size(572) == 388
    assert output_margin(572, "valid") == 92
    assert valid_output_size(573) is None


def test_valid_legal_sizes_step_by_16() -> None:
    sizes = legal_sizes(100, 700, "valid")
    assert 572 in sizes
    assert all(b - a == 16 for a, b in itertools.pairwise(sizes))
    # every max-pool sees an even size
    for size in sizes:
        s = size
        for _ in range(4):
            s -= 4
            assert s % 2 == 0
            s //= 2


def test_same_mode_multiple_of_16() -> None:
    assert is_legal_size(512, "same") and not is_legal_size(500, "same")
    assert nearest_legal_sizes(500, "same") == (496, 512)
    assert is_legal_size(8, "same", depth=4) and not is_legal_size(12, "same", depth=4)


def test_check_input_size_names_nearest_sizes() -> None:
    with pytest.raises(ValueError, match=r"width 500 .* multiple of 16; nearest legal sizes: 496 or 512"):
        check_input_size(512, 500)
    with pytest.raises(ValueError, match=r"nearest legal sizes: 572 or 588"):
        check_input_size(580, 572, "valid")
    with pytest.raises(ValueError, match="padding must be one of"):
        check_input_size(64, 64, "full")


@pytest.mark.parametrize("size", [1, 2, 15, 16, 17, 360, 481])
def test_plan_padding_same(size: int) -> None:
    pad = plan_padding(size, "same")
    assert pad.before == 0 and pad.network_input % 16 == 0
    assert pad.network_input - 16 < size <= pad.network_input
    assert pad.network_output == pad.network_input


@pytest.mark.parametrize("size", [1, 50, 388, 389, 512])
def test_plan_padding_valid_covers_frame(size: int) -> None:
    pad = plan_padding(size, "valid")
    assert valid_output_size(pad.network_input) == pad.network_output >= size
    assert pad.before == 92
    assert pad.before + size + pad.after == pad.network_input


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_any_depth_answers_at_once(padding: str) -> None:
    # Depth 40 used to search one side at a time up to 2**39 (hours at 100 % CPU, deaf to SIGTERM).
    below, above = nearest_legal_sizes(500, padding, 40)
    assert below is None and is_legal_size(above, padding, 40) and above >= 2**39
    assert legal_sizes(1, above, padding, 40) == [above]
    padded = plan_padding(500, padding, 40)
    assert is_legal_size(padded.network_input, padding, 40) and padded.network_output >= 500


@pytest.mark.parametrize(("padding", "depth"), list(itertools.product(["same", "valid"], range(1, 7))))
def test_nearest_and_listed_sizes_agree_with_the_rule_side_by_side(padding: str, depth: int) -> None:
    legal = [s for s in range(1, 800) if is_legal_size(s, padding, depth)]
    assert legal_sizes(1, 799, padding, depth) == legal
    for size in range(1, 700):
        below, above = nearest_legal_sizes(size, padding, depth)
        assert above == min(s for s in legal if s >= size)
        assert below == max((s for s in legal if s < min(size, above)), default=None)


def test_depth_must_be_an_integer() -> None:
    with pytest.raises(ValueError, match="depth must be an integer >= 1"):
        nearest_legal_sizes(100, "same", "5")  # type: ignore[arg-type]


def test_a_side_of_zero_is_legal_nowhere() -> None:
    # 0 is a multiple of every period: only the check of the side itself refuses it.
    assert not is_legal_size(0, "same") and not is_legal_size(0, "valid")
    with pytest.raises(ValueError, match="input height 0 is not legal"):
        check_input_size(0, 512)
    with pytest.raises(ValueError, match="frame side must be positive, got 0"):
        plan_padding(0, "same")
