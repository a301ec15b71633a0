"""Counters and per-publisher loss accounting."""

from __future__ import annotations

import json

import pytest

from zlogcollect.seqtrack import Outcome
from zlogcollect.stats import MAX_PUBLISHERS, Stats, render_summary


def test_sequence_gaps_count_as_loss_and_announced_drops_say_where() -> None:
    """Missing sequence numbers are the loss; drops the sender announces are part of them, not extra."""
    stats = Stats()
    assert stats.observe_sequence("p1", "h", 1, 0, 0) == (Outcome.NEW, 0)
    assert stats.observe_sequence("p1", "h", 1, 1, 0) == (Outcome.NEW, 0)
    assert stats.observe_sequence("p1", "h", 1, 5, 0) == (Outcome.NEW, 3)
    assert stats.observe_sequence("p1", "h", 1, 8, 2) == (Outcome.NEW, 2)
    assert stats.publishers["p1"].gaps == 5
    assert stats.publishers["p1"].announced == 2
    assert stats.lost_by_publishers == 5


def test_a_first_record_counts_only_announced_drops_as_lost() -> None:
    """A publisher first seen at seq N lost what it announced dropping; the rest predate this collector."""
    stats = Stats()
    assert stats.observe_sequence("p", "h", 2, 10, 0) == (Outcome.NEW, 0)
    assert stats.publishers["p"].unseen == 10
    assert stats.observe_sequence("q", "h", 3, 10, 10) == (Outcome.NEW, 10)  # e.g. the hold buffer overflowed
    assert stats.publishers["q"].unseen == 0
    assert "unseen_before_start=10" in stats.summary()


def test_state_carries_sequence_numbers_across_a_restart() -> None:
    """Restored from a previous run's state, the gap a restarted collector sees is the real loss."""
    before = Stats()
    before.observe_sequence("p", "h", 2, 0, 0, now=100.0)
    before.observe_sequence("p", "h", 2, 499, 0, now=100.0)
    after = Stats()
    assert after.restore_publishers(before.publisher_state(), now=200.0) == 1
    assert after.observe_sequence("p", "h", 2, 507, 0, now=200.0) == (Outcome.NEW, 7)
    assert after.lost_by_publishers == 7
    stale = Stats()
    assert stale.restore_publishers(before.publisher_state(), now=100.0 + 8 * 86400) == 0


def test_a_gap_an_earlier_run_counted_is_recovered_without_taking_this_runs_lost_below_zero() -> None:
    """Filling a gap restored from --dir is `recovered`; `lost` is this run's, and it never goes negative."""
    before = Stats()
    before.observe_sequence("p", "h", 2, 0, 0, now=100.0)
    before.observe_sequence("p", "h", 2, 10, 0, now=100.0)  # 1..9 lost in the earlier run
    assert before.lost_by_publishers == 9
    after = Stats()
    assert after.restore_publishers(before.publisher_state(), now=200.0) == 1
    assert after.observe_sequence("p", "h", 2, 14, 0, now=200.0) == (Outcome.NEW, 3)  # 11..13 lost here
    for seq in [*range(1, 10), *range(11, 14)]:  # a replay brings both gaps back
        assert after.observe_sequence("p", "h", 2, seq, 0, now=200.0)[0] is Outcome.FILLED
    assert after.recovered == 12
    assert after.lost_by_publishers == 0


def test_publishers_are_bounded() -> None:
    """Past MAX_PUBLISHERS the longest-silent are forgotten, and their losses stay counted."""
    from zlogcollect import stats as stats_module

    stats = Stats()
    stats.observe_sequence("old", "h", 1, 0, 0, now=1.0)
    stats.observe_sequence("old", "h", 1, 5, 0, now=1.0)
    for i in range(stats_module.MAX_PUBLISHERS):
        stats.observe_sequence(f"p{i}", "h", i, 0, 0, now=2.0 + i)
    assert len(stats.publishers) <= stats_module.MAX_PUBLISHERS
    assert "old" not in stats.publishers
    assert stats.lost_by_publishers == 4


def test_sequence_going_back_from_another_pid_is_a_restart_not_loss() -> None:
    """A lower sequence number from another process means a new publisher life, not negative loss;
    from the same process, a duplicate (a replay)."""
    stats = Stats()
    stats.observe_sequence("p", "h", 1, 5, 0)
    assert stats.observe_sequence("p", "h", 1, 5, 0) == (Outcome.DUPLICATE, 0)
    assert stats.observe_sequence("p", "h", 2, 0, 0) == (Outcome.NEW, 0)
    assert stats.publishers["p"].restarts == 1
    assert stats.replayed_duplicates == 1


def test_summary_is_one_line_with_the_main_counters() -> None:
    """The summary names received, written, malformed, drops and per-file counts."""
    stats = Stats(received=5)
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


def test_forgetting_publishers_with_unreported_loss_keeps_the_totals() -> None:
    """More than MAX_PUBLISHERS publishers: the oldest are forgotten, their loss stays counted."""
    stats = Stats()
    for n in range(MAX_PUBLISHERS + 1):
        stats.observe_sequence(f"p{n}", "h", n, 1, 1, now=float(n))
    assert len(stats.publishers) <= MAX_PUBLISHERS
    assert stats.lost_by_publishers == MAX_PUBLISHERS + 1


def test_summary_cannot_raise() -> None:
    """Even absurd counters give a counters line (int->str has a digit limit)."""
    stats = Stats()
    stats.observe_sequence("p", "h", 1, 0, 0)
    stats.observe_sequence("p", "h", 1, 10**5000, 0)
    assert stats.summary().startswith("received=0")


@pytest.mark.parametrize(
    "state",
    [None, [], "text", 5, {"p": None}, {"p": {"seq": "1", "seen": 1.0}}, {"p": {"seq": 2**70, "seen": 1.0}}],
)
def test_state_of_the_wrong_shape_is_ignored(state: object) -> None:
    """A _publishers.json of the wrong shape is refused with ValueError or skipped entry by entry."""
    stats = Stats()
    try:
        assert stats.restore_publishers(state, now=2.0) == 0
    except ValueError:
        assert not isinstance(state, dict)
    assert not stats.publishers


def test_written_counter_counts_changes() -> None:
    """The collector saves state after a write batch by watching written.changes."""
    stats = Stats()
    before = stats.written.changes
    stats.written["a.log"] += 3
    assert stats.written.changes == before + 1
    assert stats.written["a.log"] == 3


def test_counters_line_names_only_the_busiest_files() -> None:
    """9,000 invented sources must not make a megabyte counters line (a peer controls the names)."""
    stats = Stats()
    for n in range(9000):
        stats.written[f"{n:05d}{'q' * 95}.log"] += 1
    stats.written["busy.log"] += 50
    line = stats.summary()
    assert len(line) < 3000
    assert "busy.log:50" in line
    assert "more_files=8981" in line


def test_counters_as_data_are_json_and_the_line_is_rendered_from_them() -> None:
    """as_dict() holds every counter the line shows, nested per reason and per file, JSON-ready."""
    stats = Stats(received=9, unrouted=1)
    stats.malformed["no_level"] += 2
    stats.written["a.log"] += 6
    stats.dropped["disk_error"] += 1
    stats.errors["reopened"] += 1
    stats.observe_sequence("p", "h", 1, 3, 1)
    data = json.loads(json.dumps(stats.as_dict()))
    assert data == {
        "received": 9,
        "written": 6,
        "file_writes": 1,
        "malformed": 2,
        "unrouted": 1,
        "dropped": {"disk_error": 1},
        "errors": {"reopened": 1},
        "amqp": {},
        "published": {},
        "refused": {},
        "publish_refused": {},
        "publishers": 1,
        "lost": 1,
        "unseen_before_start": 2,
        "replayed_duplicates": 0,
        "recovered": 0,
        "malformed_by": {"no_level": 2},
        "files": {"a.log": 6},
        "more_files": 0,
    }
    assert (
        render_summary(data)
        == stats.summary()
        == (
            "received=9 written=6 malformed=2 unrouted=1 dropped=disk_error:1 errors=reopened:1"
            " publishers=1 lost=1 unseen_before_start=2 malformed_by=no_level:2 files=a.log:6"
        )
    )
    bridge = stats.as_dict(files=False)
    assert "written" not in bridge and "files" not in bridge
    assert stats.summary(files=False).startswith("received=9 malformed=2 ")
    assert Stats().summary() == "received=0 written=0 malformed=0 files=-"
