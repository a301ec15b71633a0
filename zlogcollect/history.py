"""The web viewer's history (issue 14): the collector's own files read back into records.

``/search`` and ``/context`` answer from the files under ``--dir``: every line
shape the collector writes is read back into the object a ``--json`` line
holds (:func:`formatting.json_fields`), with ``file`` (relative to ``--dir``)
and ``line`` (1-based, the record's first line) added:

- the default text line (six columns, :data:`formatting.DEFAULT_FORMAT`) and
  CURVE's seven (:data:`formatting.DEFAULT_PEER_FORMAT`), with the
  continuation lines of a multi-line record (``TIME | SOURCE + text``, or the
  bare lines of ``--multiline plain``) joined back into its message;
- ``--json`` lines;
- any other line (a custom ``--format``, garbage): a record with only
  ``message`` (the raw line), ``time`` and ``created`` null. Nothing read
  from a file raises.

Which files: every ``*.log`` under ``--dir`` (route subdirectories too) and
their rotated backups (``NAME.log.YYYY-MM-DD[_HH[-MM[-SS]]]``, plain or
``.gz``), never following a symbolic link; not ``_malformed.log`` (frames
that were no record) nor the collector's JSON files. A record found in two
files (``app2.log`` and ``errors.log``, a route's copy) is returned once,
from the first file read: the per-source files come first.

Plain files are read backwards from their end, so the newest records come
first and a search for the last few hundred stops early however big the
file is; ``.gz`` backups are read forwards. A file the collector is
appending to is read up to its size when opened; a last line without its
newline is left out. Everything is bounded: :data:`DEADLINE` seconds of
reading, :data:`MAX_LIMIT` records, lines cut at :data:`MAX_LINE_BYTES`.

No sockets, no gevent: the HTTP server passes a *pause* callable that yields
to its hub every :data:`PAUSE_EVERY` lines.
"""

from __future__ import annotations

import calendar
import collections
import datetime
import gzip
import heapq
import json
import math
import os
import re
import time
import urllib.parse
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Final

from zlogcollect.formatting import strict_json
from zlogcollect.live import Filter, FilterError
from zlogcollect.routing import ERRORS_FILE, MALFORMED_FILE, OVERFLOW_FILE, safe_name
from zlogcollect.wire import DEFAULT_LEVELS, Levels

__all__ = [
    "DEADLINE",
    "MAX_LIMIT",
    "History",
    "HistoryError",
    "LineFormat",
    "NotFound",
    "parse_when",
]

DEFAULT_LIMIT: Final = 500
MAX_LIMIT: Final = 10_000
"""Most records one ``/search`` returns."""
DEADLINE: Final = 10.0
"""Seconds of reading one request may take; then it answers with what it found (``truncated``)."""
DEFAULT_CONTEXT: Final = 20
MAX_CONTEXT: Final = 1000
"""Most records before (and after) the line ``/context`` asks for."""
MAX_LINE_BYTES: Final = 1024 * 1024
"""A longer line is cut to this many bytes (the record's message ends with :data:`CUT`)."""
CUT: Final = " [line cut]"
MAX_CONTINUATION_LINES: Final = 10_000
MAX_RECORD_CHARS: Final = 4 * 1024 * 1024
MAX_ANSWER_CHARS: Final = 64 * 1024 * 1024
"""Continuation lines join one record up to MAX_RECORD_CHARS (further ones are records of their
own); an answer holds messages of MAX_ANSWER_CHARS at most (the oldest give way), so a file of
huge lines cannot make a search take the collector's memory."""
"""Continuation lines joined into one record at most; further ones are records of their own."""
PAUSE_EVERY: Final = 2000
"""Lines read between two calls of the pause callable (and deadline checks)."""
SLACK: Final = 5.0
"""Seconds a record's time may be out of order in a file (``created`` is the sender's clock):
reading stops only at records this much older than what is still wanted."""
MAX_FILES: Final = 100_000
"""Files looked at, at most, under ``--dir``."""
CHUNK: Final = 64 * 1024

_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}", re.ASCII)
_ORIGIN: Final = re.compile(r"-|(.+):(\d+|-)", re.S)
_CONTINUED: Final = re.compile(
    r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}) \| (.*?) \+ (.*)", re.S | re.ASCII
)
_HEADISH: Final = re.compile(
    r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} \| (.*?) \| .*? \| .*? \| ", re.S | re.ASCII
)
_CURRENT: Final = re.compile(r".+\.log", re.S)
_ROTATED: Final = re.compile(
    r"(.+\.log)\.(\d{4}-\d{2}-\d{2}(?:_\d{2}(?:-\d{2}){0,2})?)(\.gz)?", re.S | re.ASCII
)
_SKIPPED: Final = frozenset({MALFORMED_FILE})


class HistoryError(ValueError):
    """A query parameter that cannot be used; the message is one line for a 400 answer."""


class NotFound(LookupError):
    """``/context``'s file is not one of the log files inside ``--dir`` (404)."""


class _Deadline(Exception):
    pass


def parse_when(text: str, utc: bool = False) -> float:
    """``since``/``until``: epoch seconds, or ISO 8601 (a date, a date and time, with or without
    an offset; without one the time is local, or UTC with *utc*)."""
    text = text.strip()
    if not text:
        raise HistoryError("an empty time: give epoch seconds or ISO 8601 (2026-12-01T10:00)")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise HistoryError(f"{text[:40]!r} is not a time")
        return number
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise HistoryError(
            f"{text[:40]!r} is not a time: give epoch seconds or ISO 8601 (2026-12-01, 2026-12-01T10:00)"
        ) from None
    if moment.tzinfo is None and utc:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise HistoryError(f"{text[:40]!r} is out of range") from None


@dataclass(frozen=True)
class LineFormat:
    """How the collector writes its lines: what reading them back needs to know."""

    levels: Levels = DEFAULT_LEVELS
    utc: bool = False
    """Time stamps in UTC (``--utc``) rather than local time."""
    peer: bool = False
    """Text lines are CURVE's seven columns first (``DEFAULT_PEER_FORMAT``), else the six."""
    plain_continuations: bool = False
    """``--multiline plain``: a line that is no record continues the record before it."""
    _seconds: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    _levels: dict[str, tuple[str, int] | None] = field(default_factory=dict, compare=False, repr=False)

    def level(self, name: str) -> tuple[str, int] | None:
        """``levels.lookup``, remembered (a file holds a handful of level names)."""
        try:
            return self._levels[name]
        except KeyError:
            found = self.levels.lookup(name)
            if len(self._levels) > 1000:
                self._levels.clear()
            self._levels[name] = found
            return found

    def epoch(self, text: str) -> float:
        """``YYYY-MM-DD HH:MM:SS.mmm`` as epoch seconds; ValueError if it is no such time."""
        head = text[:19]
        base = self._seconds.get(head)
        if base is None:
            parts = (int(head[0:4]), int(head[5:7]), int(head[8:10]), int(head[11:13]), int(head[14:16]))
            moment = datetime.datetime(*parts, int(head[17:19]))  # ValueError for a month 13
            if self.utc:
                base = float(calendar.timegm(moment.timetuple()))
            else:
                base = time.mktime((*moment.timetuple()[:8], -1))
            if len(self._seconds) > 10_000:
                self._seconds.clear()
            self._seconds[head] = base
        return base + int(text[20:23]) / 1000


# --- one line ---------------------------------------------------------------------------------

HEAD, CONT, RAW = 0, 1, 2
"""What :func:`parse_line` found: a record's first line, a continuation line, a line in no known shape."""


def _text_record(line: str, fmt: LineFormat, seven: bool) -> dict[str, Any] | None:
    parts = line.split(" | ", 6 if seven else 5)
    if len(parts) != (7 if seven else 6) or not _TIME.fullmatch(parts[0]):
        return None
    found = fmt.level(parts[1])
    if found is None:
        return None
    if seven:
        stamp, _, source, peer, origin, subtopic, message = parts
    else:
        stamp, _, source, origin, subtopic, message = parts
        peer = "-"
    match = _ORIGIN.fullmatch(origin)
    if match is None or " " in origin:
        return None
    try:
        created = fmt.epoch(stamp)
    except ValueError:
        return None
    source = "" if source == "-" else source
    subtopic = "" if subtopic == "-" else subtopic
    record: dict[str, Any] = {
        "time": stamp,
        "created": created,
        "received": None,
        "source": source,
        "levelname": found[0],
        "levelno": found[1],
        "subtopic": subtopic,
        "topic": ".".join(part for part in (source, found[0], subtopic) if part),
        "message": message,
    }
    if peer != "-":
        record["peer"] = peer
    if match.group(1) is not None:
        if match.group(1) != "-":
            record["host"] = match.group(1)
        if match.group(2) != "-":
            record["pid"] = int(match.group(2))
    return record


def _json_record(line: str, fmt: LineFormat) -> dict[str, Any] | None:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return None
    created = data.get("created")
    if created.__class__ not in (int, float) or not math.isfinite(created):
        stamp = data.get("time")
        created = None
        if isinstance(stamp, str) and _TIME.fullmatch(stamp):
            try:
                created = fmt.epoch(stamp)
            except ValueError:
                pass
        data["created"] = created
    levelno = data.get("levelno")
    if levelno.__class__ is not int and isinstance(data.get("levelname"), str):
        found = fmt.levels.lookup(data["levelname"])
        data["levelno"] = found[1] if found else None
    return data


def parse_line(line: str, fmt: LineFormat, quick: re.Pattern[str] | None = None) -> tuple[int, Any]:
    """One line: ``(HEAD, record)``, ``(CONT, text)`` (a continuation line's text) or ``(RAW, line)``.

    With *quick* (a search's substring): a text record's first line without it is ``(HEAD, None)``,
    not read further (most lines of a search are not wanted; reading them costs ten times more).
    """
    if line.startswith("{"):
        record = _json_record(line, fmt)
        if record is not None:
            return HEAD, record
    elif line[:1].isdigit():
        if quick is not None and quick.search(line) is None:
            head = _HEADISH.match(line)
            if head is not None and fmt.level(head.group(1)) is not None:
                return HEAD, None
        record = _text_record(line, fmt, fmt.peer) or _text_record(line, fmt, not fmt.peer)
        if record is not None:
            return HEAD, record
        match = _CONTINUED.fullmatch(line)
        if match is not None and " | " not in match.group(2):
            return CONT, match.group(3)
    return (CONT, line) if fmt.plain_continuations else (RAW, line)


def _raw(text: str) -> dict[str, Any]:
    return {"time": None, "created": None, "message": text}


def _decode(data: bytes, cut: bool) -> str:
    text = data.decode("utf-8", "replace")
    if text.endswith("\r"):
        text = text[:-1]
    return text + CUT if cut else text


# --- lines of a file --------------------------------------------------------------------------

Line = tuple[int, int, str]
"""(line number, byte offset of its start or -1, text)."""


class _Budget:
    """Counts lines read: every :data:`PAUSE_EVERY` calls *pause* and checks the deadline."""

    def __init__(self, seconds: float, pause: Callable[[], None], clock: Callable[[], float]) -> None:
        self._clock = clock
        self._end = clock() + seconds
        self._pause = pause
        self._count = 0

    def tick(self, weight: int = 1) -> None:
        """One line read (or *weight* lines' worth of other work)."""
        self._count += weight
        if self._count >= PAUSE_EVERY:
            self._count = 0
            self._pause()
            if self._clock() > self._end:
                raise _Deadline


_CHUNK_WEIGHT: Final = 200
"""A 1 MiB chunk counted through costs about as much as this many lines parsed."""


class LineCounts:
    """Newlines counted in the files so far, by inode: a file only grows (the collector appends), so
    the next search counts only what was added. A file whose start differs, or that shrank, is counted
    again."""

    MAX_ENTRIES: Final = 10_000

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], tuple[int, int, bytes]] = {}

    def count(self, fd: int, end: int, budget: _Budget) -> int:
        """Newlines in the first *end* bytes of the open file *fd*."""
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        head = os.pread(fd, 64, 0)
        pos, count = 0, 0
        known = self._known.get(key)
        if known is not None and known[0] <= end and known[2] == head:
            pos, count = known[0], known[1]
        while pos < end:
            chunk = os.pread(fd, min(1024 * 1024, end - pos), pos)
            if not chunk:
                break
            count += chunk.count(b"\n")
            pos += len(chunk)
            budget.tick(_CHUNK_WEIGHT)
        if len(self._known) >= self.MAX_ENTRIES:
            self._known.clear()
        self._known[key] = (pos, count, head)
        return count


def _complete_end(fd: int, size: int, budget: _Budget) -> int:
    """*size*, or less: the end of the last complete line (a line still being written is left out)."""
    pos = size
    while pos > 0:
        start = max(0, pos - CHUNK)
        chunk = os.pread(fd, pos - start, start)
        found = chunk.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        pos = start
        budget.tick(_CHUNK_WEIGHT // 16)
    return 0


class _Skipper:
    """Says whether a run of lines may be passed over unread (only counted): none of its lines
    holds the search's substring, or none names a wanted level, or none a wanted source (the
    bytes are searched, at memory speed); and the reader holds no continuation lines waiting for
    their record's first line, and the run does not start with a continuation line."""

    def __init__(
        self, fmt: LineFormat, text: bytes | None, levels: list[bytes] | None, sources: list[bytes] | None
    ) -> None:
        self.fmt = fmt
        self.text = text
        self.levels = levels
        self.sources = sources
        self.idle = True

    def __call__(self, region: bytes) -> bool:
        if not self.idle:
            return False
        # bytes.lower() and `in` run at memory speed; an IGNORECASE regex is ten times slower.
        if not (
            (self.text is not None and self.text not in region.lower())
            or (self.levels is not None and not any(needle in region for needle in self.levels))
            or (self.sources is not None and not any(needle in region for needle in self.sources))
        ):
            return False
        return not self.continues(region)

    def continues(self, data: bytes) -> bool:
        """Whether the first line of *data* is a continuation line."""
        newline = data.find(b"\n")
        first = data[: newline if 0 <= newline < MAX_LINE_BYTES else MAX_LINE_BYTES]
        return parse_line(_decode(first, False), self.fmt)[0] == CONT


_PLAIN_NAME: Final = re.compile(r"[\x21-\x7e]+", re.ASCII)


def _column(name: str, key: str) -> list[bytes]:
    """How a level or source name shows in a text line and in a --json line."""
    return [f" | {name} | ".encode(), f'"{key}": "{name}"'.encode()]


def _skipper(chosen: Filter, fmt: LineFormat) -> _Skipper | None:
    """What lets a search pass over runs of lines: the substring (ASCII only: bytes are lowered as
    ASCII), the level names at or above the minimum, the sources (plain names only)."""
    quick = _quick(chosen)
    text = chosen.query.encode().lower() if quick is not None and chosen.query.isascii() else None
    levels = None
    if chosen.min_level:
        levels = [b" | Level ", b'"levelname": "Level ']  # numbered levels: never skipped
        for name in fmt.levels.names:
            found = fmt.levels.lookup(name)
            if found is not None and found[1] >= chosen.min_level and _PLAIN_NAME.fullmatch(name):
                levels += _column(name, "levelname")
    sources = None
    if chosen.sources and all(
        _PLAIN_NAME.fullmatch(name) and '"' not in name and "\\" not in name for name in chosen.sources
    ):
        sources = [needle for name in chosen.sources for needle in _column(name, "source")]
    if text is None and levels is None and sources is None:
        return None
    return _Skipper(fmt, text, levels, sources)


def _lines_backward(
    fd: int, end: int, last_no: int, budget: _Budget, skip: Callable[[bytes], bool] | None = None
) -> Iterator[Line]:
    """The complete lines of the first *end* bytes (which end in a newline), last first; with
    *skip*, the lines wholly inside a chunk are passed over (only counted) when it says so."""
    if end <= 0:
        return
    line_end = end - 1  # the last line's newline
    pos = line_end
    pieces: list[bytes] = []
    kept = 0
    number = last_no
    while pos > 0:
        start = max(0, pos - CHUNK)
        chunk = os.pread(fd, pos - start, start)
        if len(chunk) != pos - start:
            return  # the file shrank under us: what was read stands
        stop = len(chunk)
        skipped = False
        while True:
            found = chunk.rfind(b"\n", 0, stop)
            if found < 0:
                if kept <= MAX_LINE_BYTES:
                    pieces.append(chunk[:stop])
                    kept += stop
                budget.tick(_CHUNK_WEIGHT // 16)  # a long line: many chunks without a newline
                break
            pieces.append(chunk[found + 1 : stop])
            yield _line(fd, number, start + found + 1, line_end, pieces)
            budget.tick()
            number -= 1
            line_end = start + found
            pieces = []
            kept = 0
            stop = found
            if skip is not None and not skipped:
                skipped = True
                first = chunk.find(b"\n", 0, stop)
                if 0 <= first < stop and skip(chunk[first + 1 : stop]):
                    count = chunk.count(b"\n", first + 1, stop) + 1
                    number -= count
                    line_end = start + first
                    stop = first
                    budget.tick(count // 16 + 1)
        pos = start
    yield _line(fd, number, 0, line_end, pieces)


def _lines_skipping(stream: IO[bytes], budget: _Budget, skip: _Skipper) -> Iterator[Line]:  # noqa: C901 - one loop over blocks, kept together
    """The lines of a compressed file, first first, read in blocks: a block's complete lines are
    passed over (only counted) when *skip* says so and the next block does not start with a
    continuation line (the record of one of them would go on there)."""
    number = 1
    carry = b""
    held: bytes | None = None  # a block's complete lines, waiting for the next block
    dropping = False  # the rest of an over-long line
    while True:
        block = stream.read(CHUNK)
        budget.tick(_CHUNK_WEIGHT // 16)
        if not block:
            break
        if dropping:
            newline = block.find(b"\n")
            if newline < 0:
                continue
            block, dropping = block[newline + 1 :], False
        data = carry + block
        last = data.rfind(b"\n")
        if last < 0:
            carry = data
            if len(data) > MAX_LINE_BYTES:
                if held is not None:
                    number = yield from _emit(held, number, budget)
                    held = None
                yield number, -1, _decode(data[:MAX_LINE_BYTES], True)
                number += 1
                carry, dropping = b"", True
            continue
        region, carry = data[:last], data[last + 1 :]
        if held is not None:
            if skip(held) and not skip.continues(region):
                number += held.count(b"\n") + 1
            else:
                number = yield from _emit(held, number, budget)
        held = region
    if held is not None:
        if skip(held) and not (carry and skip.continues(carry)):
            number += held.count(b"\n") + 1
        else:
            number = yield from _emit(held, number, budget)
    if carry and not dropping:
        yield number, -1, _decode(carry[:MAX_LINE_BYTES], len(carry) > MAX_LINE_BYTES)


def _emit(region: bytes, number: int, budget: _Budget) -> Generator[Line, None, int]:
    for data in region.split(b"\n"):
        yield number, -1, _decode(data[:MAX_LINE_BYTES], len(data) > MAX_LINE_BYTES)
        budget.tick()
        number += 1
    return number


def _line(fd: int, number: int, start: int, end: int, pieces: list[bytes]) -> Line:
    if end - start > MAX_LINE_BYTES:
        return number, start, _decode(os.pread(fd, MAX_LINE_BYTES, start), True)
    return number, start, _decode(b"".join(reversed(pieces)), False)


def _lines_forward(
    stream: IO[bytes], first_no: int, budget: _Budget, end: int | None = None
) -> Iterator[Line]:
    """The lines of *stream* from where it is; with *end* (a plain file) only complete lines before it."""
    number = first_no
    pos = stream.tell() if end is not None else -1
    while True:
        room = MAX_LINE_BYTES + 1 if end is None else min(MAX_LINE_BYTES + 1, end - pos)
        if room <= 0:
            return
        data = stream.readline(room)
        if not data:
            return
        cut = False
        if not data.endswith(b"\n"):
            if len(data) < room or (end is not None and pos + len(data) >= end):
                if end is not None:
                    return  # a partial last line
                yield number, -1, _decode(data, False)  # a finished (.gz) file's last line
                return
            cut = True
            data = data[:MAX_LINE_BYTES]
            skipped = len(data) + 1
            while True:  # the rest of an over-long line
                room = CHUNK if end is None else min(CHUNK, end - pos - skipped)
                if room <= 0:
                    return
                more = stream.readline(room)
                skipped += len(more)
                if not more or more.endswith(b"\n"):
                    break
                budget.tick(_CHUNK_WEIGHT // 16)
            size = skipped
        else:
            size = len(data)
            data = data[:-1]
        yield number, pos, _decode(data, cut)
        budget.tick()
        number += 1
        if pos >= 0:
            pos += size


# --- lines to records -------------------------------------------------------------------------


def _records_backward(
    lines: Iterable[Line],
    fmt: LineFormat,
    quick: re.Pattern[str] | None = None,
    skipper: _Skipper | None = None,
) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(line number, record), last first: continuation lines joined to the record they follow.

    With *quick*, a record none of whose lines holds it comes as None (see :func:`parse_line`);
    *skipper* is told whether continuation lines are waiting for their record's first line.
    """
    pending: list[tuple[int, str, str]] = []  # (number, text, raw line), last first
    size = 0
    for number, _, text in lines:
        if skipper is not None:
            skipper.idle = True  # set again below while continuation lines wait
        check = quick
        if check is not None and pending and any(check.search(raw) for _, _, raw in pending):
            check = None
        kind, value = parse_line(text, fmt, check)
        if kind == CONT:
            pending.append((number, value, text))
            size += len(text)
            if len(pending) > MAX_CONTINUATION_LINES or size > MAX_RECORD_CHARS:
                yield pending[-1][0], _raw("\n".join(raw for _, _, raw in reversed(pending)))
                pending, size = [], 0
            elif skipper is not None:
                skipper.idle = False
            continue
        if kind == HEAD:
            if pending and value is not None:
                value["message"] = "\n".join([value["message"], *(cont for _, cont, _ in reversed(pending))])
            pending, size = [], 0
            yield number, value
            continue
        if pending:
            yield pending[-1][0], _raw("\n".join(raw for _, _, raw in reversed(pending)))
            pending, size = [], 0
        yield number, _raw(value)
    if pending:
        yield pending[-1][0], _raw("\n".join(raw for _, _, raw in reversed(pending)))


def _records_forward(lines: Iterable[Line], fmt: LineFormat) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(first line, last line, record) in file order, continuation lines joined to their record."""
    current: dict[str, Any] | None = None
    first = last = 0
    texts: list[str] = []
    size = 0
    for number, _, text in lines:
        kind, value = parse_line(text, fmt)
        if (
            kind == CONT
            and current is not None
            and len(texts) < MAX_CONTINUATION_LINES
            and size < MAX_RECORD_CHARS
        ):
            texts.append(value)
            size += len(value)
            last = number
            continue
        if current is not None:
            if len(texts) > 1:
                current["message"] = "\n".join(texts)
            yield first, last, current
            current = None
        first = last = number
        if kind == HEAD:
            current = value
            texts = [value["message"]]
        else:
            current = _raw(text)
            texts = [text]
            if kind == RAW:
                yield first, last, current
                current = None
        size = len(texts[0])
    if current is not None:
        if len(texts) > 1:
            current["message"] = "\n".join(texts)
        yield first, last, current


# --- the files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogFile:
    """One file a search may read."""

    path: str
    """Relative to ``--dir``, with ``/``."""
    base: str
    """The current file's name this one belongs to (``app2.log`` for ``app2.log.2026-12-01.gz``)."""
    compressed: bool
    mtime: float
    rank: int
    """0: a per-source file at the top (read first); 1: the errors file, route files, backups of those."""


def log_name(name: str) -> tuple[str, bool] | None:
    """``(base, compressed)`` for a current or rotated log file's name, None for any other name."""
    match = _ROTATED.fullmatch(name)
    if match is not None:
        base = match.group(1)
        compressed = match.group(3) is not None
    elif _CURRENT.fullmatch(name):
        base, compressed = name, False
    else:
        return None
    if base in _SKIPPED or name.startswith("."):
        return None
    return base, compressed


def list_files(root: str, errors_file: str = ERRORS_FILE) -> list[LogFile]:
    """The log files under *root* (subdirectories too, no link followed), unordered."""
    found: list[LogFile] = []
    plain_backups: set[str] = set()
    stack = [""]
    while stack and len(found) < MAX_FILES:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel) if rel else root))
        except OSError:
            continue
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith("."):
                        stack.append(path)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                named = log_name(entry.name)
                if named is None:
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            base, compressed = named
            top = rel == ""
            rank = 0 if top and base != errors_file else 1
            if not compressed and base != entry.name:
                plain_backups.add(path)
            found.append(LogFile(path, base, compressed, mtime, rank))
    # A backup being compressed exists twice for a moment: read the plain one.
    return [f for f in found if not (f.compressed and f.path[:-3] in plain_backups)]


# --- search -----------------------------------------------------------------------------------


@dataclass
class Done:
    """The last line of an answer."""

    count: int = 0
    truncated: bool = False
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"done": True, "count": self.count, "truncated": self.truncated, "reason": self.reason}


_Key = tuple[Any, ...]


def _identity(record: Mapping[str, Any]) -> _Key:
    return (
        record.get("time"),
        record.get("source"),
        record.get("levelname"),
        record.get("subtopic"),
        record.get("host"),
        record.get("pid"),
        record.get("message"),
    )


def _chars(record: Mapping[str, Any]) -> int:
    message = record.get("message")
    return len(message) if isinstance(message, str) else 0


class _Found:
    """The newest *limit* matches so far (a heap, oldest on top), each record once across files."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.heap: list[tuple[float, str, int, _Key | None, dict[str, Any]]] = []
        self.seen: dict[_Key, list[Any]] = {}
        self.dropped = False
        self.chars = 0

    @property
    def full(self) -> bool:
        return len(self.heap) >= self.limit

    @property
    def oldest(self) -> float:
        return self.heap[0][0]

    def add(self, when: float, path: str, line: int, record: dict[str, Any]) -> None:
        key = _identity(record) if record.get("time") is not None else None
        if key is not None:
            entry = self.seen.get(key)
            if entry is not None and entry[0] != path:
                return  # the same record from another file (errors.log, a route's copy)
        item = (when, path, line, key, record)
        if self.full:
            if item[:3] <= self.heap[0][:3]:
                self.dropped = True
                return
            self._forget(heapq.heapreplace(self.heap, item))
            self.dropped = True
        else:
            heapq.heappush(self.heap, item)
        if key is not None:
            entry = self.seen.setdefault(key, [path, 0])
            entry[1] += 1
        self.chars += _chars(record)
        while self.chars > MAX_ANSWER_CHARS and len(self.heap) > 1:
            self._forget(heapq.heappop(self.heap))
            self.dropped = True

    def _forget(self, item: tuple[float, str, int, _Key | None, dict[str, Any]]) -> None:
        self.chars -= _chars(item[4])
        key = item[3]
        if key is not None:
            entry = self.seen.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self.seen[key]

    def records(self) -> list[dict[str, Any]]:
        return [item[4] for item in sorted(self.heap, key=lambda item: item[:3])]


@dataclass(frozen=True)
class Query:
    """One ``/search``: the filter, the time range, the most records."""

    filter: Filter = field(default_factory=Filter)
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT


class History:
    """The files under one ``--dir``, searched and opened in context."""

    def __init__(
        self,
        root: str,
        fmt: LineFormat | None = None,
        errors_file: str = ERRORS_FILE,
        source_files: bool = True,
        deadline: float = DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """*source_files*: the default routes are on, so a top-level ``NAME.log`` holds the
        records of source NAME only (a search for other sources skips it)."""
        self.root = root
        self.fmt = fmt or LineFormat()
        self.errors_file = errors_file
        self.source_files = source_files
        self.deadline = deadline
        self.clock = clock
        self.counts = LineCounts()
        self.skipping = True
        """Pass over runs of lines a search cannot want (off only to test that it changes nothing)."""

    # -- query parameters

    def query(self, params: Mapping[str, list[str]]) -> Query:
        """``level``, ``source``, ``q``, ``since``, ``until``, ``limit``; HistoryError or FilterError."""
        chosen = Filter.from_query(params, self.fmt.levels)
        since = parse_when(params["since"][-1], self.fmt.utc) if params.get("since") else None
        until = parse_when(params["until"][-1], self.fmt.utc) if params.get("until") else None
        if since is not None and until is not None and since > until:
            raise HistoryError("since is after until")
        limit = _number(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        return Query(chosen, since, until, limit)

    # -- search

    def _wanted(self, log: LogFile, query: Query) -> bool:
        if query.since is not None and log.mtime < query.since - SLACK:
            return False
        if not (self.source_files and query.filter.sources and "/" not in log.path):
            return True
        stem = log.base[:-4]
        if log.base in (self.errors_file, OVERFLOW_FILE):
            return True
        return any(safe_name(source) == stem for source in query.filter.sources)

    def search(self, query: Query, pause: Callable[[], None] = lambda: None) -> Iterator[dict[str, Any]]:
        """The newest ``query.limit`` matching records, oldest first, then the done object."""
        budget = _Budget(self.deadline, pause, self.clock)
        found = _Found(query.limit)
        done = Done()
        files = [log for log in list_files(self.root, self.errors_file) if self._wanted(log, query)]
        files.sort(key=lambda log: (log.rank, -log.mtime, log.path))
        try:
            for log in files:
                if found.full and log.mtime < found.oldest - SLACK:
                    found.dropped = True
                    continue
                self._search_file(log, query, found, budget)
        except _Deadline:
            done.truncated, done.reason = True, "deadline"
        records = found.records()
        yield from records
        done.count = len(records)
        if done.reason is None and found.dropped:
            done.truncated, done.reason = True, "limit"
        yield done.as_dict()

    def _search_file(self, log: LogFile, query: Query, found: _Found, budget: _Budget) -> None:
        try:
            opened = _open(os.path.join(self.root, log.path))
        except OSError:
            return
        with opened as stream:
            if log.compressed:
                self._search_gz(stream, log, query, found, budget)
            else:
                self._search_plain(stream.fileno(), log, query, found, budget)

    def _search_gz(
        self, stream: IO[bytes], log: LogFile, query: Query, found: _Found, budget: _Budget
    ) -> None:
        """A compressed backup, read forwards: its newest ``limit`` matches go to *found*."""
        when = 0.0
        skipper = _skipper(query.filter, self.fmt) if self.skipping else None
        lines: Iterator[Line]
        if skipper is not None:
            lines = _lines_skipping(stream, budget, skipper)
        elif query.filter.empty and query.since is None and query.until is None and self.skipping:
            # Everything wanted: only the last lines can hold the newest records, so only they are read as records.
            tail: collections.deque[Line] = collections.deque(maxlen=query.limit * 4 + 100)
            try:
                tail.extend(_lines_forward(stream, 1, budget))
            except (OSError, EOFError, zlib.error):
                pass
            lines = iter(tail)
        else:
            lines = _lines_forward(stream, 1, budget)
        try:
            for first, _, record in _records_forward(lines, self.fmt):
                created = record.get("created")
                when = created if created is not None else when
                if _in_range(when, query) and query.filter.matches(record):
                    record["file"], record["line"] = log.path, first
                    found.add(when, log.path, first, record)
        except (OSError, EOFError, zlib.error):
            pass  # a damaged or unfinished archive: what was read stands

    def _search_plain(self, fd: int, log: LogFile, query: Query, found: _Found, budget: _Budget) -> None:
        """A plain file, read backwards until its records are older than what is still wanted."""
        end = _complete_end(fd, os.fstat(fd).st_size, budget)
        last = self.counts.count(fd, end, budget)
        when = log.mtime
        since = query.since
        quick = _quick(query.filter)
        skipper = _skipper(query.filter, self.fmt) if self.skipping else None
        lines = _lines_backward(fd, end, last, budget, skipper)
        for number, record in _records_backward(lines, self.fmt, quick, skipper):
            if record is None:
                continue  # not wanted, and not read further
            created = record.get("created")
            if created is not None:
                when = created
            if since is not None and when < since - SLACK:
                return
            if found.full and when < found.oldest - SLACK:
                found.dropped = True
                return
            if _in_range(when, query) and query.filter.matches(record):
                record["file"], record["line"] = log.path, number
                found.add(when, log.path, number, record)

    # -- context

    def resolve(self, rel: str) -> str:
        """The full path of a log file given relative to ``--dir``; :class:`NotFound` for anything else."""
        if not rel or "\x00" in rel or rel.startswith(("/", "\\")) or len(rel) > 4096:
            raise NotFound("no such log file")
        parts = rel.replace("\\", "/").split("/")
        if any(part in ("", ".", "..") for part in parts) or log_name(parts[-1]) is None:
            raise NotFound("no such log file")
        root = os.path.realpath(self.root)
        full = os.path.realpath(os.path.join(root, *parts))
        if os.path.commonpath([root, full]) != root or full != os.path.join(root, *parts):
            raise NotFound("no such log file")  # a link on the way: refused, inside or out
        if not os.path.isfile(full):
            raise NotFound("no such log file")
        return full

    def context(
        self, rel: str, line: int, before: int, after: int, pause: Callable[[], None] = lambda: None
    ) -> Iterator[dict[str, Any]]:
        """The records around line *line* of *rel*: up to *before* records before the one holding
        that line, it, up to *after* records after; then the done object. NotFound first if the file
        is not one (raised before anything is yielded)."""
        full = self.resolve(rel)
        try:
            stream = _open(full, nofollow=True)
        except OSError:
            raise NotFound("no such log file") from None
        return self._context(stream, rel, line, before, after, pause)

    def _context(
        self, stream: IO[bytes], rel: str, line: int, before: int, after: int, pause: Callable[[], None]
    ) -> Iterator[dict[str, Any]]:
        budget = _Budget(self.deadline, pause, self.clock)
        done = Done()
        kept: collections.deque[dict[str, Any]] = collections.deque(maxlen=before + 1)
        following: list[dict[str, Any]] = []
        try:
            with stream:
                if isinstance(stream, gzip.GzipFile):
                    lines = _lines_forward(stream, 1, budget)
                else:
                    fd = stream.fileno()
                    end = _complete_end(fd, os.fstat(fd).st_size, budget)
                    # Start some way before the line: far enough for *before* records of a few lines each.
                    first = max(1, line - (before + 1) * 20 - 2000)
                    stream.seek(_offset_of_line(fd, first, end, budget))
                    lines = _lines_forward(stream, first, budget, end)
                try:
                    for start, _, record in _records_forward(lines, self.fmt):
                        record["file"], record["line"] = rel, start
                        if start <= line:
                            kept.append(record)
                        elif len(following) < after:
                            following.append(record)
                        else:
                            done.truncated, done.reason = True, "limit"
                            break
                except (OSError, EOFError, zlib.error):
                    pass
        except _Deadline:
            done.truncated, done.reason = True, "deadline"
        records = [*kept, *following]
        yield from records
        done.count = len(records)
        yield done.as_dict()


def _quick(chosen: Filter) -> re.Pattern[str] | None:
    """The filter's pattern if every record it matches has it in one of its lines as written: a
    plain substring (a regular expression may anchor on the fields' joins), not inverted."""
    if chosen.pattern is None or chosen.invert or chosen.query.startswith("/") or "\n" in chosen.query:
        return None
    return chosen.pattern


def _in_range(when: float, query: Query) -> bool:
    return (query.since is None or when >= query.since) and (query.until is None or when <= query.until)


def _offset_of_line(fd: int, number: int, end: int, budget: _Budget) -> int:
    """Where line *number* (1-based) starts; *end* if the file has fewer lines."""
    if number <= 1:
        return 0
    left = number - 1
    pos = 0
    while pos < end:
        chunk = os.pread(fd, min(1024 * 1024, end - pos), pos)
        if not chunk:
            break
        count = chunk.count(b"\n")
        if count >= left:
            found = -1
            for _ in range(left):
                found = chunk.index(b"\n", found + 1)
            return pos + found + 1
        left -= count
        pos += len(chunk)
        budget.tick(_CHUNK_WEIGHT)
    return end


def _open(path: str, nofollow: bool = False) -> IO[bytes]:
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
    fd = os.open(path, flags)
    raw = open(fd, "rb")  # noqa: SIM115 - the caller closes it
    if path.endswith(".gz"):
        return _GzipFile(raw)  # type: ignore[return-value]
    return raw


class _GzipFile(gzip.GzipFile):
    """A GzipFile over a file opened here (no link followed), which it closes too."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def _number(params: Mapping[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = params.get(name)
    if not values:
        return default
    text = values[-1].strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise HistoryError(f"{name}: give a whole number from {low} to {high}")
    return int(text)


# --- the WSGI answers -------------------------------------------------------------------------

NDJSON: Final = "application/x-ndjson"


def respond(
    history: History,
    path: str,
    query_string: str,
    start_response: Callable[..., Any],
    pause: Callable[[], None] = lambda: None,
    on_error: Callable[[], None] = lambda: None,
) -> Iterable[bytes]:
    """``/search`` or ``/context`` as a WSGI answer: ndjson, streamed; a 400 or 404 with one line."""
    params = urllib.parse.parse_qs(query_string, keep_blank_values=False)
    try:
        if path == "/search":
            records = history.search(history.query(params), pause)
        else:
            rel = (params.get("file") or [""])[-1]
            line = _number(params, "line", 0, 1, 2**62)
            if line == 0:
                raise HistoryError("line: give the line number (from 1)")
            before = _number(params, "before", DEFAULT_CONTEXT, 0, MAX_CONTEXT)
            after = _number(params, "after", DEFAULT_CONTEXT, 0, MAX_CONTEXT)
            records = history.context(rel, line, before, after, pause)
    except (HistoryError, FilterError) as exc:
        return _plain(start_response, "400 Bad Request", f"{exc}\n")
    except NotFound as exc:
        return _plain(start_response, "404 Not Found", f"{exc}\n")
    start_response("200 OK", [("Content-Type", NDJSON), ("Cache-Control", "no-store")])
    return _lines(records, on_error)


def _lines(records: Iterator[dict[str, Any]], on_error: Callable[[], None]) -> Iterator[bytes]:
    count = 0
    try:
        for record in records:
            if "done" not in record:
                count += 1
            yield (strict_json(record) + "\n").encode()
    except Exception:  # noqa: BLE001 - a bug must end the answer with a done line, not a broken stream
        on_error()
        yield (strict_json(Done(count, True, "error").as_dict()) + "\n").encode()


def _plain(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [text.encode()]
