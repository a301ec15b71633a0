"""Record to text: the file line format, JSON lines, and the collector's time stamps."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any, Final

from zlogcollect.wire import Record

DEFAULT_FORMAT: Final = "%(asctime)s | %(levelname)s | %(source)s | %(subtopic)s | %(message)s"
"""The default line: ``2026-11-25 15:09:31.123 | ERROR | app1 | db.query | timeout``."""

FIELDS: Final = (
    "asctime",
    "created",
    "received",
    "levelname",
    "levelno",
    "source",
    "subtopic",
    "topic",
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
"""Names a ``--format`` string may use; absent values show as ``-``."""

_EXTENSION_FIELDS: Final = ("host", "pid", "process", "thread", "logger", "path", "line", "func", "seq")


class FormatError(ValueError):
    """A ``--format`` string that cannot format a record."""


def format_time(stamp: float, utc: bool = False) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm`` in local time (or UTC), like logging's asctime with msecs."""
    seconds = int(stamp)
    millis = int((stamp - seconds) * 1000)
    parts = time.gmtime(seconds) if utc else time.localtime(seconds)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', parts)}.{millis:03d}"


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
        seconds = int(stamp)
        if seconds != self._second:
            parts = time.gmtime(seconds) if self._utc else time.localtime(seconds)
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", parts)
            self._second = seconds
        return f"{self._text}.{int((stamp - seconds) * 1000):03d}"


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
        "subtopic": record.subtopic or "-",
        "topic": record.topic,
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
_PER_TOPIC: Final = frozenset({"levelname", "levelno", "source", "subtopic", "topic"})
_PER_RECORD: Final = frozenset({"asctime", "created", "received", "message"})
_TIME_AND_MESSAGE: Final = ("asctime", "message")


class TextFormatter:
    """Renders a record as one line (plus continuation lines) ending in ``\\n``.

    The fields that depend only on the topic (source, level, subtopic) are
    filled in once per distinct topic, giving a smaller template that each
    record then completes with its time and message. Records whose extension
    adds a traceback, and formats that use extension fields, take the general
    path through :func:`record_fields`.
    """

    def __init__(self, fmt: str = DEFAULT_FORMAT, utc: bool = False) -> None:
        sample = Record("app", "INFO", 20, "sub", "message", 0.0)
        try:
            fmt % record_fields(sample)
        except KeyError as exc:
            raise FormatError(
                f"format {fmt!r} uses the unknown field {exc.args[0]!r}; known: {', '.join(FIELDS)}"
            ) from None
        except (TypeError, ValueError) as exc:
            raise FormatError(f"format {fmt!r} is not a valid %-style format: {exc}") from None
        self._fmt = fmt
        self._utc = utc
        self._time = TimeFormatter(utc)
        names = {m.group(1) for m in _TOKEN.finditer(fmt) if m.group(1)}
        self._fast = names <= _PER_TOPIC | _PER_RECORD
        self._uses = tuple(sorted(names & _PER_RECORD))
        self._templates: dict[str, str] = {}

    def _template(self, record: Record) -> str:
        values = {
            "levelname": record.levelname,
            "levelno": record.levelno,
            "source": record.source or "-",
            "subtopic": record.subtopic or "-",
            "topic": record.topic,
        }

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None or name not in _PER_TOPIC:
                return match.group(0)
            return (match.group(0) % values).replace("%", "%%")

        template = _TOKEN.sub(fill, self._fmt) + "\n"
        if len(self._templates) >= 10_000:
            self._templates.clear()
        self._templates[record.topic] = template
        return template

    def __call__(self, record: Record) -> str:
        meta = record.meta
        if not self._fast or (meta and meta.get("exc")):
            return self._fmt % record_fields(record, self._utc) + "\n"
        template = self._templates.get(record.topic)
        if template is None:
            template = self._template(record)
        stamp = record.created if record.created is not None else record.received
        if self._uses == _TIME_AND_MESSAGE:  # the default format: skip the generic loop
            return template % {"asctime": self._time(stamp), "message": record.message}
        values: dict[str, Any] = {"message": record.message}
        for name in self._uses:
            if name == "asctime":
                values[name] = self._time(stamp)
            elif name == "created":
                values[name] = stamp
            elif name == "received":
                values[name] = record.received
        return template % values


def text_formatter(fmt: str = DEFAULT_FORMAT, utc: bool = False) -> Callable[[Record], str]:
    """A function that renders a record as text; raises :class:`FormatError` for a bad *fmt*."""
    return TextFormatter(fmt, utc)


def json_fields(record: Record, utc: bool = False, time_text: str | None = None) -> dict[str, Any]:
    """The JSON object for one record: the core fields plus every extension field sent."""
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
        "message": record.message,
    }
    for key, value in record.meta.items():
        data.setdefault(key, value)
    return data


_JSON_LINE = json.JSONEncoder(ensure_ascii=False, default=str).encode
"""One encoder for every line: ``json.dumps`` with options builds a new one per call."""


def json_formatter(utc: bool = False) -> Callable[[Record], str]:
    """A function that renders a record as one JSON object on one line."""
    time_text = TimeFormatter(utc)

    def render(record: Record) -> str:
        return _JSON_LINE(json_fields(record, utc, time_text(record.time))) + "\n"

    return render


_LOGRECORD_DEFAULTS: Final = {
    "args": None,
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
}


def amqp_body(record: Record) -> dict[str, Any]:
    """The AMQP JSON body: python-logging-rabbitmq's field set plus ``source`` and ``subtopic``.

    Fields only the zlogcollect handler can know (host, pid, path, ...) come from
    the structured extension and are ``null`` for stock senders. ``msg`` is the
    bare message text; extra fields the app passed are merged at the top level,
    as python-logging-rabbitmq does with ``extra``.
    """
    meta = record.meta
    created = record.time
    path = meta.get("path")
    filename = path.rsplit("/", 1)[-1] if isinstance(path, str) else None
    exc = meta.get("exc")
    body: dict[str, Any] = {
        "name": meta.get("logger") or record.source or None,
        "msg": record.message,
        **_LOGRECORD_DEFAULTS,
        "levelname": record.levelname,
        "levelno": record.levelno,
        "pathname": path,
        "filename": filename,
        "module": filename.rsplit(".", 1)[0] if filename else None,
        "exc_text": exc or None,
        "lineno": meta.get("line"),
        "funcName": meta.get("func"),
        "created": created,
        "msecs": (created - int(created)) * 1000,
        "thread": meta.get("thread_id"),
        "threadName": meta.get("thread"),
        "processName": meta.get("process"),
        "process": meta.get("pid"),
        "host": meta.get("host"),
        "source": record.source,
        "subtopic": record.subtopic,
        "topic": record.topic,
        "received": record.received,
    }
    extra = meta.get("extra")
    if isinstance(extra, dict):
        for key, value in extra.items():
            body.setdefault(key, value)
    return body
