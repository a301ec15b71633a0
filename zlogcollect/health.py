"""The collector's health for ``/healthz``: the receive loop turns, the disk takes lines, the broker is there.

Pure: it reads :class:`Stats` and a few callbacks; nothing here runs per record.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from zlogcollect.stats import Stats

DISK_WINDOW: Final = 15.0
"""A disk error this recent (seconds), with lines still waiting, makes ``/healthz`` answer 503.

A failing file is retried after at most 10 s, so while the disk stays full a new error comes
within this window; once a write succeeds and nothing waits, the answer is 200 again at once."""
STALL_AFTER: Final = 10.0
"""Seconds without a pass of the receive loop after which ``/healthz`` calls it stalled."""
AMQP_FULL: Final = 0.8
"""Fraction of the AMQP buffer in use that, with the broker unreachable, makes ``/healthz`` 503."""
WRITER_DOWN_AFTER: Final = 30.0
"""Seconds a writer (``collect --from-amqp``) may be without its broker before ``/healthz`` answers
503: it buffers nothing, so while it is away nothing is written (a reconnect takes a few seconds)."""


@dataclass(frozen=True)
class AmqpView:
    """What the bridge sink tells at scrape time: whether it is connected and how much it holds.

    *writer*: it is ``collect --from-amqp``'s consumer (nothing buffered, other counters).
    """

    connected: Callable[[], bool]
    buffered: Callable[[], int]
    capacity: int
    writer: bool = False


class Health:
    """Whether the collector works: the receive loop turns, the disk takes lines, the broker is there.

    :meth:`tick` is called by the receive loop after every batch and wait (not per
    record); it notes the time, whether records arrived and whether disk errors grew.
    """

    def __init__(
        self,
        stats: Stats,
        pending_lines: Callable[[], int] = lambda: 0,
        amqp: AmqpView | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        disk_window: float = DISK_WINDOW,
        stall_after: float = STALL_AFTER,
    ) -> None:
        self._stats = stats
        self._pending_lines = pending_lines
        self.amqp = amqp
        self._clock = clock
        self._wall = wall
        self._disk_window = disk_window
        self._stall_after = stall_after
        self._started = clock()
        self._beat: float | None = None  # None until the receive loop runs
        self._received = 0
        self.last_record: float | None = None
        """Wall-clock time of the last record received (to within one batch), or None."""
        self._disk_errors = 0
        self._disk_error_at: float | None = None
        self._writer_down_since: float | None = None
        self.stopping = False

    def tick(self) -> None:
        """One pass of the receive loop: it is alive; note new records and new disk errors."""
        self._beat = self._clock()
        self._observe(self._beat)

    def _observe(self, now: float) -> None:
        stats = self._stats
        if stats.received != self._received:
            self._received = stats.received
            self.last_record = self._wall()
        disk = stats.errors["disk_error"] + stats.dropped["disk_error"]
        if disk != self._disk_errors:
            self._disk_errors = disk
            self._disk_error_at = now
        amqp = self.amqp
        if amqp is not None and amqp.writer:
            if amqp.connected():
                self._writer_down_since = None
            elif self._writer_down_since is None:
                self._writer_down_since = now

    def problems(self) -> list[str]:
        """What is wrong now, one phrase each; empty when healthy."""
        now = self._clock()
        self._observe(now)
        if self.stopping:
            return ["stopping"]
        if self._beat is None:
            return ["starting"]
        found = []
        if now - self._beat > self._stall_after:
            found.append(f"the receive loop has not run for {now - self._beat:.0f} s")
        if self._disk_error_at is not None and now - self._disk_error_at < self._disk_window:
            waiting = self._pending_lines()
            if waiting:
                found.append(
                    f"disk errors in the last {self._disk_window:.0f} s, {waiting} lines waiting to be written"
                )
        amqp = self.amqp
        down_since = self._writer_down_since
        if down_since is not None and now - down_since > WRITER_DOWN_AFTER:
            found.append(f"AMQP broker unreachable for {now - down_since:.0f} s: nothing is being written")
        if amqp is not None and not amqp.writer and not amqp.connected():
            buffered = amqp.buffered()
            if buffered > AMQP_FULL * amqp.capacity:
                found.append(
                    f"AMQP broker unreachable and the buffer {100 * buffered // amqp.capacity} % full"
                )
        return found

    def report(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body)`` for ``/healthz``: status, uptime, last record, AMQP state, problems."""
        problems = self.problems()
        status = (
            "ok" if not problems else problems[0] if problems[0] in ("stopping", "starting") else "failing"
        )
        body: dict[str, Any] = {
            "status": status,
            "uptime": round(self._clock() - self._started, 3),
            "received": self._stats.received,
            "last_record": _iso(self.last_record),
            "last_record_age": None
            if self.last_record is None
            else round(self._wall() - self.last_record, 3),
        }
        if self.amqp is not None:
            body["amqp"] = {
                "connected": self.amqp.connected(),
                "buffered": self.amqp.buffered(),
                "buffer": self.amqp.capacity,
            }
        body["problems"] = problems
        return not problems, body


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
