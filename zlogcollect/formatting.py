"""Record to text: the file line format, JSON lines, and the collector's time stamps."""

from __future__ import annotations

import json
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


def text_formatter(fmt: str = DEFAULT_FORMAT, utc: bool = False) -> Callable[[Record], str]:
    """A function that renders a record as one line (plus continuation lines) ending in ``\\n``.

    Raises :class:`FormatError` at once if *fmt* uses an unknown field or is
    not a valid ``%``-style format.
    """
    sample = Record("app", "INFO", 20, "sub", "message", 0.0)
    try:
        fmt % record_fields(sample)
    except KeyError as exc:
        raise FormatError(
            f"format {fmt!r} uses the unknown field {exc.args[0]!r}; known: {', '.join(FIELDS)}"
        ) from None
    except (TypeError, ValueError) as exc:
        raise FormatError(f"format {fmt!r} is not a valid %-style format: {exc}") from None

    def render(record: Record) -> str:
        return fmt % record_fields(record, utc) + "\n"

    return render


def json_fields(record: Record, utc: bool = False) -> dict[str, Any]:
    """The JSON object for one record: the core fields plus every extension field sent."""
    data: dict[str, Any] = {
        "time": format_time(record.time, utc),
        "created": record.time,
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


def json_formatter(utc: bool = False) -> Callable[[Record], str]:
    """A function that renders a record as one JSON object on one line."""

    def render(record: Record) -> str:
        return json.dumps(json_fields(record, utc), ensure_ascii=False, default=str) + "\n"

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
