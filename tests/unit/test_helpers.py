"""The shared mechanisms: throttle, bounded cache, backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from zlogcollect.helpers import JSON_ENCODER, Backoff, BoundedCache, Throttle, atomic_file, atomic_write


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_allows_a_burst_per_period_and_counts_the_rest() -> None:
    clock = Clock()
    throttle = Throttle(2, 10.0, clock)
    assert [throttle.allow("a", 5) for _ in range(4)] == [True, True, False, False]
    assert throttle.allow("b")  # kinds are separate
    assert throttle.held("a") == (0, 0)  # the period that held them is not over
    clock.now = 10.0
    assert throttle.held("a") == (2, 10)
    assert throttle.allow("a")  # the summary line took one of the two
    assert not throttle.allow("a")
    assert throttle.held("a", final=True) == (1, 0)


def test_throttle_once_per_period() -> None:
    clock = Clock()
    throttle = Throttle(1, 60.0, clock)
    assert throttle.allow()
    assert not throttle.allow()
    assert not throttle.allow()
    assert throttle.take_held() == 2
    assert throttle.take_held() == 0
    clock.now = 60.0
    assert throttle.allow()


def test_bounded_cache_starts_over_by_entries_and_by_cost() -> None:
    cache: BoundedCache[str, int] = BoundedCache(entries=3, cost=100)
    for i, key in enumerate("abc"):
        cache.put(key, i, 10)
    assert dict(cache) == {"a": 0, "b": 1, "c": 2} and cache.cost == 30
    cache.put("d", 3, 10)
    assert dict(cache) == {"d": 3} and cache.cost == 10
    cache.put("e", 4, 95)
    assert dict(cache) == {"e": 4} and cache.cost == 95
    assert cache.put("huge", 5, 101) == 5 and "huge" not in cache
    cache.clear()
    assert cache.cost == 0 and cache.get("e") is None


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.25, 1.0)
    assert [backoff.next() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == 0.25
    jittered = Backoff(1.0, 8.0, jitter=0.2)
    assert 0.8 <= jittered.next() <= 1.2
    assert 1.6 <= jittered.next() <= 2.4


def test_json_encoder_is_strict_and_keeps_non_ascii() -> None:
    assert JSON_ENCODER.encode({"m": "é", "o": object}).startswith('{"m": "é", "o": "<class')
    try:
        JSON_ENCODER.encode(float("nan"))
    except ValueError:
        pass
    else:
        raise AssertionError("NaN must not be encoded")


def test_atomic_write_replaces_whole_and_never_follows_a_planted_link(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "state.json.tmp").symlink_to(victim)  # a leftover or planted temp file
    atomic_write(str(target), '{"a": "é"}')
    assert target.read_text(encoding="utf-8") == '{"a": "é"}'
    assert victim.read_text() == "precious"
    assert not (tmp_path / "state.json.tmp").exists()


def test_atomic_file_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("old")

    def fail() -> None:
        with atomic_file(str(target)) as handle:
            handle.write(b"half")
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        fail()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
