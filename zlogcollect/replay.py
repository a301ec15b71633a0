"""The replay window: the frames of the last records sent, to send again when a collector re-subscribes.

Pure (stdlib only); time comes from an injected clock. The window keeps each
record exactly as it went out (topic, text and extension bytes), so a replay is
byte-identical and a collector that already wrote a record drops the copy by
its ``pub`` and ``seq``. It is bounded by count, bytes and age: the oldest
records leave first, and a record older than ``max_age`` is never replayed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["ReplayWindow"]

Frames = tuple[bytes, bytes, bytes]  # topic, text, extension: one record as it was sent


class ReplayWindow:
    """The last *limit* records sent (at most *max_bytes* of frames, none older than *max_age* seconds).

    :meth:`add` is on the handler's hot path: one append, one sum, and a trim
    only when a bound is passed. Age is applied when the window is read
    (:meth:`frames`) and by :meth:`expire`; count and bytes bound the memory.

    Example::

        window = ReplayWindow(limit=2, max_age=10.0, max_bytes=1 << 20, clock=clock)
        window.add(b"t", b"a", b"{}"); window.add(b"t", b"b", b"{}"); window.add(b"t", b"c", b"{}")
        window.frames()  # [(b"t", b"b", b"{}"), (b"t", b"c", b"{}")]: "a" made room
    """

    def __init__(
        self,
        limit: int,
        max_age: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(int(limit), 0)
        self.max_age = float(max_age)
        self.max_bytes = max(int(max_bytes), 0)
        self.bytes = 0
        self._clock = clock
        self._items: deque[tuple[float, int, Frames]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, topic: bytes, body: bytes, extension: bytes) -> None:
        """Keep one record as sent; the oldest ones make room when a bound is passed."""
        size = len(topic) + len(body) + len(extension)
        items = self._items
        items.append((self._clock(), size, (topic, body, extension)))
        self.bytes += size
        if len(items) > self.limit or self.bytes > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        items = self._items
        while items and (len(items) > self.limit or self.bytes > self.max_bytes):
            self.bytes -= items.popleft()[1]

    def expire(self) -> int:
        """Forget the records older than ``max_age``; return how many."""
        items = self._items
        oldest = self._clock() - self.max_age
        count = 0
        while items and items[0][0] < oldest:
            self.bytes -= items.popleft()[1]
            count += 1
        return count

    def frames(self) -> list[Frames]:
        """The records to replay, oldest first (those older than ``max_age`` forgotten first)."""
        self.expire()
        return [frames for _, _, frames in self._items]

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()
        self.bytes = 0
