"""The writer's window of message ids written and its journal lines (zlogcollect.seen), without a broker."""

from __future__ import annotations

import pytest

from zlogcollect.seen import MAX_ID, SeenWindow, journal_lines, journalable, parse_journal


def test_add_says_whether_an_id_is_new_and_the_oldest_goes_first() -> None:
    window = SeenWindow(3)
    assert [window.add(i) for i in ("a", "b", "a", "c")] == [True, True, False, True]
    assert window.add("d")  # "a" falls out
    assert list(window) == ["b", "c", "d"]
    assert "a" not in window and "b" in window
    assert window.add("a"), "an id that fell out of the window is new again"
    assert len(window) == 3


def test_a_window_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SeenWindow(0)


def test_load_keeps_the_newest_and_moves_a_repeated_id_to_the_end() -> None:
    window = SeenWindow(3)
    window.load(["a", "b", "c", "a", "d"])
    assert list(window) == ["c", "a", "d"]


def test_dump_and_parse_give_back_the_window_in_order() -> None:
    window = SeenWindow(10)
    for message_id in ("p1:1", "p1:2", "host/42/ab:7"):
        window.add(message_id)
    again = SeenWindow(10)
    again.load(parse_journal(window.dump()))
    assert list(again) == list(window)


def test_a_last_line_cut_short_by_a_kill_is_left_out() -> None:
    """A journal append interrupted by SIGKILL: the id without its newline is not trusted."""
    text = journal_lines(["p1:1", "p1:2"]) + "p1:3"
    assert parse_journal(text) == ["p1:1", "p1:2"]
    assert parse_journal("") == []
    assert parse_journal("\n\np1:4\n") == ["p1:4"]


@pytest.mark.parametrize(
    ("message_id", "ok"),
    [("p1:1", True), ("", False), ("a\nb", False), ("a\rb", False), ("x" * MAX_ID, True), ("x" * 256, False)],
)
def test_only_ids_that_fit_one_journal_line_are_journalled(message_id: str, ok: bool) -> None:
    assert journalable(message_id) is ok


def test_discard_forgets_an_id_so_its_redelivery_is_new_again() -> None:
    window = SeenWindow(3)
    window.add("a")
    window.add("b")
    window.discard("a")
    window.discard("never there")
    assert list(window) == ["b"] and window.add("a")
