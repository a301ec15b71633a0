"""The --http pieces without a server: the metric families from Stats, the health verdict, the address."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from zlogcollect.config import ConfigError, from_mapping, parse_http_address
from zlogcollect.health import AMQP_FULL, DISK_WINDOW, STALL_AFTER, WRITER_DOWN_AFTER, AmqpView, Health
from zlogcollect.metrics import MAX_FILE_SERIES, OTHER_FILES, StatsCollector
from zlogcollect.stats import Stats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(
    stats: Stats, health: Health, files: bool = True
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, by (name, labels), parsed back from the text exposition."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, health, files))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_become_the_documented_families() -> None:
    stats = Stats(received=7, unrouted=1)
    stats.written["app.log"] += 5
    stats.written["errors.log"] += 2
    stats.malformed["frame_count"] += 1
    stats.dropped["disk_error"] += 3
    stats.errors["reopened"] += 1
    stats.published.update(sent=4, dropped=2)
    stats.observe_sequence("p1", "h", 1, 0, 0)
    stats.observe_sequence("p1", "h", 1, 5, 0)  # 4 missing
    stats.observe_sequence("p1", "h", 1, 7, 0)  # 1 more
    stats.observe_sequence("p1", "h", 1, 6, 0)  # ... that arrived after all
    stats.observe_sequence("p1", "h", 1, 7, 0)  # a replay
    samples = scrape(stats, Health(stats))
    assert samples[("zlogcollect_records_received_total", ())] == 7
    assert samples[("zlogcollect_records_written_total", (("file", "app.log"),))] == 5
    assert samples[("zlogcollect_records_written_total", (("file", "errors.log"),))] == 2
    assert samples[("zlogcollect_records_malformed_total", (("reason", "frame_count"),))] == 1
    assert samples[("zlogcollect_records_dropped_total", (("reason", "disk_error"),))] == 3
    assert samples[("zlogcollect_errors_total", (("kind", "reopened"),))] == 1
    assert samples[("zlogcollect_records_unrouted_total", ())] == 1
    assert samples[("zlogcollect_records_lost_total", ())] == 4
    assert samples[("zlogcollect_records_recovered_total", ())] == 1
    assert samples[("zlogcollect_records_replayed_duplicates_total", ())] == 1
    assert samples[("zlogcollect_publishers", ())] == 1
    assert samples[("zlogcollect_publish_sent_total", ())] == 4
    assert samples[("zlogcollect_publish_dropped_total", ())] == 2
    assert samples[("zlogcollect_build_info", (("version", samples_version(samples)),))] == 1
    assert ("process_open_fds", ()) not in samples  # the private registry has only what is registered
    assert not any(name.startswith("zlogcollect_amqp_") for name, _ in samples)


def samples_version(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    labels = next(labels for name, labels in samples if name == "zlogcollect_build_info")
    return dict(labels)["version"]


def test_the_bridge_has_no_file_families_and_the_amqp_ones() -> None:
    stats = Stats()
    stats.amqp.update(published=10, delivered=6, unroutable=2, dropped=1)
    amqp = AmqpView(lambda: True, lambda: 3, 100)
    samples = scrape(stats, Health(stats, amqp=amqp), files=False)
    assert not any(name.startswith("zlogcollect_records_written") for name, _ in samples)
    assert samples[("zlogcollect_amqp_published_total", ())] == 10
    assert samples[("zlogcollect_amqp_confirmed_total", ())] == 8
    assert samples[("zlogcollect_amqp_unroutable_total", ())] == 2
    assert samples[("zlogcollect_amqp_dropped_total", ())] == 1
    assert samples[("zlogcollect_amqp_buffered", ())] == 3
    assert samples[("zlogcollect_amqp_buffer_limit", ())] == 100
    assert samples[("zlogcollect_amqp_connected", ())] == 1


def test_the_writer_has_the_file_families_and_its_own_amqp_ones() -> None:
    """collect --from-amqp: consumed, acked, duplicates, reconnects and connected; nothing of the bridge's."""
    stats = Stats()
    stats.amqp.update(consumed=12, acked=10, duplicates=2, reconnects=1)
    stats.written["app1.log"] += 10
    amqp = AmqpView(lambda: False, lambda: 0, 1000, writer=True)
    samples = scrape(stats, Health(stats, amqp=amqp))
    assert samples[("zlogcollect_records_written_total", (("file", "app1.log"),))] == 10
    assert samples[("zlogcollect_amqp_consumed_total", ())] == 12
    assert samples[("zlogcollect_amqp_acked_total", ())] == 10
    assert samples[("zlogcollect_amqp_duplicates_total", ())] == 2
    assert samples[("zlogcollect_amqp_reconnects_total", ())] == 1
    assert samples[("zlogcollect_amqp_connected", ())] == 0
    assert not any(
        name.startswith(("zlogcollect_amqp_published", "zlogcollect_amqp_buffer")) for name, _ in samples
    )


def test_file_series_are_bounded_and_never_go_down() -> None:
    """The first MAX_FILE_SERIES files keep their series; the rest sum into _other, which only grows."""
    stats = Stats()
    health = Health(stats)
    for i in range(MAX_FILE_SERIES + 50):
        stats.written[f"f{i}.log"] += 1
    first = scrape(stats, health)
    written = {
        labels: value
        for (name, labels), value in first.items()
        if name == "zlogcollect_records_written_total"
    }
    assert len(written) == MAX_FILE_SERIES + 1
    assert written[(("file", OTHER_FILES),)] == 50
    # A late file becomes the busiest: it stays in _other, and no series goes down.
    stats.written[f"f{MAX_FILE_SERIES + 10}.log"] += 1000
    second = scrape(stats, health)
    assert second[("zlogcollect_records_written_total", (("file", OTHER_FILES),))] == 1050
    assert all(second[key] >= value for key, value in first.items() if key[0].endswith("_total"))


def test_health_is_starting_then_ok_with_the_last_record_time() -> None:
    stats, clock, wall = Stats(), Clock(), Clock()
    health = Health(stats, clock=clock, wall=wall)
    healthy, body = health.report()
    assert not healthy and body["status"] == "starting"
    health.tick()
    healthy, body = health.report()
    assert healthy and body["status"] == "ok" and body["last_record"] is None and body["problems"] == []
    stats.received += 3
    wall.now = 1_800_000_000.5
    health.tick()
    clock.now += 2
    wall.now += 2
    healthy, body = health.report()
    assert healthy
    assert body["last_record"] == "2027-01-15T08:00:00.500Z"
    assert body["last_record_age"] == 2
    assert body["uptime"] == 2
    assert body["received"] == 3


def test_disk_errors_with_lines_waiting_fail_and_recover() -> None:
    stats, clock = Stats(), Clock()
    waiting = [0]
    health = Health(stats, pending_lines=lambda: waiting[0], clock=clock)
    health.tick()
    stats.errors["disk_error"] += 1
    waiting[0] = 40
    health.tick()
    healthy, body = health.report()
    assert not healthy and body["status"] == "failing"
    assert "disk errors" in body["problems"][0] and "40 lines" in body["problems"][0]
    # The retry succeeds: nothing waits any more, so it is healthy at once.
    waiting[0] = 0
    assert health.report()[0]
    # Still failing (lines waiting) but no new error for a whole window: healthy again.
    waiting[0] = 5
    assert not health.report()[0]
    clock.now += DISK_WINDOW + 1
    health.tick()
    assert health.report()[0]
    # Lines shed for lack of disk count as disk trouble too.
    stats.dropped["disk_error"] += 10
    health.tick()
    assert not health.report()[0]


def test_amqp_down_with_the_buffer_over_80_percent_fails() -> None:
    stats = Stats()
    state = {"connected": False, "buffered": int(AMQP_FULL * 100)}
    amqp = AmqpView(lambda: bool(state["connected"]), lambda: int(state["buffered"]), 100)
    health = Health(stats, amqp=amqp)
    health.tick()
    healthy, body = health.report()
    assert healthy and body["amqp"] == {"connected": False, "buffered": 80, "buffer": 100}
    state["buffered"] = 81
    healthy, body = health.report()
    assert not healthy and "AMQP" in body["problems"][0] and "81 %" in body["problems"][0]
    state["connected"] = True  # connected: it is sending the buffer, nothing to fail on
    assert health.report()[0]


def test_a_writer_without_its_broker_for_long_fails_and_recovers_at_once() -> None:
    """A writer buffers nothing: away from its broker longer than a reconnect takes, nothing is written."""
    stats, clock = Stats(), Clock()
    state = {"connected": True}
    amqp = AmqpView(lambda: state["connected"], lambda: 0, 1000, writer=True)
    health = Health(stats, amqp=amqp, clock=clock)
    health.tick()
    state["connected"] = False
    clock.now += 1
    health.tick()  # the loop notices the outage (as it waits to reconnect, it keeps ticking)
    clock.now += WRITER_DOWN_AFTER
    health.tick()
    assert health.report()[0], "a short outage (a reconnect) is no failure"
    clock.now += 1
    health.tick()
    healthy, body = health.report()
    assert not healthy and body["problems"] == ["AMQP broker unreachable for 31 s: nothing is being written"]
    assert body["amqp"]["connected"] is False
    state["connected"] = True
    health.tick()
    assert health.report()[0]


def test_a_stalled_loop_and_a_stop_are_unhealthy() -> None:
    stats, clock = Stats(), Clock()
    health = Health(stats, clock=clock)
    health.tick()
    clock.now += STALL_AFTER + 1
    healthy, body = health.report()
    assert not healthy and "receive loop" in body["problems"][0]
    health.tick()
    assert health.report()[0]
    health.stopping = True
    healthy, body = health.report()
    assert not healthy and body["status"] == "stopping"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9559", ("127.0.0.1", 9559)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9559", ("::1", 9559)),
        ("*:9559", ("0.0.0.0", 9559)),
        ("metrics.example.org:80", ("metrics.example.org", 80)),
    ],
)
def test_http_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_http_address(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("9559", "expected HOST:PORT"),
        (":9559", "expected HOST:PORT"),
        ("127.0.0.1:", "port ''"),
        ("127.0.0.1:70000", "port '70000'"),
        ("127.0.0.1:http", "port 'http'"),
        ("http://127.0.0.1:9559", "without a scheme"),
        ("::1:9559", "expected HOST:PORT"),
        ("a b:1", "expected HOST:PORT"),
        ("h\x00st:1", "expected HOST:PORT"),
    ],
)
def test_bad_http_addresses_are_config_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=r"^http = ") as caught:
        from_mapping({"http": text})
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_http_is_off_by_default() -> None:
    assert from_mapping({}).http_address is None
