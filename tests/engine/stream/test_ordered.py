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


class StopAfterLooks(threading.Event):
    """A stop signal that sets itself the ``looks``-th time it is asked: a waiter that sees it set has waited."""

    def __init__(self, looks: int) -> None:
        super().__init__()
        self.looks = looks
        self.asked = 0

    def is_set(self) -> bool:
        self.asked += 1
        if self.asked >= self.looks:
            self.set()
        return super().is_set()


def test_workers_wait_once_ahead_outcomes_wait() -> None:
    # ahead=2 lets two finished outcomes wait; with both in, a worker waits (here until stopped, on its 3rd look),
    # with one in it goes on at once: workers never run further ahead of a slow consumer than that.
    results = OrderedResults[int](2)
    results.put(0, 10)
    room = StopAfterLooks(3)
    results.wait_for_room(room, poll_s=0.0)
    assert room.asked < 3
    results.put(1, 11)
    full = StopAfterLooks(3)
    results.wait_for_room(full, poll_s=0.0)
    assert full.asked == 3
