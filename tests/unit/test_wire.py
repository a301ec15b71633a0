"""Topic grammar and frame parsing: table-driven cases and a round-trip property."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zlogcollect.wire import (
    DEFAULT_LEVELS,
    MAX_TOPIC_BYTES,
    Levels,
    MalformedRecord,
    Parser,
    SequenceMark,
    Topic,
    UnknownLevel,
    build_topic,
    encode_extension,
    escape_frames,
    escape_text,
    level_word,
    parse_frames,
    parse_topic,
)

CASES = [
    # topic, expected (root, level, subtopic), level number
    ("INFO", ("", "INFO", ""), 20),
    ("app1.ERROR", ("app1", "ERROR", ""), 40),
    ("app1.ERROR.db.query", ("app1", "ERROR", "db.query"), 40),
    ("shop.web.WARNING.cart", ("shop.web", "WARNING", "cart"), 30),
    ("INFO.db", ("", "INFO", "db"), 20),  # the stock watcher calls `db` the level here
    ("a.b.c.DEBUG", ("a.b.c", "DEBUG", ""), 10),
    ("svc.WARN.x", ("svc", "WARNING", "x"), 30),
    ("svc.FATAL", ("svc", "CRITICAL", ""), 50),
    ("svc.NOTSET", ("svc", "NOTSET", ""), 0),
    ("svc.Level 25.sub", ("svc", "Level 25", "sub"), 25),
    ("svc.Level 7", ("svc", "Level 7", ""), 7),
    ("app.INFO.ERROR", ("app", "INFO", "ERROR"), 20),  # the first level token wins
    ("info.INFO", ("info", "INFO", ""), 20),  # level names are case-sensitive, as logging sends them
]


@pytest.mark.parametrize(("topic", "parts", "number"), CASES)
def test_parse_topic_finds_the_first_level_component(
    topic: str, parts: tuple[str, str, str], number: int
) -> None:
    """The level is the first dotted component naming a level; root and subtopic keep their dots."""
    assert parse_topic(topic) == (Topic(*parts), number)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [("", "empty_topic"), ("app1", "no_level"), ("app.info.x", "no_level"), ("Level x", "no_level")],
)
def test_parse_topic_rejects_topics_without_a_level(topic: str, reason: str) -> None:
    """An empty topic or one with no level component is malformed, with a reason."""
    with pytest.raises(MalformedRecord) as caught:
        parse_topic(topic)
    assert caught.value.reason == reason


def test_custom_levels_are_recognised() -> None:
    """Level names from configuration count as levels, with their numbers."""
    levels = Levels({"TRACE": 5, "SUCCESS": 25})
    assert parse_topic("app.TRACE.x", levels) == (Topic("app", "TRACE", "x"), 5)
    assert parse_topic("app.SUCCESS", levels) == (Topic("app", "SUCCESS", ""), 25)
    with pytest.raises(MalformedRecord):
        parse_topic("app.TRACE")


def test_custom_level_names_must_be_one_word() -> None:
    """A custom level with a dot could never be parsed back, so it is refused."""
    with pytest.raises(ValueError, match="one word"):
        Levels({"MY.LEVEL": 5})


words = st.text(st.sampled_from("abcXYZ019_-"), min_size=1, max_size=6)
dotted = st.lists(words, min_size=0, max_size=3).map(".".join)


@given(root=dotted, level=st.sampled_from(DEFAULT_LEVELS.names), subtopic=dotted)
def test_parse_topic_inverts_build_topic(root: str, level: str, subtopic: str) -> None:
    """parse_topic(build_topic(t)) == t for any root and subtopic without level names."""
    assert parse_topic(build_topic(root, level, subtopic))[0] == Topic(root, level, subtopic)


def test_stock_body_is_cleaned() -> None:
    """The trailing newline, the repeated level and the stock ' - None' are removed; tracebacks stay."""
    record = parse_frames([b"app1.ERROR.db", b"ERROR app.py:3 - timeout - None\n"], 100.0)
    assert (record.source, record.levelname, record.levelno, record.subtopic) == ("app1", "ERROR", 40, "db")
    assert record.message == "app.py:3 - timeout"
    assert record.received == 100.0
    assert record.time == 100.0
    multi = parse_frames([b"INFO", b"first\nTraceback (most recent call last):\n  x\nValueError\n"], 1.0)
    assert multi.message == "first\nTraceback (most recent call last):\n  x\nValueError"
    assert multi.source == ""


def test_a_record_with_the_extension_keeps_its_text_as_sent() -> None:
    """The stock warts are the stock handler's: 'ERROR disk failed' from ship or ZLogHandler stays whole."""
    ext = b'{"v":1,"pub":"p1","seq":0}'
    record = parse_frames([b"sys.ERROR", b"ERROR disk failed - None\n", ext], 1.0)
    assert record.message == "ERROR disk failed - None"
    assert parse_frames([b"sys.ERROR", b"ERROR disk failed - None\n"], 1.0).message == "disk failed"


def test_extension_fills_time_and_meta() -> None:
    """A third frame supplies the sender's time and metadata."""
    ext = encode_extension({"created": 12.5, "host": "h1", "pid": 42, "seq": 3, "pub": "p"})
    record = parse_frames([b"app.INFO", b"hi", ext], 99.0)
    assert record.time == 12.5
    assert record.received == 99.0
    assert record.meta == {"host": "h1", "pid": 42, "seq": 3, "pub": "p"}


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"app.INFO"], "frame_count"),
        ([b"app.INFO", b"x", b"{}", b"y"], "frame_count"),
        ([], "frame_count"),
        ([b"", b"x"], "empty_topic"),
        ([b"app", b"x"], "no_level"),
        ([b"app.INFO", b"\xff"], "bad_utf8"),
        ([b"\xffapp.INFO", b"x"], "bad_utf8"),
        ([b"app.INFO", b"a\x00b"], "nul_byte"),
        ([b"app.INFO", b"x" * 2000], "too_large"),
        ([b"app.INFO", b"x", b"[1]"], "bad_extension"),
        ([b"app.INFO", b"x", json.dumps({"v": 99}).encode()], "bad_extension"),
        ([b"app.INFO", b"x", b"\xff"], "bad_extension"),
    ],
)
def test_malformed_frames_have_reasons(frames: list[bytes], reason: str) -> None:
    """Every kind of bad input raises MalformedRecord with a short counter key."""
    with pytest.raises(MalformedRecord) as caught:
        parse_frames(frames, 0.0, max_bytes=1024)
    assert caught.value.reason == reason


def test_escape_frames_is_one_safe_truncated_line() -> None:
    """Control bytes, newlines and non-UTF-8 are escaped, and long frames are cut with a count."""
    text = escape_frames([b"a\nb\x00c\xff", b"y" * 50], limit=20)
    assert "\n" not in text and "\x00" not in text
    assert text.startswith("a\\nb\\x00c\\xff | ")
    assert text.endswith("...[36 more bytes]")
    assert escape_frames([]) == "(no frames)"


def test_hostile_extensions_never_escape_as_exceptions() -> None:
    """Deeply nested JSON is malformed; implausible values are ignored rather than losing the record."""
    nested = b'{"v":1,"a":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(MalformedRecord) as caught:
        parse_frames([b"app.INFO", b"x", nested], 0.0, max_bytes=1 << 20)
    assert caught.value.reason == "bad_extension"
    for created in ("1e300", "NaN", "Infinity", "-5", "true", '"soon"'):
        record = parse_frames(
            [b"app.INFO", b"x", b'{"v":1,"created":' + created.encode() + b',"exc":5}'], 42.0
        )
        assert record.time == 42.0
        assert record.meta["exc"] == "5"


def test_what_the_stdlib_encoder_sends_parses_as_before() -> None:
    """orjson refuses lone surrogates and NaN; older handlers (json.dumps) send both, and they still parse."""
    sent = json.dumps(
        {"v": 1, "path": "/srv/bad-\udcff-name.py", "extra": {"ratio": float("nan"), "big": 2**70}}
    ).encode()
    record = parse_frames([b"app.INFO", b"x", sent], 0.0)
    assert record.meta["path"] == "/srv/bad-\udcff-name.py"
    assert record.meta["extra"]["ratio"] != record.meta["extra"]["ratio"]  # NaN
    assert record.meta["extra"]["big"] == 2**70  # exact: the stdlib read it
    # What orjson reads itself: an integer beyond 64 bits is a float (docs/WIRE.md).
    assert parse_frames([b"app.INFO", b"x", b'{"v":1,"extra":{"big":%d}}' % 2**70], 0.0).meta["extra"][
        "big"
    ] == float(2**70)
    for bad in (b"\xff\xfe", b'{"v":1,"a":"\xff"}', b"\xef\xbb\xbf{}", b'{"v":1', b"[1]", b"null"):
        with pytest.raises(MalformedRecord) as caught:
            parse_frames([b"app.INFO", b"x", bad], 0.0)
        assert caught.value.reason == "bad_extension"


def test_extension_nesting_is_limited_whatever_the_json_decoder_allows() -> None:
    """40 levels decode fine on every Python, yet are malformed; 30 levels of extra are kept."""
    deep = b'{"v":1,"extra":{"a":' + b"[" * 40 + b"]" * 40 + b"}}"
    with pytest.raises(MalformedRecord) as caught:
        parse_frames([b"app.INFO", b"x", deep], 0.0)
    assert caught.value.reason == "bad_extension"
    fine = b'{"v":1,"extra":{"a":' + b"[" * 29 + b"]" * 29 + b"}}"
    assert isinstance(parse_frames([b"app.INFO", b"x", fine], 0.0).meta["extra"]["a"], list)


def test_custom_level_from_the_extension_is_accepted() -> None:
    """A level named in the topic and sent with its number by ZLogHandler needs no --level."""
    ext = encode_extension({"levelname": "NOTICE", "levelno": 25, "pub": "abc", "seq": 0})
    record = parse_frames([b"app1.NOTICE.db", b"hello", ext], 1.0)
    assert (record.source, record.levelname, record.levelno, record.subtopic) == ("app1", "NOTICE", 25, "db")
    # The name must be a component of the topic: the extension cannot invent a level.
    other = encode_extension({"levelname": "NOTICE", "levelno": 25})
    with pytest.raises(MalformedRecord) as caught:
        parse_frames([b"app1.OTHER", b"x", other], 1.0)
    assert caught.value.reason == "no_level"
    # A name that is not one word of at most 32 characters is not learned (nor a reason to drop a record).
    for name in ("N" * 33, "has space", "-x"):
        weird = encode_extension({"levelname": name, "levelno": 25})
        with pytest.raises(MalformedRecord) as caught:
            parse_frames([f"app1.{name}".encode(), b"x", weird], 1.0)
        assert caught.value.reason == "no_level"
    numbered = encode_extension({"levelname": "Level 25", "levelno": 25})
    assert parse_frames([b"app1.Level 25", b"x", numbered], 1.0).levelno == 25


def test_unknown_level_hint_names_the_number_once_learned() -> None:
    """Stock senders with an unknown level get a hint; the number once an extension taught it."""
    parser = Parser()
    with pytest.raises(UnknownLevel) as caught:
        parser.parse([b"app1.NOTICE", b"x"], 1.0)
    assert caught.value.reason == "no_level"
    assert caught.value.detail == "unknown level 'NOTICE' \u2014 add --level NOTICE=NUMBER"
    parser.parse([b"app1.NOTICE", b"x", encode_extension({"levelname": "NOTICE", "levelno": 25})], 1.0)
    with pytest.raises(UnknownLevel) as caught:
        parser.parse([b"app1.NOTICE", b"x"], 1.0)
    assert caught.value.detail == "unknown level 'NOTICE' \u2014 add --level NOTICE=25"


@pytest.mark.parametrize(
    "fields",
    [
        {"seq": 10**4298},
        {"seq": -1},
        {"seq": True},
        {"seq": 1.5},
        {"dropped": 2**63},
        {"pid": 2**40},
        {"pid": "12"},
        {"line": -3},
        {"levelno": 2**31},
        {"host": "h" * 256},
        {"host": 5},
        {"pub": "p" * 65},
        {"pub": "new\nline"},
    ],
)
def test_out_of_range_extension_fields_are_malformed(fields: dict[str, object]) -> None:
    """Every number and kept field from the wire has a range; outside it the record is bad_extension."""
    with pytest.raises(MalformedRecord) as caught:
        parse_frames([b"app.INFO", b"x", encode_extension(fields)], 0.0)
    assert caught.value.reason == "bad_extension"
    assert len(caught.value.detail) < 200


def test_quarantined_records_keep_their_sequence_mark() -> None:
    """A record quarantined for any reason still says which publisher and seq it was."""
    ext = encode_extension({"pub": "p1", "seq": 7, "dropped": 2, "host": "h\n" * 200, "pid": 3})
    with pytest.raises(MalformedRecord) as caught:
        parse_frames([b"app.NOLEVEL", b"x", ext], 0.0)
    assert caught.value.mark == SequenceMark("p1", 7, 2, "?", 3)  # an over-long host is not kept
    with pytest.raises(MalformedRecord) as caught:
        parse_frames([b"app.INFO", b"x", encode_extension({"pub": "p1", "seq": -1})], 0.0)
    assert caught.value.mark is None
    with pytest.raises(MalformedRecord) as caught:
        parse_frames(
            [b"app.INFO", b"x" * 5000, encode_extension({"pub": "p1", "seq": 8})], 0.0, max_bytes=4096
        )
    assert caught.value.reason == "too_large"
    assert caught.value.mark == SequenceMark("p1", 8, 0, "?", None)


def test_topics_are_bounded_and_so_is_the_topic_cache() -> None:
    """A topic over MAX_TOPIC_BYTES is malformed; the cache stays under its byte budget."""
    with pytest.raises(MalformedRecord) as caught:
        parse_frames([b"app.INFO." + b"x" * MAX_TOPIC_BYTES, b"x"], 0.0)
    assert caught.value.reason == "topic_too_long"
    parser = Parser(cache_bytes=100_000)
    for n in range(500):
        parser.parse([f"app{n}.INFO.".encode() + b"x" * 1000, b"x"], 0.0)
        assert parser.cache_bytes <= 100_000


def test_escape_text_makes_one_safe_line() -> None:
    """Text from the wire on stderr: newlines and escape sequences shown, not acted on."""
    text = escape_text("web01\n2026-01-01 zlogcollect ERROR: forged\x1b[2J", 300)
    assert "\n" not in text and "\x1b" not in text
    assert "\\n" in text and "\\x1b" in text
    assert escape_text("x" * 500, 10) == "x" * 10 + "...[490 more]"


def test_control_characters_from_the_wire_are_escaped() -> None:
    """ESC, CR, BEL, C1 and U+2028 cannot act on a terminal or forge a line; tab and newline stay text."""
    text = "esc \x1b[2J\x1b]0;title\x07 cr\rover\u2028forged\x85 tab\tend\nnext é"
    record = parse_frames([b"app.INFO", text.encode(), b'{"v":1,"exc":"E\\u001b[31m"}'], 0.0)
    assert record.message == ("esc \\x1b[2J\\x1b]0;title\\x07 cr\\rover\\u2028forged\\x85 tab\tend\nnext é")
    assert record.meta["exc"] == "E\\x1b[31m"
    assert parse_frames([b"app.INFO", b"plain text", b'{"v":1}'], 0.0).message == "plain text"
    weird = parse_frames([b"ap\x1bp.INFO", b"x"], 0.0)
    assert weird.source == "ap\\x1bp"


def test_a_level_name_that_is_not_one_word_is_named_in_the_quarantine_reason() -> None:
    """Another sender's 'A|B' with its number: quarantined, and the reason says why (warned once by name)."""
    ext = encode_extension({"levelname": "A|B", "levelno": 28})
    with pytest.raises(UnknownLevel) as caught:
        parse_frames([b"app.A|B", b"x", ext], 0.0)
    assert caught.value.level == "A|B" and "not one word" in caught.value.detail
    assert level_word("A|B") == "A_B" and level_word("Level 25") == "Level 25"
    assert level_word("L" * 40) == "L" * 32 and level_word("9x") == "_9x" and level_word("NOTICE") == "NOTICE"


@pytest.mark.parametrize("pub", [{}, [], {"a": 1}, 7, True, ""])
def test_a_publisher_id_of_the_wrong_type_is_malformed_not_a_crash(pub: object) -> None:
    """Found by a property test: an unhashable pub once raised TypeError in the parser's id cache."""
    parser = Parser()
    parser.parse([b"app.INFO", b"x", b'{"v":1,"pub":"ok-1","seq":0}'], 0.0)
    with pytest.raises(MalformedRecord) as caught:
        parser.parse([b"app.INFO", b"x", json.dumps({"v": 1, "pub": pub, "seq": 1}).encode()], 0.0)
    assert caught.value.reason == "bad_extension"


def test_a_newline_in_the_topic_is_escaped_so_no_line_can_be_forged() -> None:
    """Found by test_fuzz: a source with a newline split the line and its continuation prefix in two.

    ``x\\n2026-11-25 15:00:00.000 | CRITICAL | bank.INFO`` made the line after it look like a
    CRITICAL record of ``bank``; a topic is one line, so its newline is written ``\\n``.
    """
    forged = b"x\n2026-11-25 15:00:00.000 | CRITICAL | bank | web01:1 | - | forged.INFO.a\nb"
    record = parse_frames([forged, b"first\nsecond"], 1.0)
    assert record.source == "x\\n2026-11-25 15:00:00.000 | CRITICAL | bank | web01:1 | - | forged"
    assert (record.subtopic, record.topic.count("\n")) == ("a\\nb", 0)
    record = parse_frames([b"\n.NOTSET", b""], 1.0)
    assert record.source == "\\n"


def test_a_nul_in_the_traceback_is_escaped() -> None:
    """Found by test_fuzz: ``{"exc":"\\u0000"}`` put a raw NUL into the line (grep calls the file binary)."""
    record = parse_frames([b"NOTSET", b"", b'{"exc":"a\\u0000b","v":1}'], 1.0)
    assert record.meta["exc"] == "a\\x00b"
