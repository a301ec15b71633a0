"""The collector's own voice on stderr: its diagnostics logger, the live status line, announced lines."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import TYPE_CHECKING

from zlogcollect.config import log_level_number

if TYPE_CHECKING:
    from zlogcollect.stats import Stats

log = logging.getLogger("zlogcollect")


class DiagnosticsHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr for the collector's own log; on a terminal it also keeps a live status line.

    The status line is redrawn in place (``\\r``) and erased before each log
    line, so log lines never end up glued to it.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.tty = sys.stderr.isatty()
        self._status = ""

    def emit(self, record: logging.LogRecord) -> None:
        if self._status:
            self.stream.write("\r\x1b[K")
        super().emit(record)
        if self._status:
            self.stream.write(self._status)
            self.stream.flush()

    def show_status(self, text: str) -> None:
        """Draw *text* as the status line (terminal only)."""
        if not self.tty:
            return
        self._status = text[: shutil.get_terminal_size().columns - 1]
        self.stream.write("\r\x1b[K" + self._status)
        self.stream.flush()

    def clear_status(self) -> None:
        if self._status:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._status = ""


def announce(message: str, *args: object) -> None:
    """An INFO line printed whatever --log-level says: counters asked for by a signal or at exit."""
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, message, args, None))


def setup_diagnostics(level: str) -> DiagnosticsHandler:
    """Send the collector's own log to stderr, never anywhere near a zlogcollect handler."""
    handler = DiagnosticsHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s zlogcollect[%(process)d] %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(log_level_number(level))
    log.propagate = False
    return handler


class Progress:
    """Received/written rates for the terminal status line, at most once a second."""

    def __init__(self, stats: Stats, handler: DiagnosticsHandler | None) -> None:
        self._stats = stats
        self._handler = handler if handler is not None and handler.tty else None
        self._last = time.monotonic()
        self._last_received = 0

    def tick(self) -> None:
        if self._handler is None:
            return
        now = time.monotonic()
        if now - self._last < 1.0:
            return
        stats = self._stats
        rate = (stats.received - self._last_received) / (now - self._last)
        self._last, self._last_received = now, stats.received
        parts = [f"received {stats.received:,} ({rate:,.0f}/s)", f"written {sum(stats.written.values()):,}"]
        if stats.malformed:
            parts.append(f"malformed {sum(stats.malformed.values()):,}")
        if stats.amqp:
            parts.append(f"amqp delivered {stats.amqp['delivered']:,}")
        if stats.dropped:
            parts.append(f"dropped {sum(stats.dropped.values()):,}")
        self._handler.show_status("zlogcollect: " + ", ".join(parts))

    def done(self) -> None:
        if self._handler is not None:
            self._handler.clear_status()
