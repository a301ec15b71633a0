"""Small mechanisms used in several places, written once: throttled complaints,
bounded caches, backoff, the JSON encoder, atomic file writes.

Pure: imports only the standard library, so the app-side handler and the
collector share it without pulling in zmq or gevent.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
from collections.abc import Callable, Hashable, Iterator
from typing import BinaryIO, Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

JSON_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=str)
"""The one strict encoder (no NaN, non-ASCII kept, unknown objects as ``str``).

``json.dumps`` with options builds a new encoder per call; this one is built once.
Callers that may hold non-finite floats make them strings first (``formatting``).
"""


class Throttle:
    """At most *burst* lines per kind every *period* seconds, so a peer cannot flood stderr.

    What is held back is counted per kind; :meth:`held` hands the count over for
    a summary line when the next period opens (or at exit). ``Throttle(1, 10.0)``
    is "once every ten seconds per kind".
    """

    def __init__(self, burst: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._burst = burst
        self._period = period
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self._held: dict[str, list[int]] = {}

    def allow(self, kind: str = "", amount: int = 0) -> bool:
        """True if a line of *kind* may be printed now; else count it (and *amount*) as held back."""
        now = self._clock()
        start, used = self._windows.get(kind, (-1e18, 0))
        if now - start >= self._period:
            start, used = now, 0
        if used < self._burst:
            self._windows[kind] = (start, used + 1)
            return True
        self._windows[kind] = (start, used)
        self.hold(kind, amount)
        return False

    def hold(self, kind: str = "", amount: int = 0) -> None:
        """Count a line of *kind* as held back without asking (it is never to be printed alone)."""
        held = self._held.setdefault(kind, [0, 0])
        held[0] += 1
        held[1] += amount

    def held(self, kind: str = "", final: bool = False) -> tuple[int, int]:
        """``(lines, amount)`` held back, once the period that held them is over (or *final*)."""
        if kind not in self._held:
            return 0, 0
        start, _ = self._windows.get(kind, (-1e18, 0))
        if not final and self._clock() - start < self._period:
            return 0, 0
        lines, amount = self._held.pop(kind)
        self._windows[kind] = (self._clock(), 1)  # the summary line uses one of the next period's lines
        return lines, amount

    def take_held(self, kind: str = "") -> int:
        """Lines held back for *kind* so far, handed over now and reset (no period check)."""
        held = self._held.pop(kind, None)
        return held[0] if held else 0


class BoundedCache(dict[K, V], Generic[K, V]):
    """A dict that starts over when it would pass *entries* or *cost* (bytes, characters).

    Lookups are plain ``dict`` lookups (the hot paths use ``get`` and ``[]``);
    only :meth:`put` does the bookkeeping. Starting over instead of evicting one
    entry keeps the common case free of any order tracking: these caches hold
    per-topic or per-call-site values that a well-behaved peer keeps few of, and
    that a hostile peer must not be able to grow without bound.
    """

    def __init__(self, entries: int, cost: int = 1 << 62) -> None:
        super().__init__()
        self.max_entries = entries
        self.max_cost = cost
        self.cost = 0

    def put(self, key: K, value: V, cost: int = 0) -> V:
        """Store and return *value*; an entry costing more than the whole budget is returned, not kept."""
        if cost > self.max_cost:
            return value
        if len(self) >= self.max_entries or self.cost + cost > self.max_cost:
            self.clear()
        self[key] = value
        self.cost += cost
        return value

    def clear(self) -> None:
        super().clear()
        self.cost = 0


class Backoff:
    """Exponential delays: *first*, doubling up to *cap*, with optional +/- *jitter* (a fraction).

    :meth:`next` returns the delay to wait now and grows the next one;
    :meth:`reset` starts over after a success.
    """

    def __init__(self, first: float, cap: float, jitter: float = 0.0) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.current = first

    def next(self) -> float:
        delay = self.current
        self.current = min(max(delay * 2, self.first), self.cap)
        if self.jitter:
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return delay

    def reset(self) -> None:
        self.current = self.first


@contextlib.contextmanager
def atomic_file(
    path: str, *, dir_fd: int | None = None, sync: bool = True, mode: int = 0o640
) -> Iterator[BinaryIO]:
    """Write *path* whole or not at all: into ``path + ".tmp"``, then fsync (if *sync*) and rename.

    The new file has *mode* exactly, whatever the umask.

    A stale temp file (or a link planted in its place) is removed, not followed:
    unlink acts on the link itself, and ``O_EXCL|O_NOFOLLOW`` refuse one made
    meanwhile. On failure the temp file is removed and *path* is left as it was.
    """
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        with open(fd, "wb") as handle:
            os.fchmod(fd, mode)
            yield handle
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def atomic_write(path: str, text: str, *, sync: bool = True, mode: int = 0o640) -> None:
    """Replace *path* with *text* (UTF-8) atomically, as a file of *mode*; see :func:`atomic_file`."""
    with atomic_file(path, sync=sync, mode=mode) as handle:
        handle.write(text.encode("utf-8"))


def ipc_in_use(path: str) -> bool:
    """True if something accepts connections on a Unix socket path.

    libzmq unlinks an existing ipc socket file when it binds, which would
    silently steal the endpoint from a running collector.
    """
    if not path or path.startswith("@") or not os.path.exists(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        return False  # a stale file from a collector that died: safe to bind over
    finally:
        probe.close()
    return True
