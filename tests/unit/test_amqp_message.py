"""The AMQP message format: body, routing key, id and properties, without a broker."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import pytest

from zlogcollect.routing import RouteError
from zlogcollect.sinks.amqp_message import (
    BodyError,
    Message,
    MessageFormat,
    amqp_body,
    encode_body,
    record_from_body,
    routing_key,
    validate_routing_key,
)
from zlogcollect.wire import Record

STAMP = time.mktime((2026, 11, 25, 15, 9, 31, 0, 0, -1)) + 0.1234
ZLOG_META = {"host": "web01", "pid": 4242, "logger": "db", "pub": "p1", "seq": 3}
TRACEBACK = "Traceback (most recent call last):\n  File \"app.py\", line 3, in f\nKeyError: 'k'"

STANDARD_FORMAT = (
    "%(name)s %(levelno)d %(levelname)s %(pathname)s %(filename)s %(module)s %(lineno)d %(funcName)s "
    "%(created)f %(msecs)d %(relativeCreated)d %(thread)d %(threadName)s %(processName)s %(process)d "
    "%(asctime)s %(message)s"
)


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _strict_text(body: dict[str, Any]) -> str:
    from zlogcollect.formatting import strict_json

    text = strict_json(body)
    _strict(text)
    return text


def _consume(body: dict[str, Any]) -> str:
    """What a python-logging-rabbitmq consumer does with a message body."""
    record = logging.makeLogRecord(json.loads(_strict_text(body)))
    return logging.Formatter(STANDARD_FORMAT).format(record)


def test_amqp_body_is_what_a_python_logging_rabbitmq_consumer_formats() -> None:
    """Every standard LogRecord field formats for stock and extension records; traceback as exc_info text."""
    stock = amqp_body(Record("app1", "ERROR", 40, "db.query", "timeout", STAMP))
    assert _consume(stock).endswith(" timeout")
    assert stock["msg"] == "timeout" and stock["args"] is None and stock["name"] == "app1"
    for field in ("lineno", "thread", "process", "relativeCreated", "msecs"):
        assert isinstance(stock[field], int | float) and not isinstance(stock[field], bool), field
    for field in ("pathname", "filename", "module", "funcName", "threadName", "processName", "host"):
        assert stock[field] == "", field

    meta = {
        **ZLOG_META,
        "exc": TRACEBACK,
        "path": "/srv/app/orders.py",
        "line": 42,
        "func": "store",
        "thread": "MainThread",
        "process": "MainProcess",
        "extra": {"source": "app1-producer", "env": "dev", "ratio": math.nan, "msg": "not ours"},
    }
    rich = amqp_body(Record("app1", "ERROR", 40, "db.query", f"lookup failed\n{TRACEBACK}", STAMP, meta=meta))
    assert rich["msg"] == "lookup failed"
    assert rich["exc_info"] == rich["exc_text"] == TRACEBACK
    assert (rich["pathname"], rich["filename"], rich["module"], rich["lineno"]) == (
        "/srv/app/orders.py",
        "orders.py",
        "orders",
        42,
    )
    assert (rich["process"], rich["host"], rich["name"]) == (4242, "web01", "db")
    # The app's own extra fields win over ours (source), never over logging's own (msg).
    assert (rich["source"], rich["env"], rich["subtopic"]) == ("app1-producer", "dev", "db.query")
    text = _consume(rich)
    assert text.count("KeyError") == 1
    assert "lookup failed\nTraceback" in text and " orders.py orders 42 store " in text
    assert json.loads(_strict_text(rich))["ratio"] == "NaN"


def test_amqp_body_survives_a_sender_with_wrong_types() -> None:
    """Numbers where logging has numbers even when a peer sends strings or null."""
    meta = {"pid": "12", "line": None, "thread": None, "path": 5, "exc": ["not", "text"], "extra": [1]}
    body = amqp_body(Record("", "Level 25", 25, "", "m", STAMP, meta=meta))
    assert (body["process"], body["lineno"], body["name"], body["pathname"]) == (0, 0, "root", "5")
    assert _consume(body).endswith(" m")


GOLDEN_STAMP = 1795000000.1234
GOLDEN_META = {
    **ZLOG_META,
    "exc": TRACEBACK,
    "path": "/srv/app/orders.py",
    "line": 42,
    "func": "store",
    "thread": "MainThread",
    "thread_id": 7,
    "process": "MainProcess",
    "extra": {"source": "app1-producer", "env": "dév", "ratio": math.nan, "msg": "not ours", "bad": "\ud800"},
}


@pytest.mark.parametrize(
    ("record", "body"),
    [
        (
            Record("app1", "ERROR", 40, "db.query", "timeout", GOLDEN_STAMP),
            b'{"name": "app1", "msg": "timeout", "args": null, "levelname": "ERROR", "levelno": 40, '
            b'"pathname": "", "filename": "", "module": "", "exc_info": null, "exc_text": null, '
            b'"stack_info": null, "lineno": 0, "funcName": "", "created": 1795000000.1234, '
            b'"msecs": 123.39997291564941, "relativeCreated": 0.0, "thread": 0, "threadName": "", '
            b'"processName": "", "process": 0, "taskName": null, "host": "", "source": "app1", '
            b'"subtopic": "db.query", "topic": "app1.ERROR.db.query", "received": 1795000000.1234}',
        ),
        (
            Record(
                "app1",
                "ERROR",
                40,
                "db.query",
                f"lookup failed\n{TRACEBACK}",
                GOLDEN_STAMP + 0.5,
                created=GOLDEN_STAMP,
                meta=GOLDEN_META,
            ),
            b'{"name": "db", "msg": "lookup failed", "args": null, "levelname": "ERROR", "levelno": 40, '
            b'"pathname": "/srv/app/orders.py", "filename": "orders.py", "module": "orders", '
            b'"exc_info": "Traceback (most recent call last):\\n  File \\"app.py\\", line 3, in f\\nKeyError: '
            b'\'k\'", "exc_text": "Traceback (most recent call last):\\n  File \\"app.py\\", line 3, in f'
            b"\\nKeyError: 'k'\", "
            b'"stack_info": null, "lineno": 42, "funcName": "store", "created": 1795000000.1234, '
            b'"msecs": 123.39997291564941, "relativeCreated": 0.0, "thread": 7, "threadName": "MainThread", '
            b'"processName": "MainProcess", "process": 4242, "taskName": null, "host": "web01", '
            b'"source": "app1-producer", "subtopic": "db.query", "topic": "app1.ERROR.db.query", '
            b'"received": 1795000000.6234, "env": "d\xc3\xa9v", "ratio": "NaN", "bad": "\xed\xa0\x80"}',
        ),
    ],
    ids=["stock", "extension"],
)
def test_encoded_body_is_byte_identical_to_the_published_format(record: Record, body: bytes) -> None:
    """The exact bytes python-logging-rabbitmq consumers have been reading (recorded before the move),
    then the writer's ``zlog`` key, last."""
    encoded = encode_body(record)
    assert encoded.startswith(body[:-1] + b', "zlog": {"v": 1, "source": "app1", ')
    assert set(json.loads(encoded.decode("utf-8", "surrogatepass"))) - set(
        json.loads(body.decode("utf-8", "surrogatepass"))
    ) == {"zlog"}


def test_a_body_that_cannot_be_encoded_is_a_body_error() -> None:
    """An extra value JSON cannot hold (a key that is no string) is refused as a record, not a crash."""
    record = Record("a", "INFO", 20, "", "m", STAMP, meta={"extra": {"mapping": {(1, 2): 3}}})
    with pytest.raises(BodyError):
        encode_body(record)
    with pytest.raises(BodyError):
        MessageFormat()(record)


@pytest.mark.parametrize(
    ("template", "record_", "key"),
    [
        (None, Record("app1", "ERROR", 40, "db.query", "m", 0.0), "app1.ERROR"),
        (None, Record("", "ERROR", 40, "db", "m", 0.0), "ERROR"),
        (None, Record("svc/web", "INFO", 20, "", "m", 0.0), "svc.web.INFO"),
        ("{topic}", Record("app1", "ERROR", 40, "db.query", "m", 0.0), "app1.ERROR.db.query"),
        ("{source}.{level}.{subtopic}", Record("a", "INFO", 20, "x", "m", 0.0), "a.INFO.x"),
        (
            "{name}.{level}",
            Record("a", "INFO", 20, "x", "m", 0.0, meta={"logger": "db.pool"}),
            "db.pool.INFO",
        ),
        ("{name}.{level}", Record("a", "INFO", 20, "x", "m", 0.0), "a.INFO"),
        (None, Record("é" * 200, "INFO", 20, "", "m", 0.0), "é" * 127),
    ],
)
def test_routing_key_defaults_to_source_and_level(template: str | None, record_: Record, key: str) -> None:
    """The default key is what python-logging-rabbitmq consumers bind (app1.ERROR); '{topic}' is the old one."""
    assert routing_key(template, record_) == key


@pytest.mark.parametrize("template", ["{source}.{level}", "{topic}", "logs.{name}.{subtopic}", "fixed"])
def test_valid_routing_key_templates(template: str) -> None:
    validate_routing_key(template)


@pytest.mark.parametrize(
    ("template", "message"),
    [("{host}.{level}", "uses host; available: {level}, {name}"), ("{source", "routing key '{source'")],
)
def test_bad_routing_key_templates_are_refused(template: str, message: str) -> None:
    """An unknown field or a template that does not parse is one clear error naming it."""
    with pytest.raises(RouteError, match=message.replace("{", r"\{").replace("}", r"\}")):
        validate_routing_key(template)


def test_message_ids_are_the_senders_or_this_bridges_own() -> None:
    """publisher:seq from the extension, so a consumer can de-duplicate; else instance:n, counting up."""
    messages = MessageFormat("{topic}", instance="host/1/abcd")
    from_handler = messages(Record("app1", "ERROR", 40, "db", "m", STAMP, meta=ZLOG_META))
    stock = [messages(Record("app1", "INFO", 20, "", f"m{i}", STAMP)) for i in range(2)]
    assert from_handler.message_id == "p1:3"
    assert [m.message_id for m in stock] == ["host/1/abcd:1", "host/1/abcd:2"]
    assert (from_handler.routing_key, from_handler.subtopic, from_handler.timestamp) == (
        "app1.ERROR.db",
        "db",
        int(STAMP),
    )
    assert json.loads(from_handler.body)["msg"] == "m"
    # The source header is what the sharding exchange hashes on (docs/SCALING.md).
    assert from_handler.properties()["headers"]["source"] == "app1"
    assert MessageFormat().__call__(Record("a", "INFO", 20, "", "m", STAMP)).message_id.count(":") == 1


def test_message_properties() -> None:
    """Persistent JSON from zlogcollect, with the id, the time in seconds, the subtopic and source as headers."""
    message = Message("p1:3", "app1.ERROR", b"{}", 1_795_000_000, "db.query", "app1")
    assert message.properties() == {
        "content_type": "application/json",
        "delivery_mode": 2,
        "message_id": "p1:3",
        "timestamp": 1_795_000_000,
        "app_id": "zlogcollect",
        "headers": {"subtopic": "db.query", "source": "app1"},
    }


@pytest.mark.parametrize(
    "record",
    [
        Record("app1", "ERROR", 40, "db.query", "timeout", STAMP),
        Record("app2", "WARNING", 30, "", "disk\nfull\x00", STAMP, STAMP - 0.5, dict(ZLOG_META)),
        Record("app3", "TRACE", 5, "", "é \udcff", STAMP, None, {"extra": {"zlog": 1, "k": [1, 2]}}),
    ],
)
def test_the_zlog_key_gives_back_the_record_the_collector_parsed(record: Record) -> None:
    """record_from_body(encode_body(r)) has every field of r: the writer's lines are the collector's."""
    record.peer = "app3" if record.source == "app3" else None
    again = record_from_body(encode_body(record))
    for name in ("source", "levelname", "levelno", "subtopic", "message", "received", "created", "topic"):
        assert getattr(again, name) == getattr(record, name), name
    assert again.meta == record.meta
    assert again.peer == record.peer


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"msg": "hello", "name": "x"}', "no 'zlog' object"),
        (b'{"zlog": {"v": 2}}', "zlog.v is not 1"),
        (b'{"zlog": {"v": 1, "source": 3}}', "zlog.source is missing or not a str"),
        (b'{"zlog": {"v": 1, "source": "a", "level": "INFO", "levelno": 20, "subtopic": "", "message": "m",'
         b' "received": 1.0, "topic": "a.INFO", "created": "x"}}', "zlog.created is not a number"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_bridges_is_a_body_error_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BodyError, match=reason):
        record_from_body(body)
