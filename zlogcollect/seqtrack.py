"""One publisher's sequence numbers: the highest written and the bounded gaps below it (exactly once).

A record's ``seq`` is NEW (above the highest so far), FILLED (in an open gap: a
replayed or reordered record the collector had counted missing) or a DUPLICATE
(at or below the highest and in no open gap: already written, so dropped).

The open gaps are kept as ranges, at most MAX_GAPS of them. At the cap the
oldest (lowest) ranges are given up: their records stay counted as lost for
good, and one arriving later is taken as a duplicate (everything at or below
``floor`` outside an open gap is). Memory per publisher is therefore bounded
whatever the sender does (a hostile one sending every other seq included).
"""

from __future__ import annotations

import enum
from bisect import bisect_right

MAX_GAPS = 32
"""Open gaps (ranges) kept per publisher; past it the oldest are given up as final loss."""


class Outcome(enum.IntEnum):
    """What a seq is to the tracker."""

    NEW = 0
    """Above the highest so far: the record advances it (and may open a gap below)."""
    FILLED = 1
    """In an open gap: a record counted missing arrived after all (loss corrected)."""
    DUPLICATE = 2
    """Already written (or in a gap given up at the cap): dropped before any sink."""


class SeqTracker:
    """The highest seq written (``last``) and the open gaps below it, as ``[low, high]`` ranges.

    ``start``: the first seq this tracker took as the beginning of what it saw;
    a gap below it holds records sent before the collector knew the publisher
    (``unseen_before_start``), not records lost.
    """

    __slots__ = ("floor", "gaps", "given_up", "last", "start")

    def __init__(
        self, last: int = -1, gaps: list[list[int]] | None = None, start: int = 0, floor: int = -1
    ) -> None:
        self.last = last
        self.gaps: list[list[int]] = gaps if gaps is not None else []
        """Disjoint inclusive ranges, ascending, above ``floor`` and below ``last`` (or up to it, as
        restored for a publisher saved before anything of it was written)."""
        self.start = start
        self.floor = floor
        """The highest seq of a gap given up at the cap (-1: none)."""
        self.given_up = 0
        """Records in gaps given up at the cap (they stay counted as lost)."""

    def observe(self, seq: int, dropped: int = 0) -> tuple[Outcome, int]:
        """Classify *seq* and update; the number is the records newly missing (NEW only, else 0).

        *dropped*: the sender's count of records it dropped just before this one
        (never sent, so never replayed): no gap is kept open for them, though they
        are part of the missing records returned.
        """
        last = self.last
        if seq > last:
            missing = seq - last - 1
            kept = missing - min(max(dropped, 0), missing)
            if kept:
                self.gaps.append([last + 1, last + kept])
                self._bound()
            self.last = seq
            return Outcome.NEW, missing
        return (Outcome.FILLED if self.fill(seq) else Outcome.DUPLICATE), 0

    def open(self, low: int, high: int) -> None:
        """Open the gap ``[low, high]`` (below every seq seen: the unseen start of a publisher)."""
        if low <= high and high > self.floor:
            self.gaps.insert(0, [max(low, self.floor + 1), high])
            self._bound()

    def fill(self, seq: int) -> bool:
        """Close *seq* in the gap that holds it; False if no open gap does."""
        gaps = self.gaps
        if not gaps or seq < gaps[0][0]:
            return False
        index = bisect_right(gaps, seq, key=_low) - 1
        gap = gaps[index]
        low, high = gap
        if seq > high:
            return False
        if low == high:
            del gaps[index]
        elif seq == low:
            gap[0] = seq + 1
        elif seq == high:
            gap[1] = seq - 1
        else:
            gap[1] = seq - 1
            gaps.insert(index + 1, [seq + 1, high])
            self._bound()
        return True

    def _bound(self) -> None:
        gaps = self.gaps
        while len(gaps) > MAX_GAPS:
            low, high = gaps.pop(0)
            self.given_up += high - low + 1
            self.floor = high

    def missing(self) -> int:
        """Records in the open gaps."""
        return sum(high - low + 1 for low, high in self.gaps)


def _low(gap: list[int]) -> int:
    return gap[0]


def valid_gaps(gaps: object, last: int) -> list[list[int]] | None:
    """Saved gaps checked (disjoint ascending ``[low, high]`` pairs of ints up to *last*, at most
    MAX_GAPS), or None if they are of the wrong shape. A gap may end at *last* itself: a publisher
    saved when first seen, at its first seq minus one, nothing of it written yet."""
    if not isinstance(gaps, list) or len(gaps) > MAX_GAPS:
        return None
    checked: list[list[int]] = []
    previous = 0
    for gap in gaps:
        if not (isinstance(gap, list) and len(gap) == 2 and all(part.__class__ is int for part in gap)):
            return None
        low, high = gap
        if not previous <= low <= high <= last:
            return None
        checked.append([low, high])
        previous = high + 1
    return checked
