"""`zlogcollect tail`'s pure part: patterns, lines like the files', colour by level; and the republished frames."""

from __future__ import annotations

import json

import pytest

from zlogcollect import formatting
from zlogcollect.display import RESET, View, ViewError, colored
from zlogcollect.republish import Reframer
from zlogcollect.wire import Levels, Parser, Record, encode_extension

NOW = 1_764_669_606.25


def parse(frames: list[bytes] | tuple[bytes, ...], levels: Levels | None = None) -> Record:
    return Parser(levels or Levels()).parse(frames, NOW)


@pytest.mark.parametrize(
    ("patterns", "topic", "shown"),
    [
        ((), "app1.INFO", True),
        (("*.ERROR.#",), "app1.ERROR.db.query", True),
        (("*.ERROR.#",), "app1.WARNING.db", False),
        (("*.ERROR.#", "app3.#"), "app3.DEBUG", True),
        (("app3.#",), "app3x.INFO", False),
        (("app3.#",), "shop.app3.INFO", False),
        (("#.CRITICAL",), "shop.web.CRITICAL", True),
    ],
)
def test_patterns_select_by_topic_like_routes(patterns: tuple[str, ...], topic: str, shown: bool) -> None:
    view = View(patterns)
    assert view.selects(topic) is shown
    assert view.selects(topic) is shown  # from the cache


@pytest.mark.parametrize("pattern", ["", "app..x", ".app", "app.", "a*.b", "app.#x"])
def test_a_pattern_with_an_empty_or_mixed_word_is_refused_in_one_line(pattern: str) -> None:
    with pytest.raises(ViewError) as caught:
        View(("ok.#", pattern))
    assert repr(pattern) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_format_and_level_are_refused() -> None:
    with pytest.raises(ViewError, match="format:"):
        View(fmt="%(message")
    with pytest.raises(ViewError, match="level:"):
        View(custom_levels={"A.B": 5})


def test_lines_are_the_files_lines() -> None:
    record = parse(
        [b"app1.ERROR.db", b"timeout\n", encode_extension({"created": NOW, "host": "h", "pid": 7})]
    )
    assert View().line(record) == formatting.text_formatter()(record)
    assert View(utc=True).line(record) == formatting.text_formatter(utc=True)(record)
    assert View(json=True).line(record) == formatting.json_formatter()(record)
    assert View(fmt="%(levelname)s %(message)s").line(record) == "ERROR timeout\n"


@pytest.mark.parametrize(
    ("levelno", "code"),
    [(50, "\x1b[1;31m"), (40, "\x1b[31m"), (35, "\x1b[33m"), (30, "\x1b[33m"), (10, "\x1b[2m")],
)
def test_colour_by_level_reset_on_every_line(levelno: int, code: str) -> None:
    assert colored("a\nb", levelno) == f"{code}a{RESET}\n{code}b{RESET}"


def test_info_is_not_coloured_and_a_coloured_line_keeps_one_newline() -> None:
    assert colored("plain", 20) == "plain"
    record = parse([b"a.ERROR", b"boom"])
    assert View(fmt="%(message)s", color=True).line(record) == f"\x1b[31mboom{RESET}\n"


def test_a_record_with_the_extension_is_republished_as_received() -> None:
    frames = [b"app1.ERROR.db", b"timeout", encode_extension({"created": NOW - 5, "pub": "ab", "seq": 3})]
    assert Reframer()(frames, parse(frames)) is frames


@pytest.mark.parametrize(
    ("topic", "body", "text"),
    [
        (b"app1.WARN.db", b"WARNING slow query\n", "slow query"),  # stock prefix removed, WARN canonical
        (b"app1.ERROR", b"ERROR failed - None\n", "failed"),
        (b"INFO", b"no root\n", "no root"),
        (b"app1.INFO", b"two newlines\n\n", "two newlines\n"),
        (b"app1.INFO", b"bell \x07 here", "bell \\x07 here"),
    ],
)
def test_a_stock_record_is_republished_with_the_cleaned_text_and_the_receive_time(
    topic: bytes, body: bytes, text: str
) -> None:
    record = parse([topic, body])
    frames = Reframer()([topic, body], record)
    assert len(frames) == 3
    assert json.loads(frames[2]) == {"v": 1, "created": NOW + 0.0005}  # to the ms, its middle
    again = Parser().parse(frames, NOW + 60)  # what tail parses, later
    assert again.message == text == record.message
    assert (again.topic, again.levelno) == (record.topic, record.levelno)
    assert View().line(again) == View().line(record)


def test_a_custom_level_names_itself_so_tail_needs_no_level_option() -> None:
    record = parse([b"app1.TRACE.x", b"deep"], Levels({"TRACE": 5}))
    frames = Reframer()([b"app1.TRACE.x", b"deep"], record)
    again = Parser().parse(frames, NOW)
    assert (again.levelname, again.levelno, again.message) == ("TRACE", 5, "deep")


@pytest.mark.parametrize(
    "received", [NOW, 1_764_669_606.0, 1_764_669_606.9999, 1_764_669_606.0009, 1e9 + 0.1239999]
)
def test_the_collectors_receive_time_shows_as_the_same_millisecond_as_in_the_file(received: float) -> None:
    reframe = Reframer()
    record = Parser().parse([b"a.INFO", b"text"], received)
    frames = reframe([b"a.INFO", b"text"], record)
    again = Parser().parse(frames, received + 3)
    assert formatting.format_time(again.time) == formatting.format_time(received)
    assert reframe([b"a.INFO", b"other"], record)[2] is frames[2]  # built once per millisecond
