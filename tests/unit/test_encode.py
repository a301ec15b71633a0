"""The app side's encoder: every extension is wire.encode_extension's, byte for byte (a property test)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zlogcollect.encode import DEFAULT_FORMATTER, Encoder, cut, fit_topic
from zlogcollect.wire import (
    MAX_TOPIC_BYTES,
    STANDARD_LEVELS,
    build_topic,
    decode_extension,
    encode_extension,
    level_word,
    parse_topic,
    sequence_mark,
)

# Text as logging meets it: any code point but surrogates, control characters included.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
odd_ints = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**31 - 1, 2**63, -(2**63)]))
json_values = st.recursive(
    st.none() | st.booleans() | odd_ints | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
# Values JSON cannot hold: repr() is sent (default=repr), or the whole field's repr (tuple keys).
awkward = st.sampled_from([object, b"\x00bytes", {1, 2}, {(1, 2): "tuple key"}, 3 + 4j, ValueError("x")])
levels = st.one_of(
    st.sampled_from(sorted(STANDARD_LEVELS.items())),
    st.tuples(text, odd_ints),  # a custom level: any name, any number
    st.integers(-5, 60).map(lambda n: (f"Level {n}", n)),
)
created = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 7.3e9),
    st.integers(0, 2**40),  # logging.makeLogRecord() takes what it is given
)
exc_infos = st.sampled_from([None, "raise", "stack", "both", "text"])


def _raise(message: str) -> Any:
    try:
        raise RuntimeError(message)
    except RuntimeError:
        return sys.exc_info()


@st.composite
def records(draw: st.DrawFn) -> logging.LogRecord:
    """LogRecords as apps make them, and as odd as logging lets them be."""
    levelname, levelno = draw(levels)
    msg = draw(st.one_of(text, st.integers(), st.just(ValueError("a non-str msg"))))
    record = logging.LogRecord(
        draw(text), levelno, draw(text), draw(odd_ints), msg, (), None, draw(st.one_of(st.none(), text))
    )
    record.levelname = levelname
    record.created = draw(created)
    record.process = draw(st.one_of(st.none(), odd_ints))
    record.processName = draw(st.one_of(st.none(), text))
    record.threadName = draw(st.one_of(st.none(), text))
    kind = draw(exc_infos)
    if kind in ("raise", "both"):
        record.exc_info = _raise(draw(text))
    if kind in ("stack", "both"):
        record.stack_info = "Stack (most recent call last):\n" + draw(text)
    if kind == "text":
        record.exc_text = "Traceback: " + draw(text)
    if draw(st.booleans()):
        record.message = record.getMessage()  # a formatter ran before this handler
    names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
    extra = draw(st.dictionaries(names, st.one_of(json_values, awkward), max_size=3))
    for key, value in extra.items():
        if key not in record.__dict__ and key not in ("message", "asctime", "taskName"):
            setattr(record, key, value)
    return record


def expected_fields(record: logging.LogRecord, extra: dict[str, Any], host: str, pub: str) -> dict[str, Any]:
    """The extension docs/WIRE.md describes for *record*, built from the record without the encoder."""
    fields: dict[str, Any] = {"created": record.created, "levelno": record.levelno}
    if record.levelname not in STANDARD_LEVELS:
        fields["levelname"] = level_word(record.levelname)
    fields.update(
        host=host,
        pid=record.process,
        process=record.processName,
        thread=record.threadName,
        logger=record.name,
        path=record.pathname,
        line=record.lineno,
        func=record.funcName,
    )
    exc_text = record.exc_text or (
        DEFAULT_FORMATTER.formatException(record.exc_info) if record.exc_info else None
    )
    exc = "\n".join(part for part in (exc_text, record.stack_info) if part)
    if exc:
        fields["exc"] = exc
    if extra:
        fields["extra"] = extra
    return {**fields, "pub": pub, "seq": 7}


def canonical(value: object) -> str:
    """Compare decoded JSON with NaN equal to itself, and an integer beyond 64 bits as the
    collector reads it (a float: docs/WIRE.md)."""
    return json.dumps(_as_read(value), sort_keys=True, default=repr)


def _as_read(value: object) -> object:
    if isinstance(value, dict):
        return {key: _as_read(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_read(item) for item in value]
    if value.__class__ is int and not -(2**63) <= value < 2**64:
        return float(value)
    return value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records(), dropped=st.sampled_from([0, 1, 2**40]))
def test_extension_is_wires_byte_for_byte(record: logging.LogRecord, dropped: int) -> None:
    """Fast path, general path and wire.encode_extension agree, byte for byte; the JSON says what WIRE.md says."""
    encoder = Encoder("app", "host-1", "0123456789abcdef")
    extra = {k: v for k, v in record.__dict__.items() if k not in logging.makeLogRecord({}).__dict__}
    extra = {k: v for k, v in extra.items() if k not in ("message", "asctime", "taskName")}
    fields = encoder.fields(record, 7)

    fast = encoder.fast_extension(record, 7)
    plain = (
        record.created.__class__ is float
        and record.created - record.created == 0
        and not (record.exc_info or record.exc_text or record.stack_info or extra)
    )
    assert (fast is not None) == plain
    if fast is not None:
        assert fast == encode_extension(fields)
        assert fast == encoder.fast_extension(record, 7)  # from the cache now

    try:
        wire = encode_extension({**fields, **({"dropped": dropped} if dropped else {})})
    except (TypeError, ValueError):
        wire = None  # not JSON even with default=repr: the encoder sends reprs instead
    extension = encoder.extension(dict(fields), dropped)
    if wire is not None and len(wire) <= encoder.max_extension:
        assert extension == wire
    decoded = decode_extension(extension)
    if wire is not None and len(wire) <= encoder.max_extension:
        want = expected_fields(record, extra, "host-1", "0123456789abcdef")
        if dropped:
            want["dropped"] = dropped
        assert canonical(decoded) == canonical(json.loads(json.dumps({"v": 1, **want}, default=repr)))
    assert sequence_mark(decoded) is not None  # loss accounting always gets pub and seq


@settings(max_examples=200, deadline=None)
@given(root=text, levelname=text, subtopic=text)
def test_topics_fit_and_parse_back(root: str, levelname: str, subtopic: str) -> None:
    """A topic is build_topic's bytes when it fits, else cut to the limit; cached either way."""
    encoder = Encoder(root, "h", "p")
    topic = encoder.topic(levelname, subtopic)
    level = level_word(levelname)
    assert len(topic) <= MAX_TOPIC_BYTES
    full = build_topic(root, level, subtopic).encode("utf-8", "replace")
    if len(full) <= MAX_TOPIC_BYTES:
        assert topic == full
    cache = encoder.sub_topics if subtopic else encoder.topics
    key: Any = (levelname, subtopic) if subtopic else levelname
    assert cache[key] == topic


def test_long_topics_are_cut_subtopic_first() -> None:
    """An over-long subtopic is cut first; the level always stays, and the topic still parses."""
    topic = fit_topic("app", "ERROR", "s" * 2000)
    assert len(topic) <= MAX_TOPIC_BYTES
    parsed, number = parse_topic(topic.decode())
    assert (parsed.root, parsed.level, number) == ("app", "ERROR", 40)
    assert parsed.subtopic.startswith("sss")
    topic = fit_topic("r" * 3000, "INFO", "sub")
    assert len(topic) <= MAX_TOPIC_BYTES and b".INFO." in topic


def test_a_new_root_or_publisher_forgets_what_it_cached() -> None:
    """set_root() empties the topic caches, restart() the call-site fragments (they carry the pub)."""
    encoder = Encoder("one", "h", "pub1")
    record = logging.makeLogRecord({"msg": "x", "levelno": 20, "levelname": "INFO", "created": 1.5})
    assert encoder.topic("INFO", "") == b"one.INFO"
    encoder.set_root("two")
    assert encoder.topics.get("INFO") is None
    assert encoder.topic("INFO", "db") == b"two.INFO.db"
    first = encoder.fast_extension(record, 0)
    encoder.restart("pub2")
    second = encoder.fast_extension(record, 0)
    assert first is not None and b'"pub":"pub1"' in first
    assert second is not None and b'"pub":"pub2"' in second


@pytest.mark.parametrize("field", ["exc", "extra", "both", "names"])
def test_oversized_extensions_are_cut_to_the_limit(field: str) -> None:
    """A traceback or extra fields over the limit are cut with a note; pub and seq always stay."""
    encoder = Encoder("app", "h", "pub", max_record_bytes=8192)
    big = "x" * 20_000
    record = logging.makeLogRecord({"msg": "m", "levelno": 40, "levelname": "ERROR", "created": 1.0})
    if field in ("exc", "both"):
        record.exc_text = big
    if field in ("extra", "both"):
        record.payload = big
    if field == "names":
        record.name = record.pathname = record.funcName = big
    extension = encoder.extension(encoder.fields(record, 3), dropped=2)
    assert len(extension) <= encoder.max_extension
    meta = decode_extension(extension)
    assert (meta["pub"], meta["seq"], meta["dropped"]) == ("pub", 3, 2)
    if field in ("exc", "both"):
        assert "[zlogcollect cut" in meta["exc"]
    if field == "extra":
        size = len(encode_extension({"payload": big}))
        assert meta["extra"] == {"zlogcollect_cut": f"{size} bytes of extra fields, over the record limit"}


@given(
    data=st.binary(max_size=3000).map(lambda b: b.decode("utf-8", "replace").encode()),
    limit=st.integers(0, 2000),
)
def test_cut_stays_within_the_limit_on_a_character_boundary(data: bytes, limit: int) -> None:
    """cut() keeps valid UTF-8 and at most *limit* bytes plus its note."""
    result = cut(data, limit)
    result.decode()  # still UTF-8
    kept = result[: result.rindex(b"\n[zlogcollect cut")]
    assert len(kept) <= max(limit - 120, 0)
    assert data.startswith(kept)
