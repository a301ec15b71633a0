"""Counters and per-publisher loss accounting."""

from __future__ import annotations

from zlogcollect.stats import Stats


def test_sequence_gaps_count_as_loss_and_announced_drops_say_where() -> None:
    """Missing sequence numbers are the loss; drops the sender announces are part of them, not extra."""
    stats = Stats()
    assert stats.observe_sequence("p1", "h", 1, 0, 0) == 0
    assert stats.observe_sequence("p1", "h", 1, 1, 0) == 0
    assert stats.observe_sequence("p1", "h", 1, 5, 0) == 3
    assert stats.observe_sequence("p1", "h", 1, 8, 2) == 2
    assert stats.publishers["p1"].gaps == 5
    assert stats.publishers["p1"].announced == 2
    assert stats.lost_by_publishers == 5


def test_first_record_after_restart_counts_what_came_before() -> None:
    """A publisher first seen at seq N lost 0..N-1 (e.g. while the collector was down)."""
    stats = Stats()
    assert stats.observe_sequence("p", "h", 2, 10, 0) == 10


def test_sequence_going_back_is_a_restart_not_loss() -> None:
    """A lower sequence number means a new publisher life, not negative loss."""
    stats = Stats()
    stats.observe_sequence("p", "h", 1, 5, 0)
    assert stats.observe_sequence("p", "h", 1, 0, 0) == 0
    assert stats.publishers["p"].restarts == 1


def test_summary_is_one_line_with_the_main_counters() -> None:
    """The summary names received, written, malformed, drops and per-file counts."""
    stats = Stats(received=5, accepted=4)
    stats.malformed["no_level"] += 1
    stats.written["a.log"] += 4
    stats.dropped["disk_error"] += 2
    line = stats.summary()
    assert "\n" not in line
    for part in (
        "received=5",
        "written=4",
        "malformed=1",
        "dropped=disk_error:2",
        "files=a.log:4",
        "malformed_by=no_level:1",
    ):
        assert part in line
