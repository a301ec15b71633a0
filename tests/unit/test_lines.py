"""ship's and send's pure part: lines from chunks, escaping, cuts, levels, option checks, the extension."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zlogcollect.encode import cut
from zlogcollect.lines import (
    LEVEL_NAMES,
    ExtensionTemplate,
    LevelRule,
    Line,
    LineSplitter,
    OptionError,
    check_app,
    check_endpoint,
    level_named,
    message_body,
    message_text,
    record_fields,
)
from zlogcollect.wire import STANDARD_LEVELS, decode_extension, encode_extension, sequence_mark


def split_all(chunks: list[bytes], limit: int = 1000) -> list[Line]:
    splitter = LineSplitter(limit)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    last = splitter.finish()
    return lines + ([last] if last is not None else [])


def test_lines_across_chunks_and_the_last_line_without_newline() -> None:
    lines = split_all([b"one\ntw", b"o\n", b"", b"\nthr", b"ee"])
    assert [line.data for line in lines] == [b"one", b"two", b"", b"three"]
    assert [line.size for line in lines] == [4, 4, 1, 5]
    assert all(line.cut == 0 for line in lines)


def test_finish_without_a_partial_line_is_none_and_reset_forgets_it() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"a\n") == [Line(b"a", 2)]
    assert splitter.finish() is None
    splitter.feed(b"half a line")
    assert splitter.pending == len(b"half a line")
    splitter.reset()
    assert splitter.pending == 0
    assert splitter.feed(b"new\n") == [Line(b"new", 4)]


def test_an_over_long_line_keeps_limit_bytes_and_counts_the_rest() -> None:
    """In one chunk or across many, memory holds at most *limit* bytes of a line."""
    whole = split_all([b"x" * 50 + b"\nok\n"], limit=10)
    assert whole == [Line(b"x" * 10, 51, 40), Line(b"ok", 3)]
    splitter = LineSplitter(10)
    for _ in range(1000):
        assert splitter.feed(b"y" * 1000) == []
        assert len(splitter._partial) <= 10  # noqa: SLF001 - the bound is the point
    assert splitter.feed(b"yy\nnext\n") == [Line(b"y" * 10, 1_000_003, 999_992), Line(b"next", 5)]


@given(st.lists(st.binary(max_size=30), max_size=10), st.data())
def test_any_chunking_gives_the_same_lines(pieces: list[bytes], data: st.DataObject) -> None:
    """However the bytes arrive, the lines are the input split at newlines (lines within the limit)."""
    blob = b"\n".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=6)))
    chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
    lines = split_all(chunks, limit=10_000)
    expected = blob.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert [line.data for line in lines] == expected
    assert sum(line.size for line in lines) == len(blob)


def test_invalid_utf8_and_nul_are_escaped_never_dropped() -> None:
    assert message_text(Line(b"caf\xc3\xa9 \xff\xfe end\r", 0)) == "café \\xff\\xfe end"
    assert message_text(Line(b"a\x00b", 0)) == "a\\x00b"
    assert message_text(Line(b"::1 - - [02/Dec/2026] GET /", 0)) == "::1 - - [02/Dec/2026] GET /"
    body = message_body(message_text(Line(bytes(range(256)), 0)), 10_000)
    body.decode("utf-8")  # always valid UTF-8
    assert b"\x00" not in body


def test_a_long_body_gets_the_handlers_cut_and_skipped_bytes_count_in_the_note() -> None:
    assert message_body("short", 1000) == b"short"
    text = "z" * 5000
    assert message_body(text, 1000) == cut(text.encode(), 1000)
    body = message_body(text, 1000, skipped=10_000)
    assert len(body) <= 1000
    kept = len(body.split(b"\n")[0])
    note = re.search(rb"\[zlogcollect cut ([\d,]+) bytes here", body)
    assert note is not None
    assert int(note.group(1).replace(b",", b"")) == 15_000 - kept


def test_levels_any_case_with_aliases_and_syslog_names() -> None:
    assert level_named("warn") == ("WARNING", 30)
    assert level_named(" Err ") == ("ERROR", 40)
    assert level_named("emerg") == ("CRITICAL", 50)
    assert level_named("notice") == ("INFO", 20)
    assert level_named("verbose") is None
    for name in LEVEL_NAMES:
        found = level_named(name.lower())
        assert found is not None
        assert STANDARD_LEVELS[found[0]] == found[1]


def test_level_from_takes_the_group_and_falls_back_to_the_default() -> None:
    rule = LevelRule("warning", r"\[(?P<level>\w+)\]")
    assert rule.level_of("2026/12/02 01:02:03 [error] 7#7: open() failed") == ("ERROR", 40)
    assert rule.level_of("[crit] disk") == ("CRITICAL", 50)
    assert rule.level_of("[verbose] unknown level") == ("WARNING", 30)
    assert rule.level_of("no brackets") == ("WARNING", 30)
    optional = LevelRule("INFO", r"^(?P<level>[A-Z]+)?:")
    assert optional.level_of(": no level") == ("INFO", 20)
    assert LevelRule("debug").level_of("[error] ignored without a pattern") == ("DEBUG", 10)


@pytest.mark.parametrize(
    ("level", "pattern", "complaint"),
    [
        ("LOUD", None, "level 'LOUD': expected one of"),
        ("INFO", "([a-z", "not a regular expression"),
        ("INFO", r"\[(\w+)\]", "needs a named group 'level'"),
        ("INFO", r"(?P<lvl>\w+)", "needs a named group 'level'"),
    ],
)
def test_bad_level_options_are_one_line(level: str, pattern: str | None, complaint: str) -> None:
    with pytest.raises(OptionError, match=re.escape(complaint)) as caught:
        LevelRule(level, pattern)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:5558", "tcp://collector.example:1", "tcp://[::1]:5558", "ipc:///run/x.sock"]
)
def test_endpoints_a_sender_can_connect_to(endpoint: str) -> None:
    check_endpoint(endpoint)


@pytest.mark.parametrize(
    ("endpoint", "complaint"),
    [
        ("127.0.0.1:5558", "expected tcp://HOST:PORT or ipc://PATH"),
        ("tcp://*:5558", "expected tcp://HOST:PORT or ipc://PATH"),
        ("tcp://host", "expected tcp://HOST:PORT or ipc://PATH"),
        ("tcp://host:0", "out of range"),
        ("tcp://host:70000", "out of range"),
        ("tcp://::1:5558", "IPv6 address in brackets"),
        ("udp://host:1", "expected tcp://HOST:PORT or ipc://PATH"),
        ("ipc://", "expected tcp://HOST:PORT or ipc://PATH"),
    ],
)
def test_endpoints_refused(endpoint: str, complaint: str) -> None:
    with pytest.raises(OptionError, match=re.escape(complaint)):
        check_endpoint(endpoint)


def test_app_and_subtopic_must_split_back_from_the_topic() -> None:
    check_app("nginx")
    check_app("shop.web", "access.v2")
    check_app("cron", "backup.ERROR")  # after the level, a level word is only subtopic
    for app in ("", "my app", "web.ERROR", "INFO"):
        with pytest.raises(OptionError, match="app"):
            check_app(app)


finite = st.floats(0, 7e9, allow_nan=False)
paths = st.none() | st.text(max_size=30)


@given(finite, st.sampled_from(sorted(STANDARD_LEVELS.items())), paths, st.none() | st.integers(0, 2**31 - 1))
def test_extension_template_is_encode_extension_byte_for_byte(
    created: float, level: tuple[str, int], path: str | None, lineno: int | None
) -> None:
    template = ExtensionTemplate("web01", 4242, "0123456789abcdef")
    for seq in (0, 1, 2**40):
        frame = template.encode(created, level[1], path, lineno, seq)
        fields = record_fields(created, level, "web01", 4242, path, lineno, "0123456789abcdef", seq)
        assert frame == encode_extension(fields)
        meta = decode_extension(frame)
        mark = sequence_mark(meta)
        assert mark is not None
        assert (mark.publisher, mark.seq, mark.dropped) == ("0123456789abcdef", seq, 0)
