"""The AMQP message format: a record's JSON body, routing key, id and properties.

Pure: no pika, zmq or gevent, so the format is unit-tested without a broker
and the configuration can check a routing-key template without loading pika.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from typing import Any, Final, NamedTuple

from zlogcollect.formatting import bare_message, strict_json
from zlogcollect.routing import NO_PEER, RouteError, template_fields
from zlogcollect.wire import PEER_KEY, Record

CONTENT_TYPE: Final = "application/json"
APP_ID: Final = "zlogcollect"
PERSISTENT: Final = 2
"""AMQP ``delivery_mode`` 2: the broker writes the message to disk in a durable queue."""

ROUTING_KEY_FIELDS: Final = frozenset({"source", "level", "subtopic", "topic", "name", "peer"})
MAX_ROUTING_KEY: Final = 255  # bytes, the AMQP limit for a short string

DEFAULT_ROUTING_KEY: Final = "{source}.{level}"
"""``app1.ERROR``: what python-logging-rabbitmq consumers bind to (its own default is
``{name}.{level}``); the subtopic travels in the body and in a header."""

LOGRECORD_ATTRIBUTES: Final = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
"""What ``logging`` itself puts on a record; an app's ``extra`` can never use these names."""


EXTRA_PEER: Final = "extra_peer"
"""The body key of an app's ``extra={"peer": ...}``: ``peer`` itself is the verified peer's alone."""


class BodyError(ValueError):
    """A record whose body is not encodable as JSON (it is dropped and counted, never sent)."""


class Message(NamedTuple):
    """One record as the bridge publishes it."""

    message_id: str
    routing_key: str
    body: bytes
    timestamp: int
    subtopic: str = ""  # sent as the "subtopic" header: the default routing key leaves it out
    source: str = ""
    """Sent as the "source" header: what `zlogcollect topology`'s consistent-hash exchange hashes
    on (hash-header), so every record of one source lands in one queue whatever its level."""

    def properties(self) -> dict[str, Any]:
        """The AMQP basic properties, as keyword arguments of ``pika.BasicProperties``."""
        return {
            "content_type": CONTENT_TYPE,
            "delivery_mode": PERSISTENT,
            "message_id": self.message_id,
            "timestamp": self.timestamp,
            "app_id": APP_ID,
            "headers": {"subtopic": self.subtopic, "source": self.source},
        }


class MessageFormat:
    """Record → :class:`Message` for one bridge: its routing-key template and its own ids.

    The message id is the sender's ``publisher:seq`` when the structured
    extension carries them (a consumer can de-duplicate what at-least-once
    delivery sent twice), else ``host/pid/random:n`` of this bridge.
    """

    def __init__(self, routing_key: str | None = None, instance: str | None = None) -> None:
        self._routing_key = routing_key
        self._instance = instance or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._counter = 0

    def __call__(self, record: Record) -> Message:
        """The message for *record*; :class:`BodyError` if its body cannot be encoded."""
        publisher, seq = record.meta.get("pub"), record.meta.get("seq")
        if isinstance(publisher, str) and isinstance(seq, int):
            message_id = f"{publisher}:{seq}"
        else:
            self._counter += 1
            message_id = f"{self._instance}:{self._counter}"
        body = encode_body(record)
        return Message(
            message_id,
            routing_key(self._routing_key, record),
            body,
            int(record.time),
            record.subtopic,
            record.source,
        )


def encode_body(record: Record) -> bytes:
    """:func:`amqp_body` as strict JSON in UTF-8; :class:`BodyError` if it cannot be encoded."""
    try:
        # surrogatepass: a lone surrogate from a peer's JSON must not lose the record.
        return strict_json(amqp_body(record)).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as exc:
        raise BodyError(str(exc)) from exc


def _number(value: Any) -> int:
    return value if value.__class__ is int else 0


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if value.__class__ is str else str(value)


def amqp_body(record: Record) -> dict[str, Any]:
    """The AMQP JSON body, as python-logging-rabbitmq's ``JSONFormatter`` builds it.

    That formatter sends the ``LogRecord``'s ``__dict__`` with ``msg`` merged with
    its args, ``args`` null, the traceback text in ``exc_info``, ``host`` and the
    app's ``extra`` fields at the top level. A consumer that does
    ``logging.makeLogRecord(json.loads(body))`` and formats it with any standard
    field must not fail for any record, so every standard field is present with
    logging's type: numbers are ``0`` and texts ``""`` when the sender did not
    say (stock senders send no extension at all), ``relativeCreated`` is always
    ``0.0`` (no sender sends it), and the traceback is also in ``exc_text``,
    which stops ``logging.Formatter`` from trying to re-format ``exc_info``.

    zlogcollect adds ``source``, ``subtopic``, ``topic`` and ``received``; an
    ``extra`` field of the app with one of those names (or ``host``) wins, and
    the value is still in the message headers (see docs/AMQP.md).

    ``peer`` (the collector-verified CURVE certificate name) is there only when
    the record has one, and only from :attr:`Record.peer`: nothing a sender
    sends can set it. An app's ``extra`` field named ``peer`` is sent as
    ``extra_peer``.
    """
    meta = record.meta
    created = record.time
    path = _text(meta.get("path"))
    filename = path.rsplit("/", 1)[-1]
    exc = meta.get("exc")
    exc_text = exc if exc and exc.__class__ is str else None
    body: dict[str, Any] = {
        "name": _text(meta.get("logger")) or record.source or "root",
        "msg": bare_message(record),
        "args": None,
        "levelname": record.levelname,
        "levelno": record.levelno,
        "pathname": path,
        "filename": filename,
        "module": filename.rsplit(".", 1)[0],
        "exc_info": exc_text,
        "exc_text": exc_text,
        "stack_info": None,
        "lineno": _number(meta.get("line")),
        "funcName": _text(meta.get("func")),
        "created": created,
        "msecs": (created - int(created)) * 1000,
        "relativeCreated": 0.0,
        "thread": _number(meta.get("thread_id")),
        "threadName": _text(meta.get("thread")),
        "processName": _text(meta.get("process")),
        "process": _number(meta.get("pid")),
        "taskName": None,
        "host": _text(meta.get("host")),
        "source": record.source,
        "subtopic": record.subtopic,
        "topic": record.topic,
        "received": record.received,
    }
    extra = meta.get("extra")
    if isinstance(extra, dict):
        for key, value in extra.items():
            # logging refuses extra keys that clash with its own attributes, so
            # such a key can only come from a hand-made sender: ours stay.
            if key not in LOGRECORD_ATTRIBUTES:
                body[key] = value
        if PEER_KEY in extra:
            body.pop(PEER_KEY)
            body[EXTRA_PEER] = extra[PEER_KEY]
    if record.peer is not None:
        body[PEER_KEY] = record.peer
    body[ZLOG_KEY] = zlog_fields(record)
    return body


ZLOG_KEY: Final = "zlog"
"""The body key with the record as the collector parsed it (docs/WIRE.md): what ``collect
--from-amqp`` rebuilds the :class:`Record` from, so its lines are the ZeroMQ collector's byte for byte.
It is set last: an app's ``extra`` field of that name is in ``zlog.meta.extra`` instead."""
ZLOG_VERSION: Final = 1


def zlog_fields(record: Record) -> dict[str, Any]:
    """The ``zlog`` value: the :class:`Record`'s fields, ``created``, ``meta`` and ``peer`` only when set."""
    fields: dict[str, Any] = {
        "v": ZLOG_VERSION,
        "source": record.source,
        "level": record.levelname,
        "levelno": record.levelno,
        "subtopic": record.subtopic,
        "topic": record.topic,
        "message": record.message,
        "received": record.received,
    }
    if record.created is not None:
        fields["created"] = record.created
    if record.meta:
        fields["meta"] = record.meta
    if record.peer is not None:
        fields["peer"] = record.peer
    return fields


def _field(zlog: dict[str, Any], key: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    value = zlog.get(key, default)
    if value.__class__ not in kinds:
        raise BodyError(f"zlog.{key} is missing or not a {' or '.join(k.__name__ for k in kinds)}")
    return value


def record_from_body(body: bytes) -> Record:
    """The :class:`Record` a bridge's message carries (its ``zlog`` key); :class:`BodyError` says why not."""
    try:
        data = json.loads(body.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BodyError("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise BodyError("the body is not a JSON object")
    zlog = data.get(ZLOG_KEY)
    if not isinstance(zlog, dict):
        raise BodyError(f"the body has no {ZLOG_KEY!r} object (not sent by a zlogcollect bridge)")
    if zlog.get("v") != ZLOG_VERSION:
        raise BodyError(f"zlog.v is not {ZLOG_VERSION}")
    number = (int, float)
    created = zlog.get("created")
    if created is not None and created.__class__ not in number:
        raise BodyError("zlog.created is not a number")
    record = Record(
        _field(zlog, "source", (str,)),
        _field(zlog, "level", (str,)),
        _field(zlog, "levelno", (int,)),
        _field(zlog, "subtopic", (str,)),
        _field(zlog, "message", (str,)),
        _field(zlog, "received", number),
        created,
        _field(zlog, "meta", (dict,), {}),
        _field(zlog, "topic", (str,)),
    )
    peer = zlog.get("peer")
    if peer is not None:
        record.peer = _field(zlog, "peer", (str,))
    return record


def validate_routing_key(template: str) -> None:
    """Reject routing-key templates that use unknown fields or do not format (:class:`RouteError`)."""
    unknown = template_fields(template, "routing key") - ROUTING_KEY_FIELDS
    if unknown:
        raise RouteError(
            f"routing key {template!r} uses {', '.join(sorted(unknown))}; "
            f"available: {', '.join('{' + f + '}' for f in sorted(ROUTING_KEY_FIELDS))}"
        )


def routing_key(template: str | None, record: Record) -> str:
    """The AMQP routing key: *template* (by default ``{source}.{level}``) filled in.

    ``{peer}`` is the verified peer's name, ``_nopeer`` for a record without one.

    A record without a source gets just its level as the default key (no empty
    word). ``/`` becomes ``.`` (AMQP topic words are dot-separated) and the key is
    cut to the 255-byte limit.
    """
    if template is None or template == DEFAULT_ROUTING_KEY:
        source = record.source
        key = f"{source}.{record.levelname}" if source else record.levelname
    elif template == "{topic}":
        key = record.topic
    else:
        logger = record.meta.get("logger")
        key = template.format(
            source=record.source,
            level=record.levelname,
            subtopic=record.subtopic,
            topic=record.topic,
            name=logger if isinstance(logger, str) and logger else record.source,
            peer=record.peer or NO_PEER,
        )
    key = key.replace("/", ".")
    if len(key) > MAX_ROUTING_KEY // 4:  # only a long key can be over 255 bytes
        encoded = key.encode()
        if len(encoded) > MAX_ROUTING_KEY:
            key = encoded[:MAX_ROUTING_KEY].decode(errors="ignore")
    return key
