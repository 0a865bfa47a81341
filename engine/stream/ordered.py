"""``OrderedResults``: results finished by several workers in any order, handed out in take order."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class OrderedResults(Generic[T]):
    """A reorder buffer: workers put each outcome under its take-order number; the consumer takes them in order.

    At most ``ahead`` outcomes wait at once, so workers run only that far ahead of a slow consumer (frames
    then wait in the capture hand-off, where a live source replaces stale ones, instead of piling up here).

    Args:
        ahead: how many finished outcomes may wait for the consumer (the number of workers).

    Raises:
        ValueError: when ``ahead`` is below 1.

    Example:
        >>> results = OrderedResults[str](2)
        >>> results.put(1, "b"); results.put(0, "a")
        >>> results.take(0, timeout=0.0), results.take(1, timeout=0.0), results.take(2, timeout=0.0)
        ('a', 'b', None)
    """

    def __init__(self, ahead: int) -> None:
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, got {ahead}")
        self.ahead = ahead
        self._items: dict[int, T] = {}
        self._changed = threading.Condition()

    def wait_for_room(self, stop: threading.Event, poll_s: float) -> None:
        """Block while ``ahead`` outcomes wait for the consumer, until one is taken or ``stop`` is set."""
        with self._changed:
            while len(self._items) >= self.ahead and not stop.is_set():
                self._changed.wait(poll_s)

    def put(self, sequence: int, item: T) -> None:
        """Hand in the outcome of the ``sequence``-th taken item (each number once)."""
        with self._changed:
            self._items[sequence] = item
            self._changed.notify_all()

    def take(self, sequence: int, timeout: float) -> T | None:
        """The ``sequence``-th outcome, waiting up to ``timeout`` seconds for it; None when it is not in yet."""
        with self._changed:
            if sequence not in self._items:
                self._changed.wait(timeout)
            if sequence not in self._items:
                return None
            item = self._items.pop(sequence)
            self._changed.notify_all()
            return item
