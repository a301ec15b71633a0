"""Benchmark 8: records/s the writer (`collect --from-amqp`) writes from a pre-filled queue, beside a bare pika consumer.

Per run, N messages exactly as the bridge publishes them (body with the ``zlog`` key,
``message_id``, persistent) fill a durable queue of a private RabbitMQ node while the
consumer waits: the writer is ready and then SIGSTOPped (its consumer registered, so the
broker's prefetch is in its socket), the bare consumer is connected and waits for "go".
The clock starts at SIGCONT (or "go") and stops when the broker holds none of the
messages, neither ready nor unacknowledged: the queue's passive ``queue_declare`` count
reaches 0 (ready), then the writer's own ``acked`` counter reaches N (asked for with
SIGUSR1), or the bare consumer reports its last ack. A heartbeat reconnection would show
as a ``reconnects`` counter above 0 and fails the run rather than being timed.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from benchmarks.bridge import rabbit_missing
from benchmarks.common import (
    BenchError,
    Outcome,
    Settings,
    counters,
    progress,
    scratch,
    wait_until,
    worker,
    zlogcollect,
)

QUEUE = "bench.writer"
PREFETCH = 1000


class Broker:
    """A private RabbitMQ node with one durable queue, filled with the bridge's messages on demand."""

    def __init__(self) -> None:
        import pika

        from zlogcollect.testing.rabbitmq import RabbitNode

        self.node = RabbitNode()
        self.node.start()
        self.url = self.node.url
        self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self._channel = self._connection.channel()
        self._channel.queue_declare(QUEUE, durable=True)
        self._bodies: list[tuple[bytes, Any]] = []

    def ready(self) -> int:
        count: int = self._channel.queue_declare(QUEUE, passive=True).method.message_count
        return count

    def total(self) -> int:
        """Messages in the queue, ready and unacknowledged (what a stopped consumer's prefetch holds
        too): ``rabbitmqctl list_queues name messages``, about a second a call, so only while filling."""
        for line in self.node.ctl("list_queues", "-q", "name", "messages").splitlines():
            name, _, count = line.strip().partition("\t")
            if name == QUEUE and count.strip().isdigit():
                return int(count)
        return 0

    def fill(self, n: int) -> None:
        """Publish *n* messages as the bridge does, then wait until the broker holds them all."""
        import pika

        from zlogcollect.sinks.amqp_message import MessageFormat
        from zlogcollect.wire import Record

        if len(self._bodies) < n:
            fmt = MessageFormat()
            now = time.time()
            self._bodies = []
            for i in range(n):
                meta = {"pub": "bench", "seq": i, "host": "bench01", "pid": 4242, "logger": "db"}
                record = Record(
                    f"app{i % 8}", "INFO", 20, "db.query", f"query {i} took 12 ms", now, now, meta
                )
                message = fmt(record)
                self._bodies.append((message.body, pika.BasicProperties(**message.properties())))
        for body, properties in self._bodies[:n]:
            self._channel.basic_publish("", QUEUE, body, properties)
        wait_until(lambda: self.total() >= n, 120, f"{n} messages in the queue", interval=0.5)

    def purge(self) -> None:
        self._channel.queue_purge(QUEUE)

    def close(self) -> None:
        try:
            self._connection.close()
        except Exception:  # noqa: BLE001 - the node goes away next anyway
            pass
        self.node.close()


def writer_once(broker: Broker, n: int) -> tuple[float, float]:
    """records/s of one writer over *n* pre-queued messages, and its CPU seconds per record (µs)."""
    broker.purge()
    with scratch("writer") as tmp:
        proc = zlogcollect(
            "collect",
            [
                "--from-amqp",
                broker.url,
                "--queue",
                QUEUE,
                "--dir",
                str(tmp / "logs"),
                "--prefetch",
                str(PREFETCH),
            ],
            tmp,
        )
        try:
            proc.send(signal.SIGSTOP)
            broker.fill(n)
            cpu0 = _cpu(proc.popen.pid)
            t0 = time.perf_counter()
            proc.send(signal.SIGCONT)
            wait_until(lambda: broker.ready() == 0, 300, "the queue's ready messages taken", interval=0.01)

            def acked() -> bool:
                return int(counters(proc)["amqp"].get("acked", 0)) >= n

            t1 = wait_until(acked, 60, "the writer's acks", interval=0.005)
            cpu = _cpu(proc.popen.pid) - cpu0
            seen = counters(proc)
            if seen["amqp"].get("reconnects", 0) or seen["received"] != n:
                raise BenchError(
                    f"the writer reconnected or missed records: {seen['amqp']}, {seen['received']}"
                )
            return n / (t1 - t0), cpu / n * 1e6
        finally:
            proc.stop()


def consumer_once(broker: Broker, n: int) -> float:
    """records/s of a bare pika consumer that only acks, over *n* pre-queued messages."""
    broker.purge()
    proc = worker(
        "pika_consumer", stdin=True, url=broker.url, queue=QUEUE, count=n, prefetch=PREFETCH, max_seconds=300
    )
    try:
        proc.wait_stdout(timeout=120)
        broker.fill(n)
        t0 = time.perf_counter()
        proc.tell("go")
        result = proc.wait_json(300)
        t1 = time.perf_counter()
        if int(result["acked"]) != n:
            raise BenchError(f"the bare consumer acked {result['acked']} of {n}")
        wait_until(lambda: broker.ready() == 0, 30, "an empty queue", interval=0.01)
        return n / (t1 - t0)
    finally:
        proc.kill()


def _cpu(pid: int) -> float:
    import os
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(settings: Settings, outcome: Outcome) -> None:
    outcome.skipped = rabbit_missing()
    if outcome.skipped:
        return
    n = settings.pick(30_000, 2_000)
    outcome.notes.append(
        f"{n:,} messages as the bridge publishes them pre-queued in one durable classic queue, prefetch {PREFETCH};"
        " timed until the broker holds none (ready 0, then every ack: the writer's acked counter, the"
        " bare consumer's last ack). The writer writes default text lines to 8 files (INFO records: nothing in errors.log)"
    )
    progress("writer: starting a private RabbitMQ node")
    broker = Broker()
    try:
        for index in range(settings.runs):
            rate, cpu = writer_once(broker, n)
            outcome.figure("zlogcollect collect --from-amqp", "records/s").values.append(rate)
            outcome.figure("writer CPU per record", "µs", higher_is_better=False).values.append(cpu)
            progress(f"writer run {index + 1}: writer {rate:,.0f} records/s, {cpu:.0f} µs CPU per record")
            rate = consumer_once(broker, n)
            outcome.figure("bare pika consumer, acks only", "records/s").values.append(rate)
            progress(f"writer run {index + 1}: bare pika consumer {rate:,.0f} records/s")
    finally:
        broker.close()
    outcome.derived["writer / bare consumer (records/s)"] = outcome.ratio(
        "zlogcollect collect --from-amqp", "bare pika consumer, acks only"
    )
