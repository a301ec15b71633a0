"""Fuzzing the parts a peer's bytes reach: the wire parser, the router, safe names, the line formatters.

Properties, checked on frames a hostile or broken peer could send: the parser
returns a record or raises ``MalformedRecord`` (never another exception), the
paths a record is routed to stay inside ``--dir``, and every formatted line is
one line of safe text (JSON lines parse back). ``ZLOGCOLLECT_FUZZ_EXAMPLES``
raises the number of examples per property for a longer run; under ``CI=true``
the runs are derandomized (the ``ci`` profile in tests/conftest.py).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.unit.test_encode import odd_ints
from tests.unit.test_encode import text as plain_text
from tests.unit.test_wire import dotted, words
from zlogcollect.formatting import CONTINUATION, DEFAULT_FORMAT, format_time, json_formatter, text_formatter
from zlogcollect.routing import (
    ERRORS_FILE,
    MALFORMED_FILE,
    MAX_NAME_LENGTH,
    OVERFLOW_FILE,
    PUBLISHERS_FILE,
    RESERVED_NAMES,
    STATS_FILE,
    Route,
    RouteError,
    Router,
    default_routes,
    safe_name,
    validate_target,
)
from zlogcollect.wire import (
    LEVEL_ALIASES,
    MAX_HOST_CHARS,
    MAX_INT,
    MAX_LEVELNO,
    MAX_LINE,
    MAX_PID,
    MAX_RECORD_BYTES,
    MIN_LEVELNO,
    STANDARD_LEVELS,
    Levels,
    MalformedRecord,
    Parser,
    Record,
    build_topic,
)

EXAMPLES = int(os.environ.get("ZLOGCOLLECT_FUZZ_EXAMPLES", "300"))
"""Examples per property; raise it for a longer run (``ZLOGCOLLECT_FUZZ_EXAMPLES=20000``)."""

pytestmark = pytest.mark.timeout(max(120, EXAMPLES // 10))  # a longer run may take longer

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
"""What must never reach a line raw: C0 but tab and newline, DEL, C1, the Unicode line separators
(every character ``str.splitlines`` breaks at, except the newline itself)."""

# --- strategies: text, JSON-ish values, frames ------------------------------------------------

surrogates = st.characters(categories=["Cs"])
controls = st.sampled_from("\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x1c\x1e\x7f\x85\x9b\u2028\u2029")
# Any code point, lone surrogates and control characters made likely.
wild_text = st.text(st.characters() | surrogates | controls, max_size=40)
huge_ints = st.sampled_from([2**64, -(2**64) - 1, 10**400, MAX_INT + 1, MAX_PID + 1, 2**31])
wild_scalars = st.none() | st.booleans() | odd_ints | huge_ints | st.floats() | wild_text | plain_text | words
wild_values = st.recursive(
    wild_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(wild_text | words, inner, max_size=4),
    max_leaves=8,
)
nested = st.integers(0, 40).map(lambda depth: json.loads("[" * depth + "]" * depth) if depth else [])


def either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything JSON-ish."""
    return st.one_of(valid, valid, wild_values)


level_names = st.sampled_from([*STANDARD_LEVELS, *LEVEL_ALIASES, "Level 25", "Level -3", "TRACE", "NOTICE"])
extension_fields = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1, 1, 2, "1", None, 1.0, True]),
        "created": either(st.floats(0, 7.3e9) | st.floats() | huge_ints),
        "levelno": either(st.integers(-5, 60) | st.sampled_from([MIN_LEVELNO, MAX_LEVELNO])),
        "levelname": either(level_names | words),
        "host": either(st.sampled_from(["web01", "", "../..", "h" * 300]) | wild_text),
        "pid": either(st.integers(0, MAX_PID)),
        "process": wild_values,
        "thread": wild_values,
        "logger": wild_values,
        "path": wild_values,
        "line": either(st.integers(0, MAX_LINE)),
        "func": wild_values,
        "exc": either(wild_text),
        "extra": either(
            st.dictionaries(st.just("user") | words | wild_text, wild_values | nested, max_size=4)
        ),
        "pub": either(st.sampled_from(["e98848f8a008e39a", "p1", "x" * 65]) | wild_text),
        "seq": either(st.integers(0, MAX_INT) | huge_ints),
        "dropped": either(st.integers(0, 10) | huge_ints),
        "user": wild_values,  # not in extra: no %(user)s
    },
)


def dump(fields: dict[str, Any], how: str) -> bytes:
    """The fields as a third frame, written the ways senders (and broken senders) write JSON."""
    if how == "orjson":
        try:
            return orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:  # a huge int or a lone surrogate: the stdlib's way then
            how = "ascii"
    if how == "ascii":  # NaN, huge ints and lone surrogates as the stdlib writes them (\udcff)
        return json.dumps(fields).encode()
    # Not ASCII-escaped: a lone surrogate becomes bytes that are not UTF-8.
    return json.dumps(fields, ensure_ascii=False).encode("utf-8", "surrogatepass")


def encoded(value: str, errors: str) -> bytes:
    """*value* as UTF-8; ``surrogatepass`` makes bytes that are not UTF-8 of a lone surrogate."""
    return value.encode("utf-8", errors)


topics = st.one_of(
    st.builds(build_topic, dotted, level_names, dotted).map(str.encode),
    st.builds(lambda root, level, sub: f"{root}.{level}.{sub}", wild_text, level_names, wild_text).map(
        lambda topic: encoded(topic, "surrogatepass")
    ),
    st.builds(encoded, wild_text, st.sampled_from(["surrogatepass", "backslashreplace"])),
    st.binary(max_size=40),
    st.sampled_from([b"", b".", b"..INFO..", b"a" * 1100 + b".INFO", b"Level 99999999999.x"]),
)
bodies = st.one_of(
    st.builds(encoded, wild_text, st.sampled_from(["surrogatepass", "backslashreplace"])),
    st.binary(max_size=60),
    st.sampled_from([b"", b"\n", b"ERROR x - None\n", b"INFO INFO \n\n", b"a\x00b", b"x" * 300]),
)
extensions = st.one_of(
    st.builds(dump, extension_fields, st.sampled_from(["orjson", "ascii", "raw"])),
    st.builds(
        dump, extension_fields.map(lambda fields: {"v": 1, **fields}), st.sampled_from(["orjson", "ascii"])
    ),
    st.binary(max_size=40),
    st.integers(0, 40).map(lambda depth: b'{"v":1,"extra":' + b"[" * depth + b"]" * depth + b"}"),
    st.sampled_from([b"{", b"null", b"[1]", b'{"v":1', b"\xef\xbb\xbf{}", b'{"v":1,"seq":NaN}']),
)
structured = st.one_of(
    st.tuples(topics, bodies).map(list),
    st.tuples(topics, bodies, extensions).map(list),
    st.tuples(topics, bodies, extensions, st.binary(max_size=10)).map(list),
)
frame_sets = st.one_of(st.lists(st.binary(max_size=60), max_size=5), structured)

# Records as the collector's parser produces them, biased to parse.
record_frames = st.tuples(
    st.builds(build_topic, dotted | wild_text, level_names, dotted | wild_text).map(
        lambda topic: encoded(topic, "backslashreplace")
    ),
    st.builds(encoded, wild_text | plain_text, st.just("backslashreplace")),
    st.builds(
        dump,
        extension_fields.map(lambda fields: {**fields, "v": 1}),
        st.sampled_from(["orjson", "ascii"]),
    )
    | st.just(b""),
).map(lambda frames: list(frames) if frames[2] else list(frames[:2]))

# What the formatters get: records that parse (integers in range), any strings and extra values.
no_nul = wild_text.map(lambda value: value.replace("\x00", ""))
formattable_frames = st.tuples(
    st.builds(build_topic, dotted | no_nul, level_names, dotted | no_nul).map(
        lambda topic: encoded(topic, "backslashreplace")
    ),
    st.builds(encoded, no_nul | plain_text, st.just("backslashreplace")),
    st.builds(
        dump,
        st.fixed_dictionaries(
            {"v": st.just(1)},
            optional={
                "created": st.floats(0, 7.3e9) | st.floats(),
                "levelno": st.integers(-5, 60),
                "host": wild_text,
                "pid": st.none() | st.integers(0, MAX_PID),
                "process": wild_values,
                "thread": wild_values,
                "logger": wild_values,
                "path": wild_values,
                "line": st.none() | st.integers(0, MAX_LINE),
                "func": wild_values,
                "exc": wild_text,
                "extra": st.dictionaries(st.just("user") | words | wild_text, wild_values, max_size=4),
                "pub": st.sampled_from(["e98848f8a008e39a", "p1"]),
                "seq": st.integers(0, MAX_INT),
            },
        ),
        st.sampled_from(["orjson", "ascii"]),
    )
    | st.just(b""),
).map(lambda frames: list(frames) if frames[2] else list(frames[:2]))

# --- the parser ---------------------------------------------------------------------------------

_REASON = re.compile(r"[a-z][a-z0-9_]{0,31}")
_PUB = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def outcome(parser: Parser, frames: list[bytes], received: float) -> Record | MalformedRecord:
    """What *parser* makes of *frames*; any exception but MalformedRecord fails the property."""
    try:
        return parser.parse(frames, received)
    except MalformedRecord as bad:
        return bad


def summary(result: Record | MalformedRecord) -> str:
    if isinstance(result, MalformedRecord):
        return f"malformed {result.reason}: {result.detail} {result.mark}"
    return repr(result)  # NaN in meta compares unequal to itself; its repr does not


def int_in(value: object, low: int, high: int) -> bool:
    return value.__class__ is int and isinstance(value, int) and low <= value <= high


def check_record(record: Record, received: float) -> None:
    """The kinds docs/WIRE.md promises for every field of a record the parser returns."""
    for name in ("source", "levelname", "subtopic", "message", "topic"):
        value = getattr(record, name)
        assert value.__class__ is str, name
        value.encode()  # decoded from UTF-8: no lone surrogates
        # Escaped as docs/WIRE.md says: tab (and in the text, newline) stay; a topic is one line.
        assert not CONTROL.search(value.replace("\t", "").replace("\n", "" if name == "message" else "\0"))
    assert record.levelname, "a record always has a level"
    assert record.topic == build_topic(record.source, record.levelname, record.subtopic)
    assert int_in(record.levelno, MIN_LEVELNO, MAX_LEVELNO)
    assert record.received == received
    created = record.created
    assert created is None or (created.__class__ is float and 0 <= created < 7.3e9)
    meta = record.meta
    assert meta.__class__ is dict
    assert "v" not in meta and "created" not in meta
    for key, low, high in (
        ("seq", 0, MAX_INT),
        ("dropped", 0, MAX_INT),
        ("levelno", MIN_LEVELNO, MAX_LEVELNO),
    ):
        assert key not in meta or int_in(meta[key], low, high), (key, meta.get(key))
    for key, high in (("pid", MAX_PID), ("line", MAX_LINE)):
        assert meta.get(key) is None or int_in(meta[key], 0, high), (key, meta[key])
    host = meta.get("host")
    assert host is None or (host.__class__ is str and len(host) <= MAX_HOST_CHARS)
    pub = meta.get("pub")
    assert pub is None or (pub.__class__ is str and _PUB.fullmatch(pub))
    exc = meta.get("exc")
    assert exc is None or (
        exc.__class__ is str and not CONTROL.search(exc.replace("\n", "").replace("\t", ""))
    )


@FUZZ
@given(
    frames=frame_sets,
    max_bytes=st.sampled_from([MAX_RECORD_BYTES, 256]),
    received=st.floats(0, 7.3e9),
)
@example(
    frames=[b"app.INFO", b"x", b'{"v":1,"extra":{"big":' + b"9" * 5000 + b"}}"],
    max_bytes=MAX_RECORD_BYTES,
    received=1.0,
)
@example(
    frames=[b"app.INFO", b"x", b'{"v":1,"path":"\\udcff","created":NaN}'],
    max_bytes=MAX_RECORD_BYTES,
    received=1.0,
)
@example(
    frames=[b"app.INFO", b"x", b'{"v":1,"a":' + b"[" * 3000 + b"]" * 3000 + b"}"],
    max_bytes=MAX_RECORD_BYTES,
    received=1.0,
)
def test_the_parser_returns_a_record_or_raises_malformed(
    frames: list[bytes], max_bytes: int, received: float
) -> None:
    """Any 0-5 frames parse to a well-typed record or raise MalformedRecord with a short reason, twice alike."""
    parser = Parser(Levels({"TRACE": 5}), max_bytes)
    first = outcome(parser, frames, received)
    again = outcome(parser, frames, received)  # the topic is in the parser's cache now
    assert summary(again) == summary(first)
    if isinstance(first, MalformedRecord):
        assert _REASON.fullmatch(first.reason), first.reason
        assert first.detail.__class__ is str
    else:
        check_record(first, received)


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 1))
@given(batch=st.lists(frame_sets | record_frames, min_size=2, max_size=10))
def test_one_parser_for_many_frame_sets_answers_as_a_fresh_one(batch: list[list[bytes]]) -> None:
    """The topic cache, the learned levels and the known publishers never change what a set parses to."""
    shared = Parser()
    for frames in batch:
        got, fresh = outcome(shared, frames, 1.0), outcome(Parser(), frames, 1.0)
        if isinstance(fresh, Record):
            assert summary(got) == summary(fresh)
        else:  # the detail may differ: a learned level makes the hint name its number
            assert isinstance(got, MalformedRecord) and got.reason == fresh.reason


@FUZZ
@given(frames=record_frames, received=st.floats(0, 7.3e9))
def test_records_a_sender_meant_to_send_are_well_typed(frames: list[bytes], received: float) -> None:
    """Frames that look like ZLogHandler's (valid topic, text, version-1 extension of any values)."""
    result = outcome(Parser(), frames, received)
    if isinstance(result, Record):
        check_record(result, received)
    else:
        assert _REASON.fullmatch(result.reason), result.reason


# --- the router and safe names --------------------------------------------------------------------

BASE = "/srv/zlogcollect-fuzz/logs"
"""A --dir that does not exist: realpath then only normalises (nothing on this machine can redirect it)."""


def _field_known(name: str) -> bool:
    try:
        validate_target(f"{{{name}}}.log")
    except RouteError:
        return False
    return True


TEMPLATE_FIELDS = [name for name in ("source", "level", "host", "pid", "peer") if _field_known(name)]
"""The placeholders file templates take (``{peer}`` once the collector knows it)."""

OWN_FILES = frozenset({ERRORS_FILE, MALFORMED_FILE, OVERFLOW_FILE, PUBLISHERS_FILE, STATS_FILE})

pieces = st.sampled_from(
    [f"{{{name}}}" for name in TEMPLATE_FIELDS] + ["x", "-", "_", "app", ".log", "errors"]
)
components = st.lists(pieces, min_size=1, max_size=4).map("".join)
templates = st.lists(components, min_size=1, max_size=3).map("/".join)


def _with_peer(record: Record, peer: str | None) -> Record:
    record.peer = peer  # set by the collector from the CURVE certificate's name
    return record


records_for_routing = st.builds(
    _with_peer,
    st.builds(
        Record,
        source=wild_text | words | st.sampled_from(["..", ".", "errors", "_malformed", "a/b", "s" * 300]),
        levelname=level_names | wild_text,
        levelno=st.integers(0, 60),
        subtopic=wild_text,
        message=st.just("m"),
        received=st.just(1.0),
        meta=st.fixed_dictionaries(
            {},
            optional={
                "host": either(
                    st.sampled_from(["web01", "../../etc", "..", ".", "/", "h" * 300]) | wild_text
                ),
                "pid": either(st.integers(0, MAX_PID) | st.integers(-5, -1)),
            },
        ),
    ),
    st.none() | st.sampled_from(["alice", "..", "a/b", "_nopeer"]) | wild_text,
)


def route_or_reject(pattern: str, target: str, min_level: int | None = None) -> Route:
    try:
        return Route(pattern, target, min_level)
    except RouteError:
        assume(False)
        raise


def check_path(path: str) -> None:
    """A relative path that stays inside --dir, whatever the record said."""
    assert path.__class__ is str and path
    assert "\x00" not in path and not os.path.isabs(path), path
    for part in path.split("/"):
        assert part not in ("", ".", ".."), path
        assert len(part.encode("utf-8", "surrogatepass")) <= 255, (len(part), path)
    for resolve in (os.path.normpath, os.path.realpath):
        full = resolve(os.path.join(BASE, path))
        assert full.startswith(BASE + os.sep), (path, full)


@FUZZ
@given(
    record=records_for_routing,
    targets=st.lists(templates, min_size=1, max_size=3),
    default_source=wild_text | st.just("default"),
    errors_file=st.sampled_from([ERRORS_FILE, None, "sub/worst.log"]),
)
def test_routed_paths_stay_inside_the_log_directory(
    record: Record, targets: list[str], default_source: str, errors_file: str | None
) -> None:
    """Any record, any templates of the documented placeholders: every path is a safe relative path."""
    routes = [route_or_reject("#", target) for target in targets]
    router = Router([*default_routes(errors_file, 40), *routes], default_source)
    paths = router.route(record)
    assert paths, "the default route always names a file"
    assert len(paths) == len(set(paths))
    for path in paths:
        check_path(path)
    # A sender's names never make a path one of the collector's own files (unless a route names it).
    literal = {route.target for route in routes} | ({errors_file} if errors_file else set())
    for path in paths:
        assert path not in OWN_FILES or path in literal, path


@FUZZ
@given(name=wild_text | words | st.text(max_size=300), fallback=st.sampled_from(["_", "default"]))
@example(name="..", fallback="_")
@example(name=".", fallback="_")
@example(name="", fallback="_")
@example(name="ERRORS", fallback="_")
def test_safe_name_is_one_harmless_component(name: str, fallback: str) -> None:
    """Only [A-Za-z0-9._@+-], never hidden, '.' or '..', never a reserved stem, at most 101 characters."""
    cleaned = safe_name(name, fallback)
    assert re.fullmatch(r"[A-Za-z0-9._@+-]+", cleaned), cleaned
    assert not cleaned.startswith(".") and cleaned not in (".", "..")
    assert cleaned.lower() not in RESERVED_NAMES
    assert len(cleaned) <= MAX_NAME_LENGTH + 1


# --- the line formatters ----------------------------------------------------------------------------

CUSTOM_FORMATS = [
    "%(asctime)s %(levelno)d %(host)s:%(pid)s %(process)s/%(thread)s %(logger)s %(path)s:%(line)s "
    "%(func)s %(seq)s [%(user)s] %(topic)s %(message)s",
    "%(source)s|%(subtopic)s|%(user)r|%(message)s",
]


def parsed(frames: list[bytes]) -> Record:
    result = outcome(Parser(), frames, 1795620119.5)
    assume(isinstance(result, Record))
    assert isinstance(result, Record)
    return result


def check_text_line(line: str, record: Record, multiline: str) -> None:
    assert line.__class__ is str and line.endswith("\n")
    assert not CONTROL.search(line.replace("\t", "")), line
    if multiline == "prefix":
        prefix = f"{format_time(record.time)} | {record.source or '-'} {CONTINUATION} "
        for continued in line[:-1].split("\n")[1:]:
            assert continued.startswith(prefix), (continued, prefix)


@FUZZ
@given(
    frames=formattable_frames,
    fmt=st.sampled_from([DEFAULT_FORMAT, *CUSTOM_FORMATS]),
    multiline=st.sampled_from(["prefix", "plain"]),
)
def test_text_lines_are_safe_text(frames: list[bytes], fmt: str, multiline: str) -> None:
    """Any parsed record gives one str of printable text; in prefix mode each further line has the prefix."""
    record = parsed(frames)
    render = text_formatter(fmt, multiline=multiline)
    line = render(record)
    check_text_line(line, record, multiline)
    assert render(record) == line  # the per-topic caches say the same the second time


def _no_constants(word: str) -> object:
    raise AssertionError(f"{word} is not JSON")


@FUZZ
@given(frames=formattable_frames)
def test_json_lines_are_one_line_that_parses_back(frames: list[bytes]) -> None:
    """Any parsed record gives one strict JSON object on one line, no raw control character in it."""
    record = parsed(frames)
    line = json_formatter()(record)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert not CONTROL.search(line[:-1]), line
    data = json.loads(line, parse_constant=_no_constants)
    assert data["topic"] == record.topic and data["levelno"] == record.levelno
    assert data["message"] in record.message
    for key in ("host", "pid", "seq", "pub"):
        if key in record.meta:
            assert data[key] == record.meta[key] or (
                isinstance(record.meta[key], float) and math.isnan(record.meta[key])
            )
