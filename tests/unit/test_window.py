"""window.Window: the last N accepted records, numbered, read from a cursor through a filter."""

from __future__ import annotations

import json

import pytest

from zlogcollect.live import Filter
from zlogcollect.window import Window, parse_event_id, sources_in_names
from zlogcollect.wire import Record


def record(n: int, source: str = "app1", level: str = "INFO", levelno: int = 20, message: str = "") -> Record:
    return Record(source, level, levelno, "db", message or f"message {n}", 1_700_000_000.0 + n)


def fill(window: Window, count: int, start: int = 1, **kwargs: object) -> None:
    """*count* records through the receive loop's path: one add each, one commit per drain."""
    for n in range(start, start + count):
        window.add(record(n, **kwargs))  # type: ignore[arg-type]
    window.commit()


def numbers(window: Window, events: list[tuple[int, str]]) -> list[int]:
    for number, text in events:
        assert json.loads(text)["id"] == f"{window.run}-{number}"
    return [number for number, _ in events]


def test_records_are_numbered_in_the_accepted_stream_and_only_the_last_n_kept() -> None:
    window = Window(5, run="abc")
    assert (window.total, window.oldest, len(window)) == (0, 1, 0)
    fill(window, 3)
    assert (window.total, window.oldest, len(window)) == (3, 1, 3)
    fill(window, 4, start=4)
    assert (window.total, window.oldest, len(window)) == (7, 3, 5)
    data = window.view(7)
    assert data["id"] == "abc-7" and data["message"] == "message 7" and data["source"] == "app1"
    assert data["levelname"] == "INFO" and data["levelno"] == 20 and data["created"] == 1_700_000_007.0
    assert json.loads(window.text(7)) == data


def test_nothing_is_numbered_before_the_drain_commits() -> None:
    window = Window(5)
    window.add(record(1))
    assert window.total == 0 and window.read(0, Filter()).events == []
    assert window.commit() == 1 and window.commit() == 0
    assert numbers(window, window.read(0, Filter()).events) == [1]


def test_read_from_a_cursor_returns_what_came_after_it_and_moves_the_cursor() -> None:
    window = Window(100)
    fill(window, 10)
    found = window.read(4, Filter())
    assert numbers(window, found.events) == [5, 6, 7, 8, 9, 10]
    assert (found.cursor, found.missed) == (10, 0)
    assert window.read(found.cursor, Filter()).events == []
    assert window.read(10, Filter()).cursor == 10


def test_a_filter_picks_records_and_the_cursor_still_passes_the_others() -> None:
    window = Window(100)
    for n in range(1, 11):
        window.add(record(n, "app2", "ERROR", 40) if n % 3 == 0 else record(n))
    window.commit()
    found = window.read(0, Filter.parse(level="ERROR"))
    assert numbers(window, found.events) == [3, 6, 9] and found.cursor == 10
    assert numbers(window, window.read(0, Filter.parse(sources=["app2"], q="!message 6")).events) == [3, 9]
    assert numbers(window, window.read(0, Filter.parse(q="/message [12]$/")).events) == [1, 2]


def test_a_cursor_behind_the_window_jumps_to_the_oldest_and_counts_what_it_missed() -> None:
    window = Window(5)
    fill(window, 12)
    found = window.read(3, Filter())
    assert found.missed == 4  # 4, 5, 6, 7 fell out; 8 is the oldest kept
    assert numbers(window, found.events) == [8, 9, 10, 11, 12]
    assert window.read(7, Filter()).missed == 0  # the record right before the oldest: no gap


def test_read_stops_at_its_limit_and_the_next_read_continues_without_gap_or_repeat() -> None:
    window = Window(100)
    fill(window, 50)
    seen: list[int] = []
    cursor = 0
    for _ in range(10):
        found = window.read(cursor, Filter(), limit=7)
        assert len(found.events) <= 7
        seen += numbers(window, found.events)
        cursor = found.cursor
    assert seen == list(range(1, 51))


def test_a_narrow_filter_over_a_big_window_is_looked_through_in_steps() -> None:
    window = Window(1000)
    fill(window, 1000)
    found = window.read(0, Filter.parse(level="ERROR"), limit=10)
    assert found.events == [] and found.cursor == 40  # at most 4 x limit looked at
    cursor = found.cursor
    while cursor < window.total:
        cursor = window.read(cursor, Filter.parse(level="ERROR"), limit=10).cursor
    assert cursor == 1000


def test_a_cursor_from_the_future_or_below_zero_is_clamped() -> None:
    window = Window(10)
    fill(window, 3)
    assert window.read(99, Filter()).cursor == 3
    assert numbers(window, window.read(-5, Filter()).events) == [1, 2, 3]


def test_backlog_is_the_newest_matching_records_oldest_first() -> None:
    window = Window(100)
    for n in range(1, 21):
        window.add(record(n, "app2", "ERROR", 40) if n % 2 == 0 else record(n))
    window.commit()
    assert numbers(window, window.backlog(3, Filter())) == [18, 19, 20]
    assert numbers(window, window.backlog(3, Filter.parse(level="error"))) == [16, 18, 20]
    assert window.backlog(0, Filter()) == []
    assert len(window.backlog(500, Filter())) == 20


def test_the_text_kept_is_bounded_as_well_as_the_count() -> None:
    window = Window(1000, max_bytes=10_000)
    fill(window, 20, message="x" * 1000)
    assert len(window) < 20 and window.total == 20
    assert window.oldest == 20 - len(window) + 1
    fill(window, 1, start=21, message="y" * 50_000)  # larger than the whole budget: kept alone
    assert len(window) == 1 and window.view(21)["message"].startswith("y")


def test_sources_are_remembered_after_their_records_leave_the_window() -> None:
    window = Window(2)
    fill(window, 1, source="old")
    fill(window, 5, start=2, source="new")
    assert window.sources() == {"old", "new"}


def test_views_are_built_once_and_forgotten_with_their_record() -> None:
    window = Window(3)
    fill(window, 3)
    first = window.view(3)
    assert window.view(3) is first
    fill(window, 3, start=4)
    assert window.oldest == 4 and window.view(4)["id"].endswith("-4")
    with pytest.raises(ValueError, match="at least one"):
        Window(0)


def test_hostile_text_is_one_line_of_strict_json() -> None:
    window = Window(10)
    hostile = "<script>alert(1)</script>\u2028\x1b[2J\n\r" + "\U0001f600"
    window.add(Record("app1", "INFO", 20, "", hostile, 1.0, meta={"n": float("nan")}))
    window.commit()
    text = window.text(1)
    assert "\n" not in text and "\r" not in text and "\u2028" not in text
    data = json.loads(text)
    assert data["message"] == hostile and data["n"] == "NaN"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a1b2c3d4-17", ("a1b2c3d4", 17)),
        (" a1b2c3d4-0 ", ("a1b2c3d4", 0)),
        ("garbage", None),
        ("a1b2c3d4-", None),
        ("a1b2c3d4-1-2", None),
        ("zz-3", None),
        ("a1-" + "9" * 40, None),
        ("\x00\xff", None),
        ("", None),
    ],
)
def test_event_ids_parse_or_are_nothing(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_event_id(text) == expected


def test_sources_from_the_default_routes_file_names() -> None:
    names = [
        "app1.log",
        "app2.log.2026-12-01",
        "app3.log.2026-12-01_10.gz",
        "errors.log",
        "_malformed.log",
        "_overflow.log",
        "_stats.json",
        "_publishers.json",
        "notes.txt",
        "weird.name.log",
    ]
    assert sources_in_names(names, "errors.log") == {"app1", "app2", "app3", "weird.name"}
