"""history: the collector's own files read back into records, searched and opened in context."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from zlogcollect import history
from zlogcollect.formatting import DEFAULT_PEER_FORMAT, json_formatter, strict_json, text_formatter
from zlogcollect.history import History, HistoryError, LineFormat, NotFound, Query, parse_line, parse_when
from zlogcollect.live import Filter
from zlogcollect.wire import DEFAULT_LEVELS, Record

DAY = 86_400.0
NOW = 1_800_000_000.0  # 2027-01-15, UTC
UTC = LineFormat(utc=True)


def record(
    source: str,
    level: str,
    message: str,
    created: float,
    subtopic: str = "db",
    meta: dict[str, Any] | None = None,
    peer: str | None = None,
) -> Record:
    found = DEFAULT_LEVELS.lookup(level)
    assert found is not None
    made = Record(source, found[0], found[1], subtopic, message, created, created, meta)
    made.peer = peer
    return made


def text(*records: Record, fmt: str | None = None, multiline: str = "prefix") -> str:
    render = text_formatter(fmt, True, multiline) if fmt else text_formatter(utc=True, multiline=multiline)
    return "".join(render(one) for one in records)


def search(root: Path, fmt: LineFormat = UTC, **params: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    found = History(str(root), fmt)
    query = found.query({name: [value] for name, value in params.items()})
    out = list(found.search(query))
    return out[:-1], out[-1]


def context(root: Path, rel: str, line: int, before: int = 2, after: int = 2) -> list[dict[str, Any]]:
    out = list(History(str(root), UTC).context(rel, line, before, after))
    assert out[-1]["done"] is True
    return out[:-1]


def messages(records: Iterable[dict[str, Any]]) -> list[str]:
    return [one["message"] for one in records]


# --- one line ---------------------------------------------------------------------------------


def test_a_default_line_reads_back_as_the_json_lines_record() -> None:
    line = text(
        record("app2", "ERROR", "timeout | after 30 s", NOW + 0.25, meta={"host": "web01", "pid": 4242})
    )
    kind, got = parse_line(line.rstrip("\n"), UTC)
    assert kind == history.HEAD
    assert got == {
        "time": "2027-01-15 08:00:00.250",
        "created": NOW + 0.25,
        "received": None,
        "source": "app2",
        "levelname": "ERROR",
        "levelno": 40,
        "subtopic": "db",
        "topic": "app2.ERROR.db",
        "message": "timeout | after 30 s",
        "host": "web01",
        "pid": 4242,
    }
    expected = json.loads(json_formatter(True)(record("app2", "ERROR", "x", NOW)))
    assert set(got) - {"host", "pid"} <= set(expected)


def test_missing_columns_read_back_as_empty_and_absent() -> None:
    _, got = parse_line(text(record("", "INFO", "m", NOW, subtopic="")).rstrip("\n"), UTC)
    assert (got["source"], got["subtopic"], got["topic"]) == ("", "", "INFO")
    assert "host" not in got and "pid" not in got and "peer" not in got
    _, half = parse_line(text(record("a", "INFO", "m", NOW, meta={"pid": 7})).rstrip("\n"), UTC)
    assert half["pid"] == 7 and "host" not in half


def test_curves_seven_columns_name_the_peer() -> None:
    line = text(
        record("app1", "WARNING", "disk 91%", NOW, meta={"host": "h", "pid": 1}, peer="app1"),
        fmt=DEFAULT_PEER_FORMAT,
    )
    _, got = parse_line(line.rstrip("\n"), LineFormat(utc=True, peer=True))
    assert (got["peer"], got["host"], got["pid"], got["subtopic"], got["message"]) == (
        "app1",
        "h",
        1,
        "db",
        "disk 91%",
    )
    # Read by a collector that has CURVE off now: the seven columns are still recognised.
    _, again = parse_line(line.rstrip("\n"), UTC)
    assert again["peer"] == "app1" and again["message"] == "disk 91%"


def test_a_json_line_is_the_record_itself() -> None:
    line = json_formatter(True)(record("app2", "ERROR", "boom", NOW, meta={"host": "h", "exc": "Traceback"}))
    kind, got = parse_line(line.rstrip("\n"), UTC)
    assert kind == history.HEAD and got == json.loads(line)


def test_a_line_in_no_known_shape_is_kept_raw() -> None:
    for line in (
        "INFO app1: hello",
        "2027-01-15 08:00:00.000 | NOLEVEL | a | - | - | m",
        '{"no": "message"}',
        "{not json",
    ):
        assert parse_line(line, UTC) == (history.RAW, line)
    assert parse_line("x", LineFormat(plain_continuations=True)) == (history.CONT, "x")


# --- files: multi-line records, gz, rotated names ---------------------------------------------


def test_continuation_lines_are_joined_into_one_record_with_its_first_line(tmp_path: Path) -> None:
    trace = "failed\nTraceback (most recent call last):\n  File \"x\", line 1\nKeyError: 'k'"
    (tmp_path / "app2.log").write_text(
        text(
            record("app2", "INFO", "before", NOW),
            record("app2", "ERROR", trace, NOW + 1),
            record("app2", "INFO", "after", NOW + 2),
        )
    )
    found, done = search(tmp_path)
    assert messages(found) == ["before", trace, "after"]
    assert [one["line"] for one in found] == [1, 2, 6]
    assert all(one["file"] == "app2.log" for one in found)
    assert done == {"done": True, "count": 3, "truncated": False, "reason": None}
    around = context(tmp_path, "app2.log", 4, before=1, after=1)
    assert messages(around) == ["before", trace, "after"]


def test_plain_multiline_continuations_are_joined_too(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text(
        text(
            record("a", "ERROR", "one\ntwo\nthree", NOW),
            record("a", "INFO", "next", NOW + 1),
            multiline="plain",
        )
    )
    found = list(History(str(tmp_path), LineFormat(utc=True, plain_continuations=True)).search(Query()))
    assert messages(found[:-1]) == ["one\ntwo\nthree", "next"]


def test_gz_and_rotated_names_for_each_when(tmp_path: Path) -> None:
    stamps = {
        "midnight": "2027-01-12",
        "H": "2027-01-13_07",
        "M": "2027-01-14_07-59",
        "S": "2027-01-14_08-00-00",
    }
    for days, (when, stamp) in enumerate(stamps.items()):
        data = text(record("app2", "ERROR", f"from {when}", NOW - (3 - days) * DAY))
        name = tmp_path / f"app2.log.{stamp}"
        if when in ("H", "S"):
            with gzip.open(f"{name}.gz", "wt") as out:
                out.write(data)
        else:
            name.write_text(data)
        os.utime(f"{name}.gz" if when in ("H", "S") else name, (NOW - (3 - days) * DAY,) * 2)
    (tmp_path / "app2.log").write_text(text(record("app2", "ERROR", "today", NOW + 1)))
    os.utime(tmp_path / "app2.log", (NOW + 1,) * 2)
    (tmp_path / "app2.log.notastamp").write_text(text(record("app2", "ERROR", "no", NOW)))
    found, _ = search(tmp_path, q="from")
    assert messages(found) == ["from midnight", "from H", "from M", "from S"]
    assert found[1]["file"] == "app2.log.2027-01-13_07.gz" and found[1]["line"] == 1
    assert messages(search(tmp_path, since=str(NOW - 1.5 * DAY))[0]) == ["from M", "from S", "today"]
    assert messages(search(tmp_path, until="2027-01-13T23:00Z")[0]) == ["from midnight", "from H"]
    assert messages(context(tmp_path, "app2.log.2027-01-13_07.gz", 1)) == ["from H"]


def test_a_backup_being_compressed_is_read_once(tmp_path: Path) -> None:
    data = text(record("a", "INFO", "once", NOW))
    (tmp_path / "a.log.2027-01-14").write_text(data)
    with gzip.open(tmp_path / "a.log.2027-01-14.gz", "wt") as out:
        out.write(data)
    assert messages(search(tmp_path)[0]) == ["once"]


def test_records_in_two_files_are_returned_once_from_the_source_file(tmp_path: Path) -> None:
    error = record("app2", "ERROR", "boom", NOW)
    (tmp_path / "app2.log").write_text(text(record("app2", "INFO", "ok", NOW - 1), error))
    (tmp_path / "errors.log").write_text(text(error))
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "app2-ERROR.log").write_text(text(error))
    found, _ = search(tmp_path)
    assert [(one["file"], one["message"]) for one in found] == [("app2.log", "ok"), ("app2.log", "boom")]
    # Only a route's copy left: found there, in the subdirectory.
    (tmp_path / "app2.log").unlink()
    (tmp_path / "errors.log").unlink()
    assert [one["file"] for one in search(tmp_path)[0]] == ["db/app2-ERROR.log"]


def test_the_collectors_own_files_and_malformed_are_not_searched(tmp_path: Path) -> None:
    (tmp_path / "_stats.json").write_text('{"message": "x"}\n')
    (tmp_path / "_publishers.json").write_text('{"message": "x"}\n')
    (tmp_path / "_malformed.log").write_text("2027-01-15 08:00:00.000 | bad_frames | x | x\n")
    (tmp_path / "_overflow.log").write_text(text(record("app9", "INFO", "overflowed", NOW)))
    assert messages(search(tmp_path)[0]) == ["overflowed"]


# --- filters, time ranges, limits, the deadline -----------------------------------------------


def write_two_sources(root: Path, count: int) -> None:
    for source in ("app1", "app2"):
        (root / f"{source}.log").write_text(
            text(
                *(
                    record(source, "ERROR" if i % 10 == 0 else "INFO", f"{source} {i}", NOW + i)
                    for i in range(count)
                )
            )
        )
        os.utime(root / f"{source}.log", (NOW + count,) * 2)  # written as the records came


def test_filters_are_lives_and_the_newest_limit_come_oldest_first(tmp_path: Path) -> None:
    write_two_sources(tmp_path, 100)
    found, done = search(tmp_path, source="app2", level="error")
    assert messages(found) == [f"app2 {i}" for i in range(0, 100, 10)] and not done["truncated"]
    found, done = search(tmp_path, q="/app1 9\\d$/", limit="3")
    assert messages(found) == ["app1 97", "app1 98", "app1 99"]
    assert done == {"done": True, "count": 3, "truncated": True, "reason": "limit"}
    found, _ = search(tmp_path, limit="4")
    assert messages(found) == ["app1 98", "app2 98", "app1 99", "app2 99"]
    found, _ = search(tmp_path, q="!app1", since=str(NOW + 95), until=str(NOW + 96))
    assert messages(found) == ["app2 95", "app2 96"]


def test_the_deadline_ends_a_search_with_what_it_found(tmp_path: Path) -> None:
    write_two_sources(tmp_path, 5000)
    ticks = iter(range(10**9))
    pauses: list[int] = []
    slow = History(str(tmp_path), UTC, deadline=3, clock=lambda: float(next(ticks)))
    out = list(slow.search(Query(limit=10_000), lambda: pauses.append(1)))
    assert out[-1]["truncated"] is True and out[-1]["reason"] == "deadline"
    assert out[-1]["count"] == len(out) - 1 and pauses


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "not a time"),
        ({"since": "nan"}, "not a time"),
        ({"since": "2027-01-02", "until": "2027-01-01"}, "since is after until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "-5"}, "limit"),
    ],
)
def test_bad_parameters_are_one_line_errors(params: dict[str, str], message: str) -> None:
    with pytest.raises(HistoryError, match=message) as caught:
        History("/nonexistent").query(parse_qs("&".join(f"{k}={v}" for k, v in params.items())))
    assert "\n" not in str(caught.value)


def test_since_and_until_take_epoch_and_iso_8601() -> None:
    assert parse_when("1800000000") == NOW
    assert parse_when("2027-01-15T08:00Z") == NOW
    assert parse_when("2027-01-15T08:00", utc=True) == NOW
    assert parse_when("2027-01-15", utc=True) == NOW - 8 * 3600


# --- hostile files ----------------------------------------------------------------------------


def test_garbage_huge_lines_and_invalid_utf8_never_raise(tmp_path: Path) -> None:
    good = text(record("app2", "ERROR", "still found", NOW))
    huge = b"2027-01-15 08:00:00.000 | INFO | app2 | - | - | " + b"x" * (3 * history.MAX_LINE_BYTES) + b"\n"
    garbage = bytes(range(256)) * 50 + b"\n\xff\xfe\x00 | \x1b[31m\n"
    (tmp_path / "app2.log").write_bytes(
        garbage + huge + good.encode() + b"\xc3\x28 invalid utf-8\n" + b"partial, no newline"
    )
    os.utime(tmp_path / "app2.log", (NOW + 1,) * 2)
    found, done = search(tmp_path)
    assert found[-1]["message"] == "\ufffd( invalid utf-8" and found[-1]["time"] is None
    assert found[-2]["message"] == "still found" and found[-2]["line"] == 54
    assert found[-3]["message"].endswith(history.CUT) and len(found[-3]["message"]) < history.MAX_LINE_BYTES
    assert not any("partial" in one["message"] for one in found)
    assert done["count"] == len(found)
    for one in found:  # every record encodes as strict JSON
        assert json.loads(strict_json(one)) is not None
    # The same in context, from a line in the middle.
    assert "still found" in messages(context(tmp_path, "app2.log", 53, before=1, after=2))


def test_a_damaged_gz_gives_what_it_held(tmp_path: Path) -> None:
    data = gzip.compress(text(*(record("a", "INFO", f"m{i}", NOW + i) for i in range(2000))).encode())
    (tmp_path / "a.log.2027-01-14.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "b.log.2027-01-14.gz").write_bytes(b"not gzip at all")
    found, done = search(tmp_path, limit="10000")
    assert 0 < len(found) < 2000 and done["count"] == len(found)


def test_context_refuses_paths_outside_and_links(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app2.log").write_text(text(record("app2", "INFO", "ok", NOW)))
    (tmp_path / "secret.log").write_text("secret\n")
    (logs / "out.log").symlink_to(tmp_path / "secret.log")
    (logs / "in.log").symlink_to(logs / "app2.log")
    (logs / "sub").symlink_to(tmp_path)
    (logs / "_publishers.json").write_text("{}\n")
    found = History(str(logs), UTC)
    for rel in (
        "../secret.log",
        str(tmp_path / "secret.log"),
        "out.log",
        "in.log",
        "sub/secret.log",
        "./app2.log",
        "_publishers.json",
        "missing.log",
        "",
        "a/../app2.log",
        "app2.log\x00",
    ):
        with pytest.raises(NotFound):
            found.context(rel, 1, 1, 1)
    assert messages(context(logs, "app2.log", 1)) == ["ok"]
    # A search never follows the links either.
    assert messages(search(logs)[0]) == ["ok"]


def test_context_counts_records_not_lines(tmp_path: Path) -> None:
    records = [record("a", "INFO", f"m{i}" + ("\nmore" if i % 2 else ""), NOW + i) for i in range(100)]
    (tmp_path / "a.log").write_text(text(*records))
    # m50 is on line 76 (50 one-line records + 25 two-line ones before it).
    around = context(tmp_path, "a.log", 76, before=3, after=2)
    assert messages(around) == ["m47\nmore", "m48", "m49\nmore", "m50", "m51\nmore", "m52"]
    assert around[3]["line"] == 76
    # A line inside a record gives that record.
    assert messages(context(tmp_path, "a.log", 75, before=0, after=0)) == ["m49\nmore"]
    assert context(tmp_path, "a.log", 10**6) == []


def test_a_file_being_written_is_read_up_to_its_last_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text(text(record("a", "INFO", "done", NOW)))
    with path.open("a") as out:
        out.write("2027-01-15 08:00:01.000 | INFO | a | - | db | half writ")
        out.flush()
        assert messages(search(tmp_path)[0]) == ["done"]
        assert messages(context(tmp_path, "a.log", 1)) == ["done"]
        out.write("ten\n")
    assert messages(search(tmp_path)[0]) == ["done", "half written"]


def test_the_filter_is_lives_filter(tmp_path: Path) -> None:
    write_two_sources(tmp_path, 3)
    assert Filter.from_query({"q": ["!app1"]}).matches(search(tmp_path, q="!app1")[0][0])


def test_line_numbers_stay_right_as_a_file_grows_or_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text(text(*(record("a", "INFO", f"m{i}", NOW + i) for i in range(3))))
    found = History(str(tmp_path), UTC)
    assert [one["line"] for one in list(found.search(Query()))[:-1]] == [1, 2, 3]
    with path.open("a") as out:  # appended: only the new part is counted
        out.write(text(record("a", "INFO", "m3", NOW + 3)))
    assert [one["line"] for one in list(found.search(Query()))[:-1]] == [1, 2, 3, 4]
    replaced = tmp_path / "new"
    replaced.write_text(text(*(record("b", "INFO", f"n{i}", NOW + i) for i in range(6))))
    replaced.replace(path)
    assert [one["line"] for one in list(found.search(Query()))[:-1]] == [1, 2, 3, 4, 5, 6]


def test_a_substring_in_any_line_of_a_multiline_record_finds_the_whole_record(tmp_path: Path) -> None:
    trace = "failed\nTraceback (most recent call last):\nKeyError: 'k'"
    (tmp_path / "a.log").write_text(
        text(
            record("a", "INFO", "before", NOW),
            record("a", "ERROR", trace, NOW + 1),
            record("a", "INFO", "x", NOW + 2),
        )
    )
    os.utime(tmp_path / "a.log", (NOW + 3,) * 2)
    for q in ("keyerror", "failed", "most recent", "!before"):
        found, _ = search(tmp_path, q=q, level="ERROR")
        assert messages(found) == [trace], q
    assert messages(search(tmp_path, q="/^a/")[0]) == ["before", trace, "x"]  # a regex: every record read


def test_skipping_lines_without_the_substring_finds_what_reading_every_line_finds(tmp_path: Path) -> None:
    """A substring search passes over chunks that lack it; a regular expression reads every line:
    both find the same records, tracebacks spanning chunk boundaries included."""
    records = []
    for i in range(3000):
        message = f"line {i}"
        if i % 97 == 0:
            message += "".join(f"\n  frame {i}.{k} " + "x" * 40 for k in range(30)) + f"\nNeedle{i}Error"
        records.append(record("a", "ERROR" if i % 7 == 0 else "INFO", message, NOW + i / 100))
    (tmp_path / "a.log").write_text(text(*records))
    os.utime(tmp_path / "a.log", (NOW + 100,) * 2)
    (tmp_path / "sub").mkdir()  # the same records as --json lines (a route's copy: found once, in a.log)
    render = json_formatter(True)
    (tmp_path / "sub" / "j.log").write_text("".join(render(one) for one in records[::-1]))
    with gzip.open(tmp_path / "sub" / "g.log.2027-01-14.gz", "wt") as out:  # read forwards, in blocks
        out.write(text(*(record("g", one.levelname, one.message, one.received - DAY) for one in records)))
    os.utime(tmp_path / "sub" / "g.log.2027-01-14.gz", (NOW - DAY + 100,) * 2)
    assert (tmp_path / "a.log").stat().st_size > 3 * history.CHUNK
    fast = History(str(tmp_path), UTC)
    slow = History(str(tmp_path), UTC)
    slow.skipping = False
    queries = [
        {"q": [q]} for q in ("needle", "needle1164error", "frame 2231.29", "line 4", "line 5999", "nothing")
    ]
    queries += [{"level": ["ERROR"]}, {"level": ["CRITICAL"]}, {"source": ["a"]}, {"source": ["g"]}]
    queries += [
        {"level": ["ERROR"], "q": ["needle"]},
        {"level": ["error"], "q": ["line 1"], "source": ["a,b"]},
    ]
    for params in queries:
        params["limit"] = ["10000"]
        skipped = list(fast.search(fast.query(params)))
        every = list(slow.search(slow.query(params)))
        assert skipped == every, params
        assert skipped[-1]["reason"] is None
    needles = search(tmp_path, q="needle", limit="10000")[0]
    assert len(needles) == 2 * len(range(0, 3000, 97))  # a.log and the .gz


def test_an_unfiltered_search_of_a_gz_reads_only_its_last_lines_as_records(tmp_path: Path) -> None:
    records = [record("a", "INFO", f"m{i}" + ("\nmore" if i % 3 == 0 else ""), NOW + i) for i in range(3000)]
    with gzip.open(tmp_path / "a.log.2027-01-14.gz", "wt") as out:
        out.write(text(*records))
    fast = History(str(tmp_path), UTC)
    slow = History(str(tmp_path), UTC)
    slow.skipping = False
    for limit in ("1", "5", "10000"):
        got = list(fast.search(fast.query({"limit": [limit]})))
        assert got == list(slow.search(slow.query({"limit": [limit]}))), limit
    assert [(one["message"], one["line"]) for one in got[-3:-1]] == [("m2998", 3999), ("m2999", 4000)]


def test_huge_records_and_answers_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Continuation lines join one record up to MAX_RECORD_CHARS; an answer's messages are capped too."""
    line = "y" * (history.MAX_LINE_BYTES - 100)
    huge = record("a", "ERROR", "head\n" + "\n".join([line] * 12), NOW)
    (tmp_path / "a.log").write_text(text(huge, record("a", "INFO", "small", NOW + 1)))
    os.utime(tmp_path / "a.log", (NOW + 2,) * 2)
    for found in (search(tmp_path, limit="10000")[0], context(tmp_path, "a.log", 1, before=0, after=20)):
        assert all(len(one["message"]) <= history.MAX_RECORD_CHARS + history.MAX_LINE_BYTES for one in found)
        assert found[0]["message"].startswith("head\n") and found[-1]["message"] == "small"
        assert sum(len(one["message"]) for one in found) >= 12 * len(line)  # nothing lost, only split
    monkeypatch.setattr(history, "MAX_ANSWER_CHARS", 3 * history.MAX_LINE_BYTES)
    found, done = search(tmp_path, limit="10000")
    assert sum(len(one["message"]) for one in found) <= 3 * history.MAX_LINE_BYTES
    assert found[-1]["message"] == "small" and done["truncated"] and done["reason"] == "limit"
