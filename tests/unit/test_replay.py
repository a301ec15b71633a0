"""The replay window, on a fake clock: order, the three bounds, frames kept as given."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zlogcollect.replay import ReplayWindow


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(n: int) -> tuple[bytes, bytes, bytes]:
    return b"app.INFO", b"record %d" % n, b'{"seq":%d}' % n


def test_frames_come_back_in_order_and_as_given() -> None:
    window = ReplayWindow(limit=10, max_age=5.0, max_bytes=1 << 20, clock=Clock())
    assert not window and window.frames() == []
    sent = [record(n) for n in range(4)]
    for frames in sent:
        window.add(*frames)
    assert len(window) == 4
    replayed = window.frames()
    assert replayed == sent
    assert all(
        a is b for got, want in zip(replayed, sent, strict=True) for a, b in zip(got, want, strict=True)
    )
    assert window.frames() == sent  # reading does not empty it: every re-subscription gets it again


def test_count_bound_keeps_the_newest() -> None:
    window = ReplayWindow(limit=3, max_age=5.0, max_bytes=1 << 20, clock=Clock())
    for n in range(7):
        window.add(*record(n))
    assert window.frames() == [record(n) for n in (4, 5, 6)]


def test_bytes_bound_keeps_the_newest() -> None:
    size = sum(len(frame) for frame in record(0))
    window = ReplayWindow(limit=100, max_age=5.0, max_bytes=2 * size, clock=Clock())
    for n in range(5):
        window.add(*record(n))
    assert window.frames() == [record(3), record(4)]
    assert window.bytes == 2 * size
    window.add(b"t", b"x" * (3 * size), b"{}")  # larger than the whole window: not kept, nothing else either
    assert window.frames() == [] and window.bytes == 0


def test_age_bound_forgets_old_records() -> None:
    clock = Clock()
    window = ReplayWindow(limit=100, max_age=5.0, max_bytes=1 << 20, clock=clock)
    window.add(*record(0))
    clock.now += 3
    window.add(*record(1))
    clock.now += 2  # record 0 is exactly 5 s old: still replayed
    assert window.frames() == [record(0), record(1)]
    clock.now += 0.5
    assert window.frames() == [record(1)]
    clock.now += 10
    assert window.expire() == 1
    assert not window and window.bytes == 0


def test_limit_zero_keeps_nothing_and_clear_forgets() -> None:
    window = ReplayWindow(limit=0, max_age=5.0, max_bytes=1 << 20, clock=Clock())
    window.add(*record(0))
    assert window.frames() == []
    window = ReplayWindow(limit=5, max_age=5.0, max_bytes=1 << 20, clock=Clock())
    window.add(*record(0))
    window.clear()
    assert not window and window.bytes == 0


@given(
    st.integers(0, 20),
    st.integers(0, 400),
    st.lists(st.tuples(st.integers(0, 60), st.floats(0, 3)), max_size=60),
)
def test_bounds_always_hold(limit: int, max_bytes: int, adds: list[tuple[int, float]]) -> None:
    """Whatever is added, the window keeps the newest records that fit every bound, in order."""
    clock = Clock()
    window = ReplayWindow(limit=limit, max_age=4.0, max_bytes=max_bytes, clock=clock)
    sent: list[tuple[float, tuple[bytes, bytes, bytes]]] = []
    for n, (length, pause) in enumerate(adds):
        clock.now += pause
        frames = (b"t", b"x" * length, b"%d" % n)
        window.add(*frames)
        sent.append((clock.now, frames))
        assert len(window) <= limit and window.bytes <= max_bytes
    got = window.frames()
    assert window.bytes == sum(len(part) for frames in got for part in frames)
    fresh = [frames for when, frames in sent if when >= clock.now - 4.0]
    # What is kept is a run of the newest records, oldest first.
    assert got == fresh[len(fresh) - len(got) :]
