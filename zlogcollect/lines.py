"""Lines to records for `zlogcollect ship` and `send`: splitting, escaping, levels, checks.

Pure (stdlib, ``wire`` and ``encode`` only): no sockets, no files, no threads.
:class:`LineSplitter` turns chunks of bytes into lines of bounded size,
:func:`message_body` turns a line into the text frame (invalid UTF-8 and NUL
escaped, an over-long line cut with the handler's note), :class:`LevelRule`
picks each line's level, and :func:`check_endpoint` / :func:`check_app` check
the options before anything connects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from zlogcollect.encode import cut
from zlogcollect.wire import STANDARD_LEVELS, MalformedRecord, build_topic, encode_extension, parse_topic

__all__ = [
    "LEVEL_NAMES",
    "ExtensionTemplate",
    "LevelRule",
    "Line",
    "LineSplitter",
    "OptionError",
    "check_app",
    "check_endpoint",
    "level_named",
    "message_body",
    "message_text",
    "record_fields",
]

LEVEL_NAMES: Final[Mapping[str, str]] = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "INFORMATIONAL": "INFO",
    "NOTICE": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "ERR": "ERROR",
    "CRITICAL": "CRITICAL",
    "CRIT": "CRITICAL",
    "FATAL": "CRITICAL",
    "ALERT": "CRITICAL",
    "EMERG": "CRITICAL",
    "EMERGENCY": "CRITICAL",
    "PANIC": "CRITICAL",
}
"""Level names a line may carry (any case): Python's, their aliases and syslog's severities."""


class OptionError(ValueError):
    """An option `ship` or `send` cannot use; the message is one line naming it."""


def level_named(name: str) -> tuple[str, int] | None:
    """``(canonical name, number)`` for a level name of :data:`LEVEL_NAMES` in any case, else None."""
    canonical = LEVEL_NAMES.get(name.strip().upper())
    if canonical is None:
        return None
    return canonical, STANDARD_LEVELS[canonical]


class LevelRule:
    """Each line's level: the ``level`` group of *pattern* when it names a level, else *default*."""

    def __init__(self, default: str, pattern: str | None = None) -> None:
        found = level_named(default)
        if found is None:
            raise OptionError(f"level {default!r}: expected one of {', '.join(LEVEL_NAMES)} (any case)")
        self.default = found
        self.pattern: re.Pattern[str] | None = None
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise OptionError(f"level-from {pattern!r}: not a regular expression: {exc}") from None
            if "level" not in compiled.groupindex:
                raise OptionError(
                    f"level-from {pattern!r}: needs a named group 'level', e.g. '\\[(?P<level>\\w+)\\]'"
                )
            self.pattern = compiled

    def level_of(self, text: str) -> tuple[str, int]:
        """The level for the line *text*."""
        if self.pattern is None:
            return self.default
        match = self.pattern.search(text)
        if match is None:
            return self.default
        word = match.group("level")
        if not word:
            return self.default
        return level_named(word) or self.default


@dataclass(frozen=True, slots=True)
class Line:
    """One line of input without its newline: *data* (at most the splitter's limit) and what was cut.

    *size* is how many bytes the line took in the source, newline included
    (for a progress bar); *cut* is how many bytes beyond *data* were skipped.
    """

    data: bytes
    size: int
    cut: int = 0


class LineSplitter:
    """Chunks of bytes in, complete lines out, none longer than *limit* bytes in memory.

    A line longer than *limit* keeps its first *limit* bytes; the rest is
    skipped as it arrives and counted in :attr:`Line.cut`, so a gigabyte
    without a newline costs *limit* bytes. The bytes after the last newline
    wait for the next chunk; :meth:`finish` returns them as a last line (end
    of input, rotation), :meth:`reset` forgets them (truncation).
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(int(limit), 1)
        self._partial = b""
        self._skipped = 0

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held (or skipped) so far."""
        return len(self._partial) + self._skipped

    def feed(self, data: bytes) -> list[Line]:
        """The lines *data* completes, in order."""
        if not data:
            return []
        pieces = data.split(b"\n")
        last = pieces.pop()
        lines: list[Line] = []
        if pieces:
            first = self._partial + pieces[0]
            lines.append(self._line(first, self._skipped, newline=True))
            self._partial, self._skipped = b"", 0
            limit = self.limit
            for piece in pieces[1:]:
                if len(piece) <= limit:
                    lines.append(Line(piece, len(piece) + 1))
                else:
                    lines.append(Line(piece[:limit], len(piece) + 1, len(piece) - limit))
        self._keep(last)
        return lines

    def _keep(self, tail: bytes) -> None:
        room = self.limit - len(self._partial)
        if len(tail) <= room:
            self._partial += tail
        else:
            self._partial += tail[: max(room, 0)]
            self._skipped += len(tail) - max(room, 0)

    def _line(self, data: bytes, skipped: int, newline: bool) -> Line:
        size = len(data) + skipped + int(newline)
        if len(data) > self.limit:
            return Line(data[: self.limit], size, skipped + len(data) - self.limit)
        return Line(data, size, skipped)

    def finish(self) -> Line | None:
        """The incomplete last line, if any (its input ended without a newline)."""
        if not self._partial and not self._skipped:
            return None
        line = self._line(self._partial, self._skipped, newline=False)
        self.reset()
        return line

    def reset(self) -> None:
        """Forget the incomplete line (its file was truncated under it)."""
        self._partial, self._skipped = b"", 0


def message_text(line: Line) -> str:
    """The line as text: invalid UTF-8 and NUL escaped as ``\\xNN``, a trailing CR dropped.

    The collector refuses a frame with invalid UTF-8 or a NUL, so both are
    sent escaped (never skipped): the line arrives, readable, and nothing is lost.
    Other control characters are the collector's to escape.
    """
    data = line.data
    if data.endswith(b"\r"):
        data = data[:-1]
    text = data.decode("utf-8", "backslashreplace")
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text


def message_body(text: str, limit: int, skipped: int = 0) -> bytes:
    """The text frame for *text*: cut to *limit* bytes with the handler's note when it is longer.

    *skipped* counts bytes of the line that were never read (see :class:`LineSplitter`).
    """
    body = text.encode("utf-8", "backslashreplace")
    if not skipped:
        return body if len(body) <= limit else cut(body, limit)
    # encode.cut's note, counting the bytes that were never read as cut too.
    kept = body[: max(limit - 120, 0)].decode("utf-8", "ignore").encode()
    note = (
        f"\n[zlogcollect cut {len(body) + skipped - len(kept):,} bytes here:"
        " the record was over the size limit]"
    )
    return kept + note.encode()


def record_fields(
    created: float,
    level: tuple[str, int],
    host: str,
    pid: int,
    path: str | None,
    lineno: int | None,
    pub: str,
    seq: int,
) -> dict[str, Any]:
    """The structured extension's fields for one shipped line (see docs/WIRE.md).

    *path* and *lineno* say where the line was read (`ship`); `send` has neither.
    """
    fields: dict[str, Any] = {
        "created": created,
        "levelno": level[1],
        "host": host,
        "pid": pid,
        "process": "zlogcollect-ship",
        "logger": "zlogcollect.ship",
    }
    if path is not None:
        fields["path"] = path
    if lineno is not None:
        fields["line"] = lineno
    fields["pub"] = pub
    fields["seq"] = seq
    return fields


class ExtensionTemplate:
    """:func:`record_fields` encoded as the third frame, byte for byte ``wire.encode_extension``'s output.

    The part that is the same for every line of one input at one level is
    encoded once and cached; each line adds only its time, line number and
    sequence number (a hundred thousand lines would otherwise spend most of
    their time in encoding it).
    """

    def __init__(self, host: str, pid: int, pub: str) -> None:
        self.host, self.pid, self.pub = host, pid, pub
        self._pub = orjson.dumps(pub).decode()
        self._fragments: dict[tuple[int, str | None], str] = {}

    def _fragment(self, levelno: int, path: str | None) -> str:
        fields: dict[str, Any] = record_fields(0.0, ("", levelno), self.host, self.pid, path, None, "", 0)
        for key in ("created", "pub", "seq"):
            del fields[key]
        fragment = encode_extension(fields).decode()[len('{"v":1,') : -1]
        if len(self._fragments) < 1000:
            self._fragments[(levelno, path)] = fragment
        return fragment

    def encode(self, created: float, levelno: int, path: str | None, lineno: int | None, seq: int) -> bytes:
        """The extension for one line; *created* must be a finite float (``time.time()``)."""
        fragment = self._fragments.get((levelno, path)) or self._fragment(levelno, path)
        line = "" if lineno is None else f',"line":{int(lineno)}'
        stamp = orjson.dumps(float(created)).decode()  # orjson's float text, as encode_extension writes it
        return f'{{"v":1,"created":{stamp},{fragment}{line},"pub":{self._pub},"seq":{int(seq)}}}'.encode()


_IPC = re.compile(r"ipc://\S+")
_TCP = re.compile(r"tcp://(?P<host>[^\s;/\[\]*]+|\[[0-9A-Fa-f:.%\w]+\]):(?P<port>\d{1,5})")


def check_endpoint(endpoint: str) -> None:
    """Raise :class:`OptionError` unless *endpoint* is one a sender can connect to."""
    match = _TCP.fullmatch(endpoint)
    if match is not None:
        if ":" in match.group("host") and not match.group("host").startswith("["):
            raise OptionError(f"connect {endpoint!r}: expected tcp://HOST:PORT (an IPv6 address in brackets)")
        if 0 < int(match.group("port")) < 65536:
            return
        raise OptionError(f"connect {endpoint!r}: port {match.group('port')} is out of range (1-65535)")
    if _IPC.fullmatch(endpoint):
        return
    raise OptionError(
        f"connect {endpoint!r}: expected tcp://HOST:PORT or ipc://PATH, e.g. tcp://127.0.0.1:5558"
    )


def check_app(app: str, subtopic: str = "") -> None:
    """Raise :class:`OptionError` unless *app* and *subtopic* make a topic the collector splits back."""
    if not app or any(ch.isspace() for ch in app):
        raise OptionError(f"app {app!r}: expected a name without spaces, e.g. nginx or cron.backup")
    topic = build_topic(app, "INFO", subtopic)
    try:
        parsed, _ = parse_topic(topic)
    except MalformedRecord:  # pragma: no cover - INFO is always found
        parsed = None
    if parsed is None or parsed.root != app or parsed.subtopic != subtopic:
        raise OptionError(
            f"app {app!r}: a dotted part names a log level, so the collector would split the topic"
            " there; choose another name"
        )
