"""Records held until a collector subscribes: in order, bounded by count and bytes, expired by age.

Pure (stdlib only); time comes from an injected clock. Every record the buffer
gives up (too old, pushed out by a newer one, or left at :meth:`HoldBuffer.clear`)
is counted: the methods return how many, and ``dropped`` keeps the total.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["HoldBuffer"]

T = TypeVar("T")


class HoldBuffer(Generic[T]):
    """A FIFO of at most *limit* items (and *max_bytes*, if given), each kept at most *timeout* seconds.

    When full, the oldest item makes room: the records nearest to now matter
    most. Expiry is by age from :meth:`add`, so expired items are always the
    oldest ones, at the front.

    Example::

        held = HoldBuffer[str](limit=2, timeout=10.0, clock=clock)
        held.add("a"); held.add("b"); held.add("c")  # returns 1: "a" made room
        items, dropped = held.take()                # ["b", "c"], 0
    """

    def __init__(
        self,
        limit: int,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int | None = None,
    ) -> None:
        self.limit = max(int(limit), 0)
        self.timeout = float(timeout)
        self.max_bytes = max_bytes
        self.dropped = 0
        self.bytes = 0
        self._clock = clock
        self._items: deque[tuple[float, int, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, item: T, size: int = 0) -> int:
        """Hold *item* (of *size* bytes); return how many records were dropped (it, or older ones)."""
        expired = self.expire()  # counted in ``dropped`` already
        items = self._items
        if self.limit == 0 or (self.max_bytes is not None and size > self.max_bytes):
            return expired + self._drop(1)
        dropped = 0
        while len(items) >= self.limit or (self.max_bytes is not None and self.bytes + size > self.max_bytes):
            self.bytes -= items.popleft()[1]
            dropped += 1
        items.append((self._clock() + self.timeout, size, item))
        self.bytes += size
        return expired + self._drop(dropped)

    def expire(self) -> int:
        """Drop the items older than the timeout; return how many."""
        items = self._items
        now = self._clock()
        dropped = 0
        while items and items[0][0] <= now:
            self.bytes -= items.popleft()[1]
            dropped += 1
        return self._drop(dropped)

    def take(self, limit: int | None = None) -> tuple[list[T], int]:
        """Remove and return up to *limit* items (all if None), oldest first, and how many had expired."""
        dropped = self.expire()
        items = self._items
        count = len(items) if limit is None else min(limit, len(items))
        taken = []
        for _ in range(count):
            _, size, item = items.popleft()
            self.bytes -= size
            taken.append(item)
        return taken, dropped

    def clear(self) -> int:
        """Drop everything held; return how many."""
        dropped = len(self._items)
        self._items.clear()
        self.bytes = 0
        return self._drop(dropped)

    def _drop(self, count: int) -> int:
        self.dropped += count
        return count
