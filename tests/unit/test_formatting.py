"""Record to line: the default text format, custom formats, JSON lines."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest

from zlogcollect.formatting import (
    DEFAULT_FORMAT,
    FormatError,
    compact_json,
    format_time,
    json_formatter,
    strict_json,
    text_formatter,
)
from zlogcollect.wire import Record

STAMP = time.mktime((2026, 11, 25, 15, 9, 31, 0, 0, -1)) + 0.1234


ZLOG_META = {"host": "web01", "pid": 4242, "logger": "db", "pub": "p1", "seq": 3}


def test_default_line() -> None:
    """The default line is time | level | source | origin | subtopic | message, '-' for what is empty."""
    render = text_formatter()
    line = render(Record("app1", "ERROR", 40, "db.query", "timeout", STAMP))
    assert line == "2026-11-25 15:09:31.123 | ERROR | app1 | - | db.query | timeout\n"
    assert (
        render(Record("", "INFO", 20, "", "x", STAMP)) == "2026-11-25 15:09:31.123 | INFO | - | - | - | x\n"
    )
    assert DEFAULT_FORMAT.count("|") == 5


def test_default_line_shows_host_and_pid_of_the_extension() -> None:
    """Records from the zlogcollect handler say where they came from; two hosts' lines differ by host."""
    render = text_formatter()
    web01 = Record(
        "app1", "ERROR", 40, "db.query", "timeout after 30 s", STAMP, created=STAMP, meta=ZLOG_META
    )
    web02 = Record(
        "app1", "ERROR", 40, "db.query", "timeout after 30 s", STAMP, meta={**ZLOG_META, "host": "web02"}
    )
    assert (
        render(web01)
        == "2026-11-25 15:09:31.123 | ERROR | app1 | web01:4242 | db.query | timeout after 30 s\n"
    )
    assert (
        render(web02)
        == "2026-11-25 15:09:31.123 | ERROR | app1 | web02:4242 | db.query | timeout after 30 s\n"
    )
    # A second round comes from the caches and must say the same.
    assert render(web01) != render(web02)
    assert render(Record("a", "INFO", 20, "", "m", STAMP, meta={"pid": 7})).split(" | ")[3] == "-:7"
    assert render(Record("a", "INFO", 20, "", "m", STAMP, meta={"host": "h"})).split(" | ")[3] == "h:-"


@pytest.mark.parametrize("host", ["evil | ERROR | forged", "a\nb", "\x1b[31mred", ["x"], "h" * 10_000, ""])
def test_origin_from_a_hostile_peer_keeps_the_columns(host: object) -> None:
    """A host with separators, newlines, escapes or of the wrong type cannot shift columns or add lines."""
    render = text_formatter()
    line = render(Record("app1", "ERROR", 40, "sub", "m", STAMP, meta={"host": host, "pid": "1 | 2"}))
    assert line.count("\n") == 1
    assert line.count(" | ") == 5
    assert "\x1b" not in line
    assert len(line) < 700


def test_extra_fields_in_format() -> None:
    """A name that is no known field comes from the record's extra fields; a record without it shows ''."""
    render = text_formatter("%(levelname)s user=%(user)s req=%(request_id)-4s| %(message)s")
    with_extra = Record("a", "INFO", 20, "", "m", STAMP, meta={"extra": {"user": "bob", "request_id": 7}})
    assert render(with_extra) == "INFO user=bob req=7   | m\n"
    assert render(Record("a", "INFO", 20, "", "m", STAMP)) == "INFO user= req=    | m\n"
    assert (
        render(Record("a", "INFO", 20, "", "m", STAMP, meta={"extra": "junk"})) == "INFO user= req=    | m\n"
    )


def test_sender_time_wins_over_receive_time() -> None:
    """With the structured extension the line carries the event time, host and pid."""
    render = text_formatter("%(asctime)s %(host)s[%(pid)s] %(logger)s %(message)s")
    record = Record(
        "a",
        "INFO",
        20,
        "",
        "m",
        received=STAMP + 5,
        created=STAMP,
        meta={"host": "h1", "pid": 7, "logger": "x.y"},
    )
    assert render(record) == "2026-11-25 15:09:31.123 h1[7] x.y m\n"
    assert render(Record("a", "INFO", 20, "", "m", STAMP)) == "2026-11-25 15:09:31.123 -[-] - m\n"


def test_traceback_from_extension_follows_the_message() -> None:
    """An exception sent in the extension is appended unless the text already has it."""
    render = text_formatter("%(message)s", multiline="plain")
    tb = "Traceback (most recent call last):\nValueError: x"
    assert render(Record("a", "ERROR", 40, "", "boom", 0.0, meta={"exc": tb})) == f"boom\n{tb}\n"
    assert render(Record("a", "ERROR", 40, "", f"boom\n{tb}", 0.0, meta={"exc": tb})) == f"boom\n{tb}\n"


@pytest.mark.parametrize(
    ("fmt", "needle"),
    [
        ("%(message)", "'%(message)' is not a field"),
        ("%(levelno)d %", "'%' is not a field"),
        ("%(user)d", "'user' is no known field, so it comes from the record's extra fields"),
        ("%(source)d", "the field 'source' cannot be shown as '%(source)d'"),
        ("%s", "'%s' is not a field"),
    ],
)
def test_bad_formats_fail_early_naming_the_field(fmt: str, needle: str) -> None:
    """Broken formats are reported when the formatter is made, naming the spot and listing the fields."""
    with pytest.raises(FormatError) as caught:
        text_formatter(fmt)
    message = str(caught.value)
    assert needle in message
    assert (
        "available fields: asctime, created," in message and "origin" in message and "extra field" in message
    )
    assert "\n" not in message


def test_utc_times() -> None:
    """With utc the time stamp is UTC."""
    assert format_time(0.5, utc=True) == "1970-01-01 00:00:00.500"


def test_json_line_has_core_and_extension_fields() -> None:
    """A JSON line is one object with the parsed fields plus everything the extension sent."""
    render = json_formatter(utc=True)
    line = render(
        Record(
            "app", "WARNING", 30, "db", "two\nlines", 10.0, created=1.0, meta={"host": "h", "extra": {"k": 1}}
        )
    )
    assert line.endswith("\n") and line.count("\n") == 1
    data = json.loads(line)
    assert data == {
        "time": "1970-01-01 00:00:01.000",
        "created": 1.0,
        "received": 10.0,
        "source": "app",
        "levelname": "WARNING",
        "levelno": 30,
        "subtopic": "db",
        "topic": "app.WARNING.db",
        "message": "two\nlines",
        "host": "h",
        "extra": {"k": 1},
    }


def test_per_topic_templates_match_the_plain_format() -> None:
    """The cached per-topic template renders exactly what plain %-formatting of every field gives."""
    from zlogcollect.formatting import record_fields

    fmt = "%(asctime)s %(levelname)-8s|%(levelno)03d|%(source)s|%(subtopic)s|%(topic)s|%(origin)s|%(message)s|%(created).1f|100%%"
    render = text_formatter(fmt)
    records = [
        Record("50%off", "WARNING", 30, "d%sb", "m%(x)s %", STAMP),
        Record("50%off", "WARNING", 30, "d%sb", "second", STAMP + 1.5),
        Record("", "Level 7", 7, "", "", STAMP),
        Record("a.b", "INFO", 20, "x", "hi", STAMP, created=STAMP - 3600),
        Record("a.b", "INFO", 20, "x", "hi", STAMP, meta={"host": "h", "pid": 1}),
        Record("a.b", "INFO", 20, "x", "hi", STAMP, meta={"host": "h", "pid": 2}),
    ]
    for record in records * 2:  # the second round comes from the cache
        assert render(record) == fmt % record_fields(record) + "\n"


@pytest.mark.parametrize("multiline", ["prefix", "plain"])
def test_default_format_fast_path_matches_the_plain_format(multiline: str) -> None:
    """The default line assembled from per-topic pieces equals %-formatting every field, tricky topics too."""
    from zlogcollect.formatting import record_fields

    render = text_formatter(multiline=multiline)
    records = [
        Record("50%off", "WARNING", 30, "%(origin)s%%", "m%(x)s %", STAMP),
        Record("a", "INFO", 20, "%(message)s", "%(asctime)s", STAMP, meta={"host": "h", "pid": 1}),
        Record("", "Level 7", 7, "", "", STAMP),
        Record("a.b", "INFO", 20, "x", "hi", STAMP, created=STAMP - 3600, meta={"pid": 3}),
    ]
    for record in records * 2:  # the second round comes from the cache
        assert render(record) == DEFAULT_FORMAT % record_fields(record) + "\n"


def test_time_formatter_caches_per_second_but_stays_exact() -> None:
    """Cached asctime agrees with format_time across second boundaries and out-of-order stamps."""
    from zlogcollect.formatting import TimeFormatter

    cached = TimeFormatter()
    for stamp in (STAMP, STAMP + 0.5, STAMP + 1.001, STAMP - 5.25, STAMP + 86400.999):
        assert cached(stamp) == format_time(stamp)


TRACEBACK = "Traceback (most recent call last):\n  File \"app.py\", line 3, in f\nKeyError: 'k'"


def test_continuation_lines_carry_time_and_source_by_default() -> None:
    """grep KeyError finds a line with the record's time and source; the first line stays as it was."""
    render = text_formatter()
    record = Record(
        "app1", "ERROR", 40, "db", f"lookup failed\n{TRACEBACK}", STAMP, meta={**ZLOG_META, "exc": TRACEBACK}
    )
    lines = render(record).splitlines()
    assert lines[0] == "2026-11-25 15:09:31.123 | ERROR | app1 | web01:4242 | db | lookup failed"
    assert lines[1:] == [
        "2026-11-25 15:09:31.123 | app1 + Traceback (most recent call last):",
        '2026-11-25 15:09:31.123 | app1 +   File "app.py", line 3, in f',
        "2026-11-25 15:09:31.123 | app1 + KeyError: 'k'",
    ]
    assert [line for line in lines if "KeyError" in line] == [
        "2026-11-25 15:09:31.123 | app1 + KeyError: 'k'"
    ]
    # A stock sender's multi-line text (no extension) gets the same prefix.
    stock = text_formatter()(Record("app2", "ERROR", 40, "", f"failed\n{TRACEBACK}", STAMP))
    assert stock.splitlines()[-1] == "2026-11-25 15:09:31.123 | app2 + KeyError: 'k'"


def test_a_message_cannot_forge_a_record_line() -> None:
    """In prefix mode a newline in a message cannot start a line that looks like another record."""
    render = text_formatter()
    forged = "ok\n2026-11-25 15:09:31.123 | CRITICAL | root | - | - | disk wiped"
    lines = render(Record("app1", "INFO", 20, "", forged, STAMP)).splitlines()
    assert lines[1].startswith("2026-11-25 15:09:31.123 | app1 + 2026")
    # Nor can a newline in a topic (a subtopic from a peer), twice (the second from a cache).
    for _ in range(2):
        lines = render(Record("app1", "INFO", 20, "x\n2026-11-25 fake", "m", STAMP)).splitlines()
        assert lines[1] == "2026-11-25 15:09:31.123 | app1 + 2026-11-25 fake | m"


def test_plain_multiline_mode_writes_continuation_lines_as_sent() -> None:
    """multiline='plain' keeps the old behaviour; unknown modes are refused."""
    record = Record("app1", "ERROR", 40, "", f"failed\n{TRACEBACK}", STAMP)
    assert text_formatter(multiline="plain")(record).splitlines()[1:] == TRACEBACK.splitlines()
    with pytest.raises(FormatError, match="prefix, plain"):
        text_formatter(multiline="indent")


def test_json_line_stores_the_traceback_once() -> None:
    """message is the bare message, exc the traceback, still one object per line."""
    record = Record(
        "app1", "ERROR", 40, "", f"failed\n{TRACEBACK}", STAMP, meta={**ZLOG_META, "exc": TRACEBACK}
    )
    line = json_formatter()(record)
    assert line.count("\n") == 1
    assert line.count("KeyError") == 1
    data = json.loads(line)
    assert (data["message"], data["exc"]) == ("failed", TRACEBACK)
    # Only the exc the sender appended is cut; a stock sender's text stays whole.
    assert json.loads(json_formatter()(Record("a", "ERROR", 40, "", f"x\n{TRACEBACK}", STAMP)))[
        "message"
    ] == (f"x\n{TRACEBACK}")


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_lines_are_strict_with_non_finite_numbers() -> None:
    """NaN and ±Infinity from a sender become the strings "NaN", "Infinity", "-Infinity"."""
    extra = {"ratio": math.nan, "limits": [math.inf, -math.inf, 1.5], "deep": {"x": math.nan}}
    record = Record("a", "INFO", 20, "", "m", STAMP, meta={"extra": extra, "line": math.inf})
    data = _strict(json_formatter()(record))
    assert data["extra"] == {"ratio": "NaN", "limits": ["Infinity", "-Infinity", 1.5], "deep": {"x": "NaN"}}
    assert data["line"] == "Infinity"
    assert data["message"] == "m"


def test_template_cache_is_bounded_by_bytes() -> None:
    """Distinct ~1 MB topics do not pile up in the per-topic template cache."""
    from zlogcollect.formatting import TEMPLATE_CACHE_BYTES, TextFormatter

    render = TextFormatter()
    for i in range(32):
        big = f"{i}" + "s" * 500_000
        render(Record(big, "INFO", 20, "u" * 500_000, "m", STAMP))
        # The private caches' bound is the point of this test.
        cached = sum(len(topic) + len(template) for topic, template in render._templates.items())  # noqa: SLF001
        cached += sum(len(topic) + len("".join(parts)) for topic, parts in render._parts.items())  # noqa: SLF001
        assert cached <= TEMPLATE_CACHE_BYTES
    # Short topics still come from the cache.
    render(Record("app", "INFO", 20, "", "m", STAMP))
    assert "app.INFO" in render._parts  # noqa: SLF001 - the cache is the point


def test_extension_strings_in_a_custom_format_are_escaped() -> None:
    """Found by test_fuzz: logger, path and extra fields reached the line raw (ESC, CR, DEL, U+2028)."""
    meta = {"logger": "\x1b[2J\rdb\x00", "path": "a\x7fb", "extra": {"user": "bob\u2028x\x85"}}
    record = Record("app", "INFO", 20, "", "m", STAMP, meta=meta)
    line = text_formatter("%(logger)s %(path)s %(user)s %(message)s")(record)
    assert line == "\\x1b[2J\\rdb\\x00 a\\x7fb bob\\u2028x\\x85 m\n"


def test_json_lines_write_del_c1_and_line_separators_as_escapes() -> None:
    """Found by test_fuzz: JSON may hold DEL, C1 and U+2028 raw; the line has them as \\u escapes."""
    meta = {"process": "\x7f", "logger": "a\u2028b\u2029c\x85\x9b"}
    line = json_formatter()(Record("app", "INFO", 20, "", "Gr\u00fc\u00dfe", STAMP, meta=meta))
    assert '"process": "\\u007f"' in line and '"logger": "a\\u2028b\\u2029c\\u0085\\u009b"' in line
    assert "Gr\u00fc\u00dfe" in line  # other non-ASCII stays as it is
    data = json.loads(line)
    assert (data["process"], data["logger"]) == ("\x7f", "a\u2028b\u2029c\x85\x9b")


_BASE: dict[str, Any] = {
    "time": "2026-12-02 10:00:00.000",
    "created": 1796205600.25,
    "levelno": 20,
    "func": None,
}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"message": "null and NaN in text", "ok": True, "n": -(2**63)},
        {"nan": math.nan},
        {"inf": math.inf, "message": "null"},
        {"minus_inf": -math.inf, "none": None},
        {"nested": {"x": [1, math.nan, {"y": math.inf}]}},
        {"list": [1, "two", None]},
        {"surrogate": "path/\udcff.log"},
        {"big": 2**70},
        {"separators": "a\u2028b\u2029c\x85d\x7fe"},
        {"controls": "line\nnext\ttab\x1b[31m"},
        {"unicode": "snowman \u2603 and \U0001f600"},
    ],
)
def test_compact_json_says_what_strict_json_says_on_one_line(extra: dict[str, Any]) -> None:
    data = {**_BASE, **extra}
    compact, strict = compact_json(data), strict_json(data)
    assert json.loads(compact) == json.loads(strict)
    assert "\n" not in compact and "\u2028" not in compact and "\x85" not in compact

    def no_constant(name: str) -> None:
        raise AssertionError(f"{name} is no JSON")

    json.loads(compact, parse_constant=no_constant)  # strict JSON: no bare NaN or Infinity


def test_compact_json_takes_what_is_not_json_as_strict_json_does() -> None:
    data: dict[Any, Any] = {**_BASE, 3: "an int key", "when": time.gmtime(0)}
    assert json.loads(compact_json(data)) == json.loads(strict_json(data))
