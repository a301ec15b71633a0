"""The per-publisher sequence tracker, without sockets: new, filled, duplicate, and the gap cap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zlogcollect.seqtrack import MAX_GAPS, Outcome, SeqTracker, valid_gaps


def outcomes(track: SeqTracker, seqs: list[int]) -> list[Outcome]:
    return [track.observe(seq)[0] for seq in seqs]


def test_new_records_advance_and_open_gaps() -> None:
    track = SeqTracker()
    assert track.observe(0) == (Outcome.NEW, 0)
    assert track.observe(1) == (Outcome.NEW, 0)
    assert track.observe(5) == (Outcome.NEW, 3)
    assert track.last == 5 and track.gaps == [[2, 4]] and track.missing() == 3


def test_a_replay_fills_the_gap_and_the_rest_are_duplicates() -> None:
    """0..99 with 60..69 missing, then 50..120 again: 10 filled, 40 duplicates, 21 new."""
    track = SeqTracker()
    outcomes(track, [seq for seq in range(100) if not 60 <= seq < 70])
    replay = outcomes(track, list(range(50, 121)))
    assert replay.count(Outcome.FILLED) == 10
    assert replay.count(Outcome.DUPLICATE) == 40
    assert replay.count(Outcome.NEW) == 21
    assert track.gaps == [] and track.last == 120


def test_filling_the_middle_of_a_gap_splits_it() -> None:
    track = SeqTracker()
    outcomes(track, [0, 10])
    assert outcomes(track, [5, 1, 9, 5]) == [Outcome.FILLED] * 3 + [Outcome.DUPLICATE]
    assert track.gaps == [[2, 4], [6, 8]]


def test_the_senders_dropped_records_are_no_open_gap() -> None:
    track = SeqTracker()
    track.observe(0)
    assert track.observe(10, dropped=4) == (Outcome.NEW, 9)
    assert track.gaps == [[1, 5]]
    assert track.observe(20, dropped=50) == (Outcome.NEW, 9)  # more announced than missing: all final
    assert track.gaps == [[1, 5]]


def test_the_gap_cap_gives_up_the_oldest_as_final_loss() -> None:
    """Every other seq: the gaps stay at MAX_GAPS, the oldest given up; a record of one is a duplicate."""
    track = SeqTracker()
    for seq in range(0, 2 * 100_000, 2):
        track.observe(seq)
    assert len(track.gaps) == MAX_GAPS
    assert track.given_up + track.missing() == 100_000 - 1
    assert track.observe(1) == (Outcome.DUPLICATE, 0)  # given up long ago: it stays counted lost
    assert track.observe(track.last - 1) == (Outcome.FILLED, 0)


def test_a_split_at_the_cap_gives_up_the_oldest() -> None:
    track = SeqTracker()
    for seq in range(0, 2 * (MAX_GAPS + 1), 2):  # MAX_GAPS gaps of one record each
        track.observe(seq)
    track.observe(2 * (MAX_GAPS + 1) + 10)  # one wider gap at the top
    assert len(track.gaps) == MAX_GAPS and track.given_up == 1
    assert track.observe(2 * (MAX_GAPS + 1) + 5)[0] is Outcome.FILLED  # split: one more range
    assert len(track.gaps) == MAX_GAPS and track.given_up == 2


def test_an_unseen_start_is_an_open_gap_below_the_first_record() -> None:
    track = SeqTracker(100, start=100)
    track.open(0, 99)
    assert track.observe(50) == (Outcome.FILLED, 0)
    assert track.observe(50) == (Outcome.DUPLICATE, 0)
    assert track.gaps == [[0, 49], [51, 99]]


def test_saved_gaps_are_checked() -> None:
    assert valid_gaps([[1, 2], [4, 8]], 10) == [[1, 2], [4, 8]]
    assert valid_gaps([], -1) == []
    assert valid_gaps([[0, 10]], 10) == [[0, 10]]  # saved when first seen: nothing written yet
    for bad in ([[2, 1]], [[1, 2], [2, 3]], [[1, 11]], [[1]], [["1", 2]], [[True, 2]], {"a": 1}, [[-1, 2]]):
        assert valid_gaps(bad, 10) is None, bad
    assert valid_gaps([[i * 2, i * 2] for i in range(MAX_GAPS + 1)], 10**6) is None


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=300))
def test_the_tracker_is_exact_below_the_cap(seqs: list[int]) -> None:
    """Against a set of the seqs seen: NEW above the highest, DUPLICATE if seen, else FILLED;
    what is missing below the highest is the open gaps plus what was given up."""
    track = SeqTracker()
    seen: set[int] = set()
    for seq in seqs:
        outcome, missing = track.observe(seq)
        highest = max(seen, default=-1)
        if seq > highest:
            assert outcome is Outcome.NEW and missing == seq - highest - 1
        elif seq in seen:
            assert outcome is Outcome.DUPLICATE
        elif track.given_up == 0:
            assert outcome is Outcome.FILLED
        if outcome is not Outcome.DUPLICATE:
            seen.add(seq)
        assert len(track.gaps) <= MAX_GAPS
        assert all(low <= high for low, high in track.gaps)
        assert all(a[1] < b[0] for a, b in zip(track.gaps, track.gaps[1:], strict=False))
        if track.given_up == 0:
            assert track.missing() == (track.last + 1) - len(seen)
            assert {s for low, high in track.gaps for s in range(low, high + 1)}.isdisjoint(seen)
        assert track.missing() + track.given_up == (track.last + 1) - len(seen)
