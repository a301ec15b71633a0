"""Record to text: the file line format, JSON lines, and the collector's time stamps."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

import orjson

from zlogcollect.helpers import JSON_ENCODER, BoundedCache
from zlogcollect.wire import Record, escape_controls

DEFAULT_FORMAT: Final = "%(asctime)s | %(levelname)s | %(source)s | %(origin)s | %(subtopic)s | %(message)s"
"""The default line: time, level, source, origin, subtopic, message, always six columns.

``2026-11-25 15:09:31.123 | ERROR | app1 | web01:4242 | db.query | timeout after 30 s``

The origin column is ``host:pid`` as the sender's structured extension gives
them, ``-`` for either part the record lacks, and a bare ``-`` for stock
senders that carry neither; a subtopic or source the record lacks is ``-``
too, so every line splits on ``" | "`` into the same six fields (the message,
last, may itself contain ``" | "``). Continuation lines of a multi-line
record carry their own short prefix (see :data:`CONTINUATION`).
"""

DEFAULT_PEER_FORMAT: Final = (
    "%(asctime)s | %(levelname)s | %(source)s | %(peer)s | %(origin)s | %(subtopic)s | %(message)s"
)
"""The default line of a collector with CURVE on: the peer's name (the certificate the record
came with) after the source, so seven columns.

``2026-11-25 15:09:31.123 | ERROR | app1 | app1 | web01:4242 | db.query | timeout after 30 s``
"""


def default_format(curve: bool) -> str:
    """The collector's default ``--format``: :data:`DEFAULT_PEER_FORMAT` with CURVE on, else :data:`DEFAULT_FORMAT`."""
    return DEFAULT_PEER_FORMAT if curve else DEFAULT_FORMAT


def peer_text(peer: str | None) -> str:
    """The peer column: ``-`` for none, else the name with control characters, tab and newline escaped."""
    if not peer:
        return "-"
    if peer.isprintable():
        return peer
    return escape_controls(peer).replace("\n", "\\n").replace("\t", "\\t")


CONTINUATION: Final = "+"
"""Marks continuation lines in ``prefix`` mode: ``2026-11-25 15:09:31.123 | app1 + KeyError: 'k'``."""

MULTILINE_MODES: Final = ("prefix", "plain")
"""``prefix``: every line after a record's first starts with its time, source and ``+``;
``plain``: continuation lines are written as the sender sent them."""

FIELDS: Final = (
    "asctime",
    "created",
    "received",
    "levelname",
    "levelno",
    "source",
    "peer",
    "subtopic",
    "topic",
    "origin",
    "message",
    "host",
    "pid",
    "process",
    "thread",
    "logger",
    "path",
    "line",
    "func",
    "seq",
)
"""Names a ``--format`` string may use; absent values show as ``-``.

``peer`` is the name of the CURVE certificate the record came with (``-`` without CURVE).

Any other name is looked up in the record's extra fields (the ``extra={...}``
of the log call, sent in the extension) and shows empty when the record has
no such field.
"""

_KNOWN: Final = frozenset(FIELDS)
_EXTENSION_FIELDS: Final = ("host", "pid", "process", "thread", "logger", "path", "line", "func", "seq")
_HOST_UNSAFE = re.compile(r"[^\w.@+\[\]:-]")
_MAX_ORIGIN_PART: Final = 255  # a host name is at most 253 bytes; anything longer is a peer's noise

MAX_PEERS_PER_TOPIC: Final = 1000
"""Peers whose line parts one topic keeps (the peer format); the topic's entry starts over past it."""

TEMPLATE_CACHE_ENTRIES: Final = 10_000
TEMPLATE_CACHE_BYTES: Final = 16 * 1024 * 1024
"""The per-topic template cache starts over past this many entries or characters,
so distinct huge topics from a peer cannot grow memory without bound."""


_Key: TypeAlias = "str | tuple[str, str | None]"
"""A template cache key: the topic, or the topic and the peer for a format that shows the peer."""


class FormatError(ValueError):
    """A ``--format`` string that cannot format a record."""


def format_time(stamp: float, utc: bool = False) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm`` in local time (or UTC), like logging's asctime with msecs."""
    seconds = int(stamp)
    millis = int((stamp - seconds) * 1000)
    parts = time.gmtime(seconds) if utc else time.localtime(seconds)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', parts)}.{millis:03d}"


_MILLIS: Final = tuple(f".{milli:03d}" for milli in range(1000))


class TimeFormatter:
    """:func:`format_time` with the date and time of the last second remembered.

    Records arrive in time order, so ``strftime`` runs about once a second
    instead of once a record.
    """

    __slots__ = ("_second", "_text", "_utc")

    def __init__(self, utc: bool = False) -> None:
        self._utc = utc
        self._second = -1
        self._text = ""

    def __call__(self, stamp: float) -> str:
        return self.text(stamp)

    def text(self, stamp: float) -> str:
        """*stamp* as text; hot callers bind this method (cheaper to call than the instance)."""
        seconds = int(stamp)
        if seconds != self._second:
            parts = time.gmtime(seconds) if self._utc else time.localtime(seconds)
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", parts)
            self._second = seconds
        # A table of ".000" to ".999": a format spec per record cost more than the rest of the line.
        return self._text + _MILLIS[int((stamp - seconds) * 1000)]


def _origin_part(value: Any) -> str:
    if value is None:
        return "-"
    if value.__class__ is int:
        return str(value)
    # A name from the network: no spaces, "|" or control characters that would
    # shift columns or forge lines, and no more than a host name can be.
    return _HOST_UNSAFE.sub("_", str(value)[:_MAX_ORIGIN_PART]) or "-"


def origin(meta: Mapping[str, Any]) -> str:
    """``host:pid`` from the extension, ``-`` for a missing part, ``-`` alone when both are missing."""
    host = meta.get("host")
    pid = meta.get("pid")
    if host is None and pid is None:
        return "-"
    return f"{_origin_part(host)}:{_origin_part(pid)}"


def bare_message(record: Record) -> str:
    """The message without the traceback the sender appended to it and also sent as ``exc``."""
    message = record.message
    exc = record.meta.get("exc")
    if exc and isinstance(exc, str) and message.endswith(exc):
        if len(message) == len(exc):
            return ""
        if message[-len(exc) - 1] == "\n":
            return message[: -len(exc) - 1]
    return message


def record_fields(record: Record, utc: bool = False) -> dict[str, Any]:
    """Every field a line format may use, with ``-`` for what the sender did not send."""
    meta = record.meta
    fields: dict[str, Any] = {
        "asctime": format_time(record.time, utc),
        "created": record.time,
        "received": record.received,
        "levelname": record.levelname,
        "levelno": record.levelno,
        "source": record.source or "-",
        "peer": peer_text(record.peer),
        "subtopic": record.subtopic or "-",
        "topic": record.topic,
        "origin": origin(meta),
        "message": record.message,
    }
    for name in _EXTENSION_FIELDS:
        value = meta.get(name)
        fields[name] = "-" if value is None else value
    exc = meta.get("exc")
    if exc and exc not in record.message:
        fields["message"] = f"{record.message}\n{exc}"
    return fields


_TOKEN = re.compile(r"%%|%\((\w+)\)[#0 +-]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]")
_PER_TOPIC: Final = frozenset({"levelname", "levelno", "source", "peer", "subtopic", "topic"})
"""Filled in once per topic (once per topic and peer when the format uses ``peer``)."""
_PER_RECORD: Final = frozenset({"asctime", "created", "received", "message", "origin"})


def _check_format(fmt: str, extras: frozenset[str]) -> None:
    """Raise :class:`FormatError` naming the field or spot of *fmt* that cannot format a record."""
    values = record_fields(Record("app", "INFO", 20, "sub", "message", 0.0))
    values.update(dict.fromkeys(extras, ""))
    # Every "%" must start a field or be "%%": "%s" would print the whole field dict.
    problem = _diagnose(fmt, values, extras)
    if problem is None:
        try:
            fmt % values
        except (TypeError, ValueError, KeyError) as exc:
            problem = f"it is not a valid %-style format ({exc})"
    if problem is not None:
        raise FormatError(
            f"{fmt!r}: {problem}; available fields: {', '.join(FIELDS)}, "
            "or the name of any extra field the records carry"
        )


def _diagnose(fmt: str, values: Mapping[str, Any], extras: frozenset[str]) -> str | None:
    pos = 0
    while (start := fmt.find("%", pos)) >= 0:
        match = _TOKEN.match(fmt, start)
        if match is None:
            return f"{fmt[start : start + 20]!r} is not a field like %(name)s"
        name = match.group(1)
        if name:
            try:
                match.group(0) % values
            except (TypeError, ValueError) as exc:
                if name in extras:
                    return (
                        f"{name!r} is no known field, so it comes from the record's extra fields and is "
                        f"empty when a record lacks it: {match.group(0)!r} cannot show an empty value, "
                        f"use %({name})s"
                    )
                return f"the field {name!r} cannot be shown as {match.group(0)!r} ({exc})"
        pos = match.end()
    return None


class TextFormatter:
    """Renders a record as one line (plus continuation lines) ending in ``\\n``.

    The fields that depend only on the topic (source, level, subtopic) are
    filled in once per distinct topic, giving a smaller template that each
    record then completes with its time, origin and message. Records whose
    extension adds a traceback, and formats that use extension or extra
    fields, take the general path through :func:`record_fields`.
    """

    def __init__(
        self,
        fmt: str = DEFAULT_FORMAT,
        utc: bool = False,
        multiline: str = "prefix",
        cache_bytes: int = TEMPLATE_CACHE_BYTES,
    ) -> None:
        if multiline not in MULTILINE_MODES:
            raise FormatError(f"multiline mode {multiline!r} is not one of {', '.join(MULTILINE_MODES)}")
        names = {m.group(1) for m in _TOKEN.finditer(fmt) if m.group(1)}
        self._extras = frozenset(names - _KNOWN)
        _check_format(fmt, self._extras)
        self._fmt = fmt
        self._utc = utc
        self._prefix = multiline == "prefix"
        self._time = TimeFormatter(utc).text
        self._fast = names <= _PER_TOPIC | _PER_RECORD
        self._uses = tuple(sorted(names & _PER_RECORD))
        # The default format (and any with plain %(asctime)s, %(origin)s, %(message)s
        # in that order and no other per-record field) is assembled by an f-string
        # from per-topic pieces: %-formatting a dict costs about three times as much.
        per_record = [m.group(0) for m in _TOKEN.finditer(fmt) if m.group(1) in _PER_RECORD]
        split = self._fast and per_record == ["%(asctime)s", "%(origin)s", "%(message)s"]
        self._assembled = split
        # A format with %(peer)s (DEFAULT_PEER_FORMAT) keys its parts (and templates) by topic and peer.
        self._by_peer = "peer" in names
        # Per topic (only one of the two is used, by the format): bounded, as topics come from the network.
        self._parts: BoundedCache[str, tuple[str, str, str, str]] = BoundedCache(
            TEMPLATE_CACHE_ENTRIES, cache_bytes
        )
        # The peer format's parts: per topic, then per peer (two lookups of strings are
        # cheaper than building and hashing a (topic, peer) key for every record).
        self._peer_parts: BoundedCache[str, dict[str | None, tuple[str, str, str, str]]] = BoundedCache(
            TEMPLATE_CACHE_ENTRIES, cache_bytes
        )
        self._templates: BoundedCache[_Key, str] = BoundedCache(TEMPLATE_CACHE_ENTRIES, cache_bytes)
        self._origins: BoundedCache[tuple[Any, Any], str] = BoundedCache(10_000)
        self._last_host: Any = None
        self._last_pid: Any = None
        self._last_origin = "-"

    def _filled(self, record: Record) -> str | None:
        """The format with the topic's fields filled in; None if one of them holds a newline."""
        values = {
            "levelname": record.levelname,
            "levelno": record.levelno,
            "source": record.source or "-",
            "peer": peer_text(record.peer),
            "subtopic": record.subtopic or "-",
            "topic": record.topic,
        }

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None or name not in _PER_TOPIC:
                return match.group(0)
            return (match.group(0) % values).replace("%", "%%")

        template = _TOKEN.sub(fill, self._fmt)
        if "\n" in template and self._prefix:
            return None  # a topic with a newline: the general path puts the prefix in
        return template + "\n"

    def _key(self, record: Record) -> _Key:
        return (record.topic, record.peer) if self._by_peer else record.topic

    def _template(self, record: Record) -> str | None:
        template = self._filled(record)
        if template is not None:
            self._templates.put(self._key(record), template, len(record.topic) + len(template))
        return template

    def _split(self, record: Record) -> tuple[str, str, str, str] | None:
        """The default format for one topic as the four texts around time, origin and message."""
        template = self._filled(record)
        if template is None:
            return None
        parts: list[str] = []
        pieces: list[str] = []
        pos = 0
        for match in _TOKEN.finditer(template):
            pieces.append(template[pos : match.start()])
            if match.group(1) is None:
                pieces.append("%")  # "%%", also from escaped topic fields
            else:
                parts.append("".join(pieces))
                pieces = []
            pos = match.end()
        pieces.append(template[pos:])
        parts.append("".join(pieces))
        split = (parts[0], parts[1], parts[2], parts[3])
        cost = len(record.topic) + len(template)
        if not self._by_peer:
            return self._parts.put(record.topic, split, cost)
        by_peer = self._peer_parts.get(record.topic)
        if by_peer is None or len(by_peer) >= MAX_PEERS_PER_TOPIC:
            by_peer = {}
        by_peer[record.peer] = split
        self._peer_parts.put(record.topic, by_peer, cost)  # the cost of this peer's entry added
        return split

    def _origin(self, meta: dict[str, Any]) -> str:
        host = meta.get("host")
        pid = meta.get("pid")
        # Records come in runs from one process: compare with the last one first.
        if pid == self._last_pid and host == self._last_host and host is not None:
            return self._last_origin
        key = (host, pid)
        try:
            text = self._origins[key]
        except (KeyError, TypeError):  # TypeError: a list or object from a peer is not hashable
            text = origin(meta)
            # Cache only what is small and plain, so a peer cannot grow it (10,000 x ~300 B at most).
            if host.__class__ is str and len(host) <= _MAX_ORIGIN_PART and pid.__class__ in (int, type(None)):
                self._origins.put(key, text)
            else:
                return text
        self._last_host, self._last_pid, self._last_origin = host, pid, text
        return text

    def _general(self, record: Record) -> str:
        fields = record_fields(record, self._utc)
        fields["asctime"] = self._time(record.time)
        if self._extras:
            extra = record.meta.get("extra")
            if not isinstance(extra, dict):
                extra = {}
            for name in self._extras:
                value = extra.get(name)
                fields[name] = "" if value is None else value
        try:
            line = self._fmt % fields
        except (TypeError, ValueError, OverflowError):
            # Only a value of a type the format was not checked against gets here
            # (the check covers every type a sender can send, so this is a seat
            # belt): the record is kept, in the default layout.
            line = DEFAULT_FORMAT % fields
        # The parser escaped the topic, the text and exc; the extension's other strings
        # (logger, path, extra fields, ...) are a peer's too, and reach the line here.
        return escape_controls(line)

    def _continued(self, line: str, record: Record) -> str:
        head, _, rest = line.partition("\n")
        prefix = f"\n{self._time(record.time)} | {record.source or '-'} {CONTINUATION} "
        return head + prefix + rest.replace("\n", prefix)

    def __call__(self, record: Record) -> str:  # noqa: C901 - the per-line hot path, kept in one frame on purpose
        meta = record.meta
        if self._assembled and not (meta and meta.get("exc")):
            if self._by_peer:
                by_peer = self._peer_parts.get(record.topic)
                parts = (by_peer.get(record.peer) if by_peer is not None else None) or self._split(record)
            else:
                parts = self._parts.get(record.topic) or self._split(record)
            if parts is not None:
                message = record.message
                stamp = record.created if record.created is not None else record.received
                origin_text = self._origin(meta) if meta else "-"
                line = f"{parts[0]}{self._time(stamp)}{parts[1]}{origin_text}{parts[2]}{message}{parts[3]}"
                # Only the message can bring a newline here: topic fields with one
                # take the general path, and origin is sanitised.
                if self._prefix and "\n" in message:
                    return self._continued(line[:-1], record) + "\n"
                return line
        elif self._fast and not (meta and meta.get("exc")):
            key = (record.topic, record.peer) if self._by_peer else record.topic
            template = self._templates.get(key) or self._template(record)
            if template is not None:
                stamp = record.created if record.created is not None else record.received
                values: dict[str, Any] = {"message": record.message}
                for name in self._uses:
                    if name == "asctime":
                        values[name] = self._time(stamp)
                    elif name == "created":
                        values[name] = stamp
                    elif name == "received":
                        values[name] = record.received
                    elif name == "origin":
                        values[name] = self._origin(meta) if meta else "-"
                line = template % values
                if self._prefix and "\n" in record.message:
                    return self._continued(line[:-1], record) + "\n"
                return line
        line = self._general(record)
        if self._prefix and "\n" in line:
            line = self._continued(line, record)
        return line + "\n"


def text_formatter(
    fmt: str = DEFAULT_FORMAT, utc: bool = False, multiline: str = "prefix"
) -> Callable[[Record], str]:
    """A function that renders a record as text; raises :class:`FormatError` for a bad *fmt*."""
    return TextFormatter(fmt, utc, multiline)


def json_fields(record: Record, utc: bool = False, time_text: str | None = None) -> dict[str, Any]:
    """The JSON object for one record: the core fields plus every extension field sent.

    ``message`` is the bare message: a traceback the sender appended to it is
    stored once, in ``exc``. ``peer`` is there only when the record has one
    (:attr:`Record.peer`, the collector-verified certificate name); a ``peer``
    a client sent is in ``claimed_peer`` instead (the parser moved it).
    """
    stamp = record.time
    data: dict[str, Any] = {
        "time": time_text if time_text is not None else format_time(stamp, utc),
        "created": stamp,
        "received": record.received,
        "source": record.source,
        "levelname": record.levelname,
        "levelno": record.levelno,
        "subtopic": record.subtopic,
        "topic": record.topic,
        "message": bare_message(record) if record.meta else record.message,
    }
    if record.peer is not None:  # only then: without CURVE the line is as it always was
        data["peer"] = record.peer
    for key, value in record.meta.items():
        data.setdefault(key, value)
    return data


_NON_FINITE: Final = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _finite(value: Any) -> Any:
    if value.__class__ is float and not math.isfinite(value):
        return _NON_FINITE.get(value, "NaN")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def strict_json(data: Mapping[str, Any]) -> str:
    """*data* as strict JSON: NaN and ±Infinity (which JSON has not) become the strings
    ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, so every parser reads the line and
    the value is not lost; a value nested too deeply to encode becomes a short note."""
    try:
        return _one_line(JSON_ENCODER.encode(data))
    except (ValueError, RecursionError):
        pass
    clean: dict[str, Any] = {}
    for key, value in data.items():
        try:
            clean[key] = _finite(value)
            JSON_ENCODER.encode(clean[key])
        except (ValueError, RecursionError):
            clean[key] = "<not encodable: nested too deeply>"
    return _one_line(JSON_ENCODER.encode(clean))


_COMPACT_DUMPS: Final = orjson.dumps
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def _plain_number(value: Any) -> bool:
    return value.__class__ is not float or math.isfinite(value)


def compact_json(data: Mapping[str, Any]) -> str:
    """What :func:`strict_json` says of *data* (the same value), compact and quicker: by orjson,
    when orjson writes it exactly. orjson writes NaN and the infinities as ``null`` and refuses
    what it cannot take (lone surrogates, integers beyond 64 bits, keys that are not strings):
    a flat object of JSON's scalars goes to orjson, and anything else (a nested value, a
    non-finite float, a refusal) to :func:`strict_json`. For the live stream, where each
    record's JSON costs the collector's event loop."""
    kinds = set(map(type, data.values()))
    if not kinds <= _SCALARS:
        return strict_json(data)
    try:
        raw = _COMPACT_DUMPS(data)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return strict_json(data)
    if float in kinds and b"null" in raw and not all(map(_plain_number, data.values())):
        return strict_json(data)  # a NaN or an infinity, which orjson wrote as null
    return _one_line(raw.decode())


_JSON_RAW: Final = re.compile("[\x7f-\x9f\u2028\u2029]")
"""What JSON may hold raw in a string but a terminal acts on or a line reader splits at."""


def _one_line(text: str) -> str:
    """*text* (JSON) with DEL, the C1 controls and the Unicode line separators as ``\\u`` escapes.

    The encoder escapes the C0 controls itself; these it writes raw, non-ASCII
    being kept. The escaped JSON reads back as the same value.
    """
    if text.isprintable():  # the common case, checked in C
        return text
    return _JSON_RAW.sub(_json_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_formatter(utc: bool = False) -> Callable[[Record], str]:
    """A function that renders a record as one strict JSON object on one line."""
    time_text = TimeFormatter(utc).text

    def render(record: Record) -> str:
        return strict_json(json_fields(record, utc, time_text(record.time))) + "\n"

    return render
