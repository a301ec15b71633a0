"""The Prometheus metrics ``--http`` serves, made from :class:`Stats` when Prometheus scrapes.

Nothing here runs per record: the receive loop keeps its counters as it always
did, and :class:`StatsCollector` turns them into metric families at scrape time.
No sockets and no gevent: ``httpd`` serves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from zlogcollect._version import __version__
from zlogcollect.health import AmqpView, Health
from zlogcollect.stats import Stats

MAX_FILE_SERIES: Final = 100
"""Files with a ``zlogcollect_records_written_total`` series of their own: the first ones written
since start; every later file is summed under ``file="_other"`` (a peer inventing sources must not
invent series, and a counter must never go down, which "the busiest N" would make it do)."""
OTHER_FILES: Final = "_other"


class StatsCollector:
    """A prometheus_client collector over :class:`Stats`: the families are made when scraped.

    *files* (collect mode) adds the file counters; *health* supplies the last-record
    time and the 0/1 health gauge; its ``amqp`` view adds the bridge's families.
    """

    def __init__(self, stats: Stats, health: Health, files: bool = True) -> None:
        self._stats = stats
        self._health = health
        self._files = files

    def describe(self) -> list[Metric]:
        """Nothing to check for clashes: the registry is private (and this keeps it from collecting early)."""
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield InfoMetricFamily(
            "zlogcollect_build", "The zlogcollect version.", value={"version": __version__}
        )
        yield _counter("zlogcollect_records_received", "Frame sets taken off the socket.", stats.received)
        if self._files:
            yield self._written()
            yield _counter(
                "zlogcollect_records_unrouted", "Records no route named a file for.", stats.unrouted
            )
        yield _labelled(
            "zlogcollect_records_malformed",
            "Records quarantined in _malformed.log.",
            "reason",
            stats.malformed,
        )
        yield _labelled(
            "zlogcollect_records_dropped", "Records or lines given up, by reason.", "reason", stats.dropped
        )
        yield _labelled(
            "zlogcollect_errors",
            "Problems that lost nothing (a retried write, a reopen).",
            "kind",
            stats.errors,
        )
        yield _counter(
            "zlogcollect_records_lost",
            "Records zlogcollect handlers sent or meant to send that never arrived (sequence gaps,"
            " announced drops), all publishers.",
            stats.lost_by_publishers,
        )
        yield _counter(
            "zlogcollect_records_replayed_duplicates",
            "Records whose seq was already written for their publisher (a handler's replay), dropped"
            " before every sink.",
            stats.replayed_duplicates,
        )
        yield _counter(
            "zlogcollect_records_recovered",
            "Records that filled a gap already counted lost (a replay, a reordered record): taken off lost.",
            stats.recovered,
        )
        yield GaugeMetricFamily(
            "zlogcollect_publishers", "Publishers (zlogcollect handlers) known.", value=len(stats.publishers)
        )
        yield _counter(
            "zlogcollect_publish_sent", "Records republished on --publish.", stats.published["sent"]
        )
        yield _counter(
            "zlogcollect_publish_dropped",
            "Records --publish dropped at a subscriber's high-water mark (they are written all the same).",
            stats.published["dropped"],
        )
        yield _labelled(
            "zlogcollect_connections_refused",
            "Connections the receive socket refused (--curve-secret, --allow-ip), by reason.",
            "reason",
            stats.refused,
        )
        yield _labelled(
            "zlogcollect_publish_connections_refused",
            "Connections --publish's socket refused (--publish-allow-keys, --allow-ip), by reason.",
            "reason",
            stats.publish_refused,
        )
        last = self._health.last_record
        if last is not None:
            yield GaugeMetricFamily(
                "zlogcollect_last_record_timestamp_seconds",
                "When the last record arrived (Unix time, to within one batch).",
                value=last,
            )
        yield GaugeMetricFamily(
            "zlogcollect_healthy",
            "1 when /healthz answers 200, else 0.",
            value=int(not self._health.problems()),
        )
        amqp = self._health.amqp
        if amqp is not None:
            yield from self._amqp(amqp)

    def _written(self) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "zlogcollect_records_written",
            f"Lines written, per file (the first {MAX_FILE_SERIES} files written; the rest as"
            f' file="{OTHER_FILES}").',
            labels=["file"],
        )
        other = 0
        # Insertion order is the order files were first written: the same files keep their series.
        for index, (path, count) in enumerate(self._stats.written.items()):
            if index < MAX_FILE_SERIES:
                family.add_metric([path], count)
            else:
                other += count
        if len(self._stats.written) > MAX_FILE_SERIES:
            family.add_metric([OTHER_FILES], other)
        return family

    def _amqp(self, amqp: AmqpView) -> Iterator[Metric]:
        counts = self._stats.amqp
        if amqp.writer:
            yield from self._writer(amqp)
            return
        yield _counter(
            "zlogcollect_amqp_published",
            "Messages published to the broker, re-sends after a lost connection included.",
            counts["published"],
        )
        yield _counter(
            "zlogcollect_amqp_confirmed",
            "Messages the broker confirmed (delivered, or unroutable: no queue was bound for them).",
            counts["delivered"] + counts["unroutable"],
        )
        yield _counter(
            "zlogcollect_amqp_unroutable", "Confirmed messages no queue was bound for.", counts["unroutable"]
        )
        yield _counter(
            "zlogcollect_amqp_dropped", "Records the bridge gave up, any reason.", counts["dropped"]
        )
        yield GaugeMetricFamily(
            "zlogcollect_amqp_buffered",
            "Records held for the broker or awaiting its confirm.",
            value=amqp.buffered(),
        )
        yield GaugeMetricFamily(
            "zlogcollect_amqp_buffer_limit", "Records the bridge may hold (--buffer).", value=amqp.capacity
        )
        yield GaugeMetricFamily(
            "zlogcollect_amqp_connected",
            "1 while connected to the broker, else 0.",
            value=int(amqp.connected()),
        )

    def _writer(self, amqp: AmqpView) -> Iterator[Metric]:
        """``collect --from-amqp``: what it consumed, acknowledged and dropped as repeats."""
        counts = self._stats.amqp
        yield _counter("zlogcollect_amqp_consumed", "Messages delivered to the writer.", counts["consumed"])
        yield _counter(
            "zlogcollect_amqp_acked", "Messages acknowledged once their lines were written.", counts["acked"]
        )
        yield _counter(
            "zlogcollect_amqp_duplicates",
            "Messages dropped as repeats of a message_id already written (redeliveries, re-sends).",
            counts["duplicates"],
        )
        yield _counter(
            "zlogcollect_amqp_reconnects", "Connections to the broker made again.", counts["reconnects"]
        )
        yield GaugeMetricFamily(
            "zlogcollect_amqp_connected",
            "1 while connected to the broker, else 0.",
            value=int(amqp.connected()),
        )


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    """One series per key of *counts*: the keys are the collector's own words, a bounded set."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(counts.items()):
        family.add_metric([key], value)
    return family


def registry(stats: Stats, health: Health, files: bool = True) -> CollectorRegistry:
    """A private registry with the collector's families and the process ones (CPU, memory, descriptors)."""
    private = CollectorRegistry()
    private.register(StatsCollector(stats, health, files))
    ProcessCollector(registry=private)
    return private
