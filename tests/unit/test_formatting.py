"""Record to line: the default text format, custom formats, JSON lines."""

from __future__ import annotations

import json
import time

import pytest

from zlogcollect.formatting import DEFAULT_FORMAT, FormatError, format_time, json_formatter, text_formatter
from zlogcollect.wire import Record

STAMP = time.mktime((2026, 11, 25, 15, 9, 31, 0, 0, -1)) + 0.1234


def test_default_line() -> None:
    """The default line is time | level | source | subtopic | message, with '-' for what is empty."""
    render = text_formatter()
    line = render(Record("app1", "ERROR", 40, "db.query", "timeout", STAMP))
    assert line == "2026-11-25 15:09:31.123 | ERROR | app1 | db.query | timeout\n"
    assert render(Record("", "INFO", 20, "", "x", STAMP)) == "2026-11-25 15:09:31.123 | INFO | - | - | x\n"
    assert DEFAULT_FORMAT.count("|") == 4


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
    render = text_formatter("%(message)s")
    tb = "Traceback (most recent call last):\nValueError: x"
    assert render(Record("a", "ERROR", 40, "", "boom", 0.0, meta={"exc": tb})) == f"boom\n{tb}\n"
    assert render(Record("a", "ERROR", 40, "", f"boom\n{tb}", 0.0, meta={"exc": tb})) == f"boom\n{tb}\n"


@pytest.mark.parametrize(
    ("fmt", "needle"), [("%(nope)s", "nope"), ("%(message)", "valid"), ("%(levelno)d %", "valid")]
)
def test_bad_formats_fail_early(fmt: str, needle: str) -> None:
    """Unknown fields and broken %-formats are reported when the formatter is made, not per record."""
    with pytest.raises(FormatError, match=needle):
        text_formatter(fmt)


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

    fmt = "%(asctime)s %(levelname)-8s|%(levelno)03d|%(source)s|%(subtopic)s|%(topic)s|%(message)s|%(created).1f|100%%"
    render = text_formatter(fmt)
    records = [
        Record("50%off", "WARNING", 30, "d%sb", "m%(x)s %", STAMP),
        Record("50%off", "WARNING", 30, "d%sb", "second", STAMP + 1.5),
        Record("", "Level 7", 7, "", "", STAMP),
        Record("a.b", "INFO", 20, "x", "hi", STAMP, created=STAMP - 3600),
    ]
    for record in records * 2:  # the second round comes from the cache
        assert render(record) == fmt % record_fields(record) + "\n"


def test_time_formatter_caches_per_second_but_stays_exact() -> None:
    """Cached asctime agrees with format_time across second boundaries and out-of-order stamps."""
    from zlogcollect.formatting import TimeFormatter

    cached = TimeFormatter()
    for stamp in (STAMP, STAMP + 0.5, STAMP + 1.001, STAMP - 5.25, STAMP + 86400.999):
        assert cached(stamp) == format_time(stamp)
