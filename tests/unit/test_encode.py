"""The app side's encoder: every extension is wire.encode_extension's, byte for byte (a property test)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import enum
import json
import logging
import math
import sys
import uuid
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
    parse_frames,
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
    """Decoded JSON as one comparable string."""
    return json.dumps(value, sort_keys=True, default=repr)


def as_wire_says(value: Any, words: bool = False) -> Any:
    """*value* as docs/WIRE.md says the extension carries it, modelled without orjson.

    *words*: inside ``extra``, where NaN and the infinities go as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value) if -(2**63) <= value <= 2**64 - 1 else repr(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return ("NaN" if value != value else "Infinity" if value > 0 else "-Infinity") if words else None
    if isinstance(value, dict):
        return {wire_key(k): as_wire_says(v, words or k == "extra") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_wire_says(v, words) for v in value]
    return repr(value)


def wire_key(key: object) -> str:
    """A dict key as the extension writes it: str as it is, bool and None as JSON words, others as text."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    if isinstance(key, int):
        return str(key) if -(2**63) <= key <= 2**64 - 1 else repr(key)
    return repr(key)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records(), dropped=st.sampled_from([0, 1, 2**40]))
def test_extension_is_wires_byte_for_byte(record: logging.LogRecord, dropped: int) -> None:
    """Fast path, general path and wire.encode_extension agree, byte for byte; the JSON says what WIRE.md says."""
    encoder = Encoder("app", "host-1", "0123456789abcdef")
    extra = {k: v for k, v in record.__dict__.items() if k not in logging.makeLogRecord({}).__dict__}
    extra = {k: v for k, v in extra.items() if k not in ("message", "asctime", "taskName")}
    fields = encoder.fields(record, 7)

    fast = encoder.fast_extension(record, 7)
    plain = record.created.__class__ is float and not (
        record.exc_info or record.exc_text or record.stack_info or extra
    )
    assert (fast is not None) == plain
    if fast is not None:
        assert fast == encode_extension(fields)
        assert fast == encoder.fast_extension(record, 7)  # from the cache now

    wire = encode_extension({**fields, **({"dropped": dropped} if dropped else {})})
    wire.decode()  # UTF-8, whatever the record held
    extension = encoder.extension(dict(fields), dropped)
    decoded = decode_extension(extension)
    if len(wire) <= encoder.max_extension:
        assert extension == wire
        want = expected_fields(record, extra, "host-1", "0123456789abcdef")
        if dropped:
            want["dropped"] = dropped
        assert canonical(decoded) == canonical(as_wire_says({"v": 1, **want}))
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


# The extension's JSON is orjson's; what it does with values json.dumps(default=repr)
# took differently is pinned here, one case each (docs/WIRE.md, "Values JSON cannot hold").


class Colour(enum.Enum):
    """A plain Enum: orjson sends its value."""

    RED = "red"


class Number(enum.IntEnum):
    """An int subclass."""

    ONE = 1


class Text(str):
    """A str subclass, as value and as key."""


class Real(float):
    """A float subclass: orjson hands it to the default, which sends the number."""


@dataclasses.dataclass
class Point:
    """A dataclass: sent as its repr, as before (not as an object)."""

    x: int


Pair = collections.namedtuple("Pair", "a b")


def extra_of(extra: dict[str, Any], **record: Any) -> tuple[bytes, dict[str, Any]]:
    """The extension of a record with *extra* (general path), and its decoded JSON (must decode)."""
    encoder = Encoder("app", "host", "0123456789abcdef")
    attrs = {"msg": "m", "levelno": 20, "levelname": "INFO", "created": 1.5, **record, **extra}
    log_record = logging.makeLogRecord(attrs)
    extension = encoder.extension(encoder.fields(log_record, 0))
    with contextlib.suppress(TypeError):  # a cycle: the encoder falls back to the field's repr
        assert extension == encode_extension(encoder.fields(log_record, 0))
    return extension, decode_extension(extension)


def test_non_str_keys_become_strings_as_json_made_them() -> None:
    """int, float, bool and None keys are written as json wrote them; a tuple or huge int key as its repr."""
    keys = {3: "a", 2.5: "b", True: "c", None: "d", (1, 2): "e", 2**70: "f", Text("k"): "g"}
    _, meta = extra_of({"keys": keys})
    assert meta["extra"]["keys"] == {
        "3": "a",
        "2.5": "b",
        "true": "c",
        "null": "d",
        "(1, 2)": "e",
        str(2**70): "f",
        "k": "g",
    }


@pytest.mark.parametrize(
    ("value", "word"), [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")]
)
def test_nan_and_infinity_in_extra_are_words_and_the_json_is_valid(value: float, word: str) -> None:
    """json.dumps wrote NaN/Infinity (not JSON); now the extension is strict JSON, and an extra
    field keeps its meaning as the word the collector's JSON lines and AMQP bodies always showed."""
    extension, meta = extra_of({"ratio": value, "nested": [value, {"x": value}], "fine": 1.5})
    assert meta["extra"] == {"ratio": word, "nested": [word, {"x": word}], "fine": 1.5}
    json.loads(extension, parse_constant=lambda bad: pytest.fail(f"{bad} is not JSON"))


@pytest.mark.parametrize("created", [math.nan, math.inf])
def test_a_non_finite_created_is_null_and_the_collector_uses_its_receive_time(created: float) -> None:
    """As before (NaN was ignored), a null ``created`` leaves the record's time to the collector."""
    encoder = Encoder("app", "host", "0123456789abcdef")
    record = logging.makeLogRecord({"msg": "m", "levelno": 20, "levelname": "INFO", "created": created})
    extension = encoder.fast_extension(record, 3)
    assert extension is not None and extension == encoder.extension(encoder.fields(record, 3))
    assert b'"created":null' in extension
    parsed = parse_frames([b"app.INFO", b"m", extension], 1234.5)
    assert parsed.created is None and parsed.time == 1234.5


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (2**64 - 1, 2**64 - 1),  # orjson's largest number
        (-(2**63), -(2**63)),  # and its smallest
        (2**64, str(2**64)),  # beyond: the repr, as text
        (-(2**63) - 1, str(-(2**63) - 1)),
        ([1, 2**100], [1, str(2**100)]),  # nested too
    ],
)
def test_ints_beyond_64_bits_are_sent_as_text(value: object, sent: object) -> None:
    """orjson refuses them; the extension carries their repr instead of losing the record."""
    _, meta = extra_of({"big": value})
    assert meta["extra"]["big"] == sent


def test_a_huge_level_number_still_gets_an_extension() -> None:
    """A custom level numbered beyond 64 bits (part of the cached call-site part) is sent as text."""
    encoder = Encoder("app", "host", "0123456789abcdef")
    record = logging.makeLogRecord({"msg": "m", "levelno": 2**70, "levelname": "HUGE", "created": 1.5})
    extension = encoder.fast_extension(record, 0)
    assert extension is not None and extension == encode_extension(encoder.fields(record, 0))
    assert json.loads(extension)["levelno"] == str(2**70)


def test_non_ascii_is_utf8_not_escaped() -> None:
    """orjson writes UTF-8 where json wrote \\u escapes: the same JSON text, shorter."""
    value = "Grüße \u2028 \U0001f600 日本"
    extension, meta = extra_of({"greeting": value}, name="löggér")
    assert value.encode() in extension and "löggér".encode() in extension
    assert b"\\u" not in extension
    assert meta["extra"]["greeting"] == value and meta["logger"] == "löggér"


def test_lone_surrogates_are_sent_escaped_on_both_paths() -> None:
    """A surrogateescape'd path (not UTF-8 on disk) cannot be UTF-8: it goes as \\udcXX text."""
    encoder = Encoder("app", "host", "0123456789abcdef")
    record = logging.makeLogRecord(
        {"msg": "m", "levelno": 20, "levelname": "INFO", "created": 1.5, "pathname": "/srv/caf\udce9.py"}
    )
    fast = encoder.fast_extension(record, 0)
    assert fast is not None and fast == encoder.extension(encoder.fields(record, 0))
    assert decode_extension(fast)["path"] == "/srv/caf\\udce9.py"
    _, meta = extra_of({"label": "x\udc80y"})
    assert meta["extra"]["label"] == "x\\udc80y"


def test_objects_json_has_no_type_for_are_sent_as_their_repr() -> None:
    """default=repr's behaviour, datetimes and dataclasses included; UUIDs and Enums are orjson's."""
    when = datetime.datetime(2026, 12, 2, 1, 30, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID(int=7)
    values = {
        "obj": ValueError("x"),
        "raw": b"\x00bytes",
        "set": {1},
        "complex": 3 + 4j,
        "when": when,
        "day": when.date(),
        "point": Point(1),
        "ident": ident,
        "colour": Colour.RED,
    }
    _, meta = extra_of({"values": values})
    assert meta["extra"]["values"] == {
        "obj": "ValueError('x')",
        "raw": "b'\\x00bytes'",
        "set": "{1}",
        "complex": "(3+4j)",
        "when": repr(when),
        "day": repr(when.date()),
        "point": "Point(x=1)",
        "ident": str(ident),  # json sent "UUID('...')"
        "colour": "red",  # json sent "<Colour.RED: 'red'>"
    }


def test_subclasses_of_json_types_are_sent_as_their_base_type() -> None:
    """As json did: a str, int, float, dict subclass by its value; a namedtuple as an array."""
    values = {
        "text": Text("t"),
        "number": Number.ONE,
        "real": Real(2.5),
        "ordered": collections.OrderedDict(a=1),
        "counts": collections.defaultdict(int, b=2),
        "pair": Pair(1, 2),
        "flag": True,
    }
    extension, meta = extra_of({"values": values})
    assert meta["extra"]["values"] == {
        "text": "t",
        "number": 1,
        "real": 2.5,
        "ordered": {"a": 1},
        "counts": {"b": 2},
        "pair": [1, 2],
        "flag": True,
    }
    assert b'"real":2.5' in extension  # a number, not the text "2.5"


def test_cycles_and_deep_nesting_are_sent_as_their_repr() -> None:
    """What orjson cannot write (a cycle; deeper than it recurses) becomes the field's repr; the record goes out."""
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    deep: list[Any] = []
    inner = deep
    for _ in range(300):
        inner.append([])
        inner = inner[0]
    for value, shown in ((cycle, "{'self': {...}}"), (deep, None)):
        _, meta = extra_of({"value": value})
        assert isinstance(meta["extra"], str)
        assert meta["seq"] == 0 and meta["pub"] == "0123456789abcdef"
        if shown:
            assert shown in meta["extra"]
