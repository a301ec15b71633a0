"""The live stream's memory: the last N accepted records, numbered, for ``/events`` (issue 14).

The receive loop pays one ``list.append`` per accepted record (:attr:`Window.add`,
handed to the collector while ``--http`` is on); at the end of every drain
:meth:`Window.commit` moves that batch into the bounded window, numbers it and
notes its sources. Nothing is formatted then: a record becomes the JSON object
of a ``--json`` line (plus ``"id"``) only when a client reads it, once however
many clients read it, and only while it is still in the window.

Every record accepted in this run has a number, 1, 2, ... in the accepted
stream; an event id is ``RUN-N``, RUN being a random token of this run, so a
client that reconnects to a restarted collector is told its id means nothing
here. A reader keeps a cursor (the last number it has); :meth:`Window.read`
returns what came after it that passes a :class:`live.Filter`, and how many
records it missed because they fell out of the window meanwhile.

Pure: no sockets, no gevent.
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import attrgetter
from typing import Any, Final

from zlogcollect.formatting import TimeFormatter, compact_json, json_fields
from zlogcollect.live import Filter
from zlogcollect.routing import MALFORMED_FILE, OVERFLOW_FILE
from zlogcollect.wire import Record

__all__ = ["DEFAULT_SIZE", "MAX_BYTES", "MAX_SOURCES", "Read", "Window", "parse_event_id", "sources_in_names"]

DEFAULT_SIZE: Final = 10_000
"""Records kept (``--http-window``)."""
MAX_BYTES: Final = 64 * 1024 * 1024
"""Most message text kept (about; the records' other fields add a little): a peer sending
records of a megabyte must not make the window hold gigabytes."""
RECORD_OVERHEAD: Final = 256
"""Bytes counted per record besides its message."""
MAX_SOURCES: Final = 10_000
"""Most source names remembered (a peer inventing sources must not grow memory without end)."""

_SOURCE_OF: Final = attrgetter("source")
_MESSAGE_OF: Final = attrgetter("message")


def _size(records: Iterable[Record]) -> int:
    """What the byte bound counts of *records*: their messages' length, plus a little each."""
    lengths = list(map(len, map(_MESSAGE_OF, records)))
    return sum(lengths) + RECORD_OVERHEAD * len(lengths)


_EVENT_ID: Final = re.compile(r"([0-9a-f]{1,32})-([0-9]{1,18})")


def parse_event_id(text: str) -> tuple[str, int] | None:
    """``RUN-N`` as (run, N); None for anything else (garbage from a client is no error)."""
    match = _EVENT_ID.fullmatch(text.strip()[:64])
    if match is None:
        return None
    return match.group(1), int(match.group(2))


@dataclass(frozen=True)
class Read:
    """What :meth:`Window.read` found: the matching records' JSON (number, text), the new cursor
    and how many records the reader missed (they fell out of the window before it read them)."""

    events: list[tuple[int, str]]
    cursor: int
    missed: int


class Window:
    """The last *size* accepted records (and at most about :data:`MAX_BYTES` of text), numbered."""

    def __init__(
        self, size: int = DEFAULT_SIZE, utc: bool = False, run: str = "", max_bytes: int = MAX_BYTES
    ) -> None:
        if size < 1:
            raise ValueError("a window holds at least one record")
        self.size = size
        self.max_bytes = max_bytes
        self.run = run or secrets.token_hex(4)
        """This collector run's token: the RUN of ``RUN-N``."""
        self._pending: list[Record] = []
        self.add = self._pending.append
        """Called by the receive loop with each accepted record (one append; nothing else)."""
        self._records: deque[Record] = deque(maxlen=size)
        self._bytes = 0
        """The length of the messages kept (the byte bound's measure)."""
        self.total = 0
        """How many records this run accepted: the number of the newest one."""
        self._sources: set[str] = set()
        self._time = TimeFormatter(utc).text
        self._utc = utc
        self._views: dict[int, list[Any]] = {}
        """Numbers to [the ``--json`` object with ``id``, its JSON text or None], built when first read."""

    @property
    def oldest(self) -> int:
        """The number of the oldest record kept (``total + 1`` while the window is empty)."""
        return self.total - len(self._records) + 1

    def __len__(self) -> int:
        return len(self._records)

    def commit(self) -> int:
        """Move what :attr:`add` collected into the window (the end of a drain); how many it was."""
        pending = self._pending
        count = len(pending)
        if not count:
            return 0
        records = self._records
        # Sums over map() run in C: the per-record cost of a drain stays a few tens of ns.
        leaving = len(records) + count - self.size
        if leaving > 0:  # the deque's maxlen drops these as the batch goes in
            self._bytes -= _size(islice(records, min(leaving, len(records))))
        self._bytes += _size(pending)
        records.extend(pending)
        if len(self._sources) < MAX_SOURCES:
            self._sources.update(map(_SOURCE_OF, pending))
        pending.clear()
        self.total += count
        while self._bytes > self.max_bytes and len(records) > 1:  # only with huge records
            self._bytes -= _size((records.popleft(),))
        self._forget_views()
        return count

    def _forget_views(self) -> None:
        views, oldest = self._views, self.oldest
        while views:
            first = next(iter(views))
            if first >= oldest:
                break
            del views[first]

    def sources(self) -> set[str]:
        """Every source this run accepted a record from (up to :data:`MAX_SOURCES` of them)."""
        return set(self._sources)

    def _entry(self, number: int) -> list[Any]:
        found = self._views.get(number)
        if found is None:
            record = self._records[number - self.oldest]
            data = json_fields(record, self._utc, self._time(record.time))
            data["id"] = f"{self.run}-{number}"
            found = self._views[number] = [data, None]
        return found

    def view(self, number: int) -> dict[str, Any]:
        """Record *number* (in the window) as its ``--json`` object, with ``id``."""
        data: dict[str, Any] = self._entry(number)[0]
        return data

    def text(self, number: int) -> str:
        """Record *number* (in the window) as strict JSON on one line, with ``id``."""
        entry = self._entry(number)
        if entry[1] is None:
            entry[1] = compact_json(entry[0])
        text: str = entry[1]
        return text

    def _numbered(self, after: int) -> Iterator[int]:
        """The numbers after *after* still in the window, oldest first."""
        return iter(range(max(after + 1, self.oldest), self.total + 1))

    def read(self, cursor: int, flt: Filter, limit: int = 1000) -> Read:
        """Up to *limit* records after *cursor* that pass *flt*, oldest first.

        A cursor behind the window jumps to its oldest record and counts the
        records skipped as missed. At most ``4 * limit`` records are looked at
        in one call (a narrow filter over a full window does not hold the hub):
        the cursor then stops where the search stopped.
        """
        cursor = min(max(cursor, 0), self.total)
        missed = max(self.oldest - 1 - cursor, 0)
        events: list[tuple[int, str]] = []
        number = cursor + missed
        for looked, number in enumerate(self._numbered(cursor + missed), 1):
            if flt.matches(self.view(number)):
                events.append((number, self.text(number)))
                if len(events) >= limit:
                    break
            if looked >= 4 * limit:
                break
        else:
            number = self.total
        return Read(events, number, missed)

    def backlog(self, count: int, flt: Filter) -> list[tuple[int, str]]:
        """The newest *count* records in the window that pass *flt*, oldest first."""
        if count <= 0:
            return []
        found: list[tuple[int, str]] = []
        for number in range(self.total, self.oldest - 1, -1):
            if flt.matches(self.view(number)):
                found.append((number, self.text(number)))
                if len(found) >= count:
                    break
        found.reverse()
        return found

    def created_of(self, number: int) -> float | None:
        """The ``created`` time of record *number*, if it is in the window."""
        if not self.oldest <= number <= self.total:
            return None
        return self._records[number - self.oldest].time


_LOG_NAME: Final = re.compile(r"(?P<name>[^/]+?)\.log(?:\.[0-9][0-9_.-]*)?(?:\.gz)?")


def sources_in_names(names: Iterable[str], errors_file: str = "") -> set[str]:
    """The sources the default route's files (``SOURCE.log`` and its rotated backups) name.

    The collector's own files and the errors file are no sources.
    """
    own = {MALFORMED_FILE, OVERFLOW_FILE, errors_file}
    found: set[str] = set()
    for name in islice(names, 100_000):
        match = _LOG_NAME.fullmatch(name)
        if match is None or f"{match.group('name')}.log" in own:
            continue
        found.add(match.group("name"))
        if len(found) >= MAX_SOURCES:
            break
    return found
