"""OrderedResults hands outcomes out in take order, whatever order the workers finish in."""

from __future__ import annotations

import threading

import pytest

from unetrt.stream.ordered import OrderedResults


def test_outcomes_leave_in_take_order() -> None:
    results = OrderedResults[str](3)
    for sequence, item in ((2, "c"), (0, "a"), (1, "b")):
        results.put(sequence, item)
    assert [results.take(n, timeout=0.0) for n in (0, 1, 2)] == ["a", "b", "c"]
    assert results.take(3, timeout=0.0) is None


def test_a_waiting_consumer_gets_the_outcome_from_another_thread() -> None:
    results = OrderedResults[int](1)
    putter = threading.Thread(target=results.put, args=(0, 42))
    putter.start()
    outcome = None
    while outcome is None:
        outcome = results.take(0, timeout=0.05)
    putter.join()
    assert outcome == 42


def test_room_wait_ends_when_stopped() -> None:
    results = OrderedResults[int](1)
    results.put(0, 1)
    stop = threading.Event()
    stop.set()
    results.wait_for_room(stop, poll_s=0.01)  # full, but stopped: returns at once
    with pytest.raises(ValueError, match="at least 1"):
        OrderedResults[int](0)
