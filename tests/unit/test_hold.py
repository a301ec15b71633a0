"""The hold-until-subscribed buffer, on a fake clock: order, bounds, expiry, every drop counted."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from zlogcollect.hold import HoldBuffer


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_items_come_out_in_order() -> None:
    held = HoldBuffer[int](limit=10, timeout=5.0, clock=Clock())
    for i in range(4):
        assert held.add(i) == 0
    assert len(held) == 4 and held
    assert held.take(3) == ([0, 1, 2], 0)
    assert held.take() == ([3], 0)
    assert not held and held.dropped == 0


def test_full_buffer_drops_the_oldest() -> None:
    """The records nearest to now matter most: the oldest make room, each counted."""
    held = HoldBuffer[str](limit=2, timeout=5.0, clock=Clock())
    assert [held.add(x) for x in "abcd"] == [0, 0, 1, 1]
    assert held.take() == (["c", "d"], 0)
    assert held.dropped == 2


def test_limit_zero_holds_nothing() -> None:
    held = HoldBuffer[str](limit=0, timeout=5.0, clock=Clock())
    assert held.add("a") == 1
    assert len(held) == 0 and held.dropped == 1


def test_items_expire_by_age() -> None:
    """An item older than the timeout is dropped when next looked at, not handed out."""
    clock = Clock()
    held = HoldBuffer[str](limit=10, timeout=5.0, clock=clock)
    held.add("old")
    clock.now += 3
    held.add("newer")
    clock.now += 2  # "old" is exactly 5 s old now: expired
    assert held.take() == (["newer"], 1)
    held.add("x")
    clock.now += 10
    assert held.expire() == 1
    assert held.add("y") == 0
    assert held.dropped == 2


def test_adding_expires_first() -> None:
    clock = Clock()
    held = HoldBuffer[str](limit=2, timeout=1.0, clock=clock)
    held.add("a")
    held.add("b")
    clock.now += 1
    assert held.add("c") == 2  # both expired, none pushed out
    assert held.take() == (["c"], 0)


def test_byte_bound() -> None:
    """With max_bytes, the oldest make room by size; an item larger than the bound is dropped itself."""
    held = HoldBuffer[str](limit=100, timeout=5.0, clock=Clock(), max_bytes=10)
    assert held.add("a", 4) == 0
    assert held.add("b", 4) == 0
    assert held.add("c", 4) == 1  # "a" made room
    assert held.bytes == 8
    assert held.add("huge", 11) == 1
    assert held.take() == (["b", "c"], 0)
    assert held.bytes == 0 and held.dropped == 2


def test_clear_counts_what_it_drops() -> None:
    held = HoldBuffer[int](limit=10, timeout=5.0, clock=Clock(), max_bytes=100)
    for i in range(3):
        held.add(i, 5)
    assert held.clear() == 3
    assert not held and held.bytes == 0 and held.dropped == 3


def test_records_expired_when_another_is_added_are_counted_once() -> None:
    """add() returns the expired records with its own drops, and counts each of them once."""
    clock = Clock()
    held = HoldBuffer[int](limit=1, timeout=5.0, clock=clock)
    held.add(0)
    clock.now += 5.0
    assert held.add(1) == 1
    assert (held.dropped, len(held)) == (1, 1)
    clock.now += 6.0
    assert held.add(2, size=10) == 1 and held.dropped == 2


@example(steps=[("add", 0), ("wait", 2.0), ("wait", 3.0), ("add", 0)], limit=1, max_bytes=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 30)),
            st.tuples(st.just("wait"), st.floats(0, 3)),
            st.tuples(st.just("take"), st.one_of(st.none(), st.integers(0, 5))),
            st.tuples(st.just("clear"), st.just(0)),
        ),
        max_size=60,
    ),
    limit=st.integers(0, 6),
    max_bytes=st.one_of(st.none(), st.integers(0, 60)),
)
def test_every_item_is_handed_out_or_counted(
    steps: list[tuple[str, object]], limit: int, max_bytes: int | None
) -> None:
    """Whatever happens, added == taken + dropped + held, order is kept, bounds hold."""
    clock = Clock()
    held = HoldBuffer[int](limit=limit, timeout=5.0, clock=clock, max_bytes=max_bytes)
    added, taken = 0, []
    for op, arg in steps:
        if op == "add":
            assert isinstance(arg, int)
            held.add(added, arg)
            added += 1
        elif op == "wait":
            assert isinstance(arg, float)
            clock.now += arg
        elif op == "take":
            assert arg is None or isinstance(arg, int)
            items, _ = held.take(arg)
            assert arg is None or len(items) <= arg
            taken += items
        else:
            held.clear()
        assert len(held) <= limit
        assert max_bytes is None or held.bytes <= max_bytes
        assert added == len(taken) + held.dropped + len(held)
    assert taken == sorted(taken)
