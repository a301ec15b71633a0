"""What the cluster tests share: a test's own topology, apps logging at a steady rate, a bridge."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika

from tests.helpers import CollectorProcess, short_ipc_endpoint
from tests.helpers_handler import private_logger
from zlogcollect import ZLogHandler

Record = tuple[str, int]  # (source, number)


@contextmanager
def channel(url: str) -> Iterator[Any]:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    connection = pika.BlockingConnection(params)
    try:
        yield connection.channel()
    finally:
        connection.close()


class Topology:
    """One test's names: its source exchange (the bridge's), hash exchange and shard queues."""

    def __init__(self, name: str, shards: int) -> None:
        self.source = f"{name}.in"
        self.exchange = f"{name}.shards"
        self.prefix = f"{name}.shard"
        self.shards = shards
        self.queues = [f"{self.prefix}.{i}" for i in range(shards)]

    def declare(self, url: str, shards: int | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable, "-m", "zlogcollect", "topology", "declare", url,
                "--shards", str(shards or self.shards), "--exchange", self.exchange, "--queue-prefix", self.prefix,
                "--source-exchange", self.source, "--declare-source-exchange",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def delete(self, url: str) -> None:
        with channel(url) as ch:
            for queue in [*self.queues, f"{self.prefix}.{self.shards}"]:
                ch.queue_delete(queue)
            ch.exchange_delete(self.exchange)
            ch.exchange_delete(self.source)

    def lengths(self, url: str) -> list[int]:
        with channel(url) as ch:
            return [int(ch.queue_declare(q, passive=True).method.message_count) for q in self.queues]


def bridge(collectors: list[CollectorProcess], url: str, exchange: str, *args: str) -> str:
    endpoint = short_ipc_endpoint()
    proc = CollectorProcess(
        ["--bind", endpoint, "--amqp-url", url, "--exchange", exchange, *args], command="bridge"
    )
    collectors.append(proc)
    proc.wait_ready()
    return endpoint


class Apps(threading.Thread):
    """Several apps (one ZLogHandler each) logging numbered records at a steady total rate."""

    LEVELS = ("info", "warning", "error", "debug")

    def __init__(self, endpoint: str, sources: list[str], per_source: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.handlers = [ZLogHandler(endpoint, app=source) for source in sources]
        self.loggers = [
            private_logger(f"{source}.main", h) for source, h in zip(sources, self.handlers, strict=True)
        ]
        self.sources, self.per_source, self.rate = sources, per_source, rate
        self.sent = 0

    def run(self) -> None:
        start = time.monotonic()
        for n in range(self.per_source):
            for logger in self.loggers:
                # Different levels, hence routing keys: the hash is on the source alone.
                getattr(logger, self.LEVELS[n % 4])("n %d", n)
                self.sent += 1
            ahead = self.sent / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)

    def close(self) -> None:
        self.join(60)
        for handler in self.handlers:
            handler.close()


def parse(body: bytes) -> Record:
    record = json.loads(body)
    return record["source"], int(record["msg"].split()[1])


def drain(url: str, queue: str) -> list[Record]:
    """Every message in *queue*, acked; by a consumer: single-active-consumer queues refuse basic.get."""
    records: list[Record] = []
    with channel(url) as ch:
        count = int(ch.queue_declare(queue, passive=True).method.message_count)
        if count:
            for method, _props, body in ch.consume(queue, inactivity_timeout=10):
                assert method is not None, f"{queue}: {len(records)} of {count} messages came"
                ch.basic_ack(method.delivery_tag)
                records.append(parse(body))
                if len(records) == count:
                    break
            ch.cancel()
    return records


def assert_exactly_once_in_order(records: list[Record], sources: list[str], per_source: int) -> None:
    for source in sources:
        numbers = [n for s, n in records if s == source]
        assert numbers == list(range(per_source)), (
            f"{source}: {len(numbers)} records, not 0..{per_source - 1}"
        )
