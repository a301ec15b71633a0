"""Benchmark 3: records/s into RabbitMQ under publisher confirms, the bridge against raw pika."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from benchmarks.common import (
    BenchError,
    Outcome,
    Proc,
    Settings,
    counters,
    progress,
    scratch,
    tcp_endpoint,
    wait_until,
    worker,
    zlogcollect,
)
from benchmarks.workers import MESSAGE, PROBE

QUEUE = "bench"
BINDING = "bench.#"


class Broker:
    """A private RabbitMQ node with one durable queue bound to ``amq.topic``, and a way to read its depth."""

    def __init__(self) -> None:
        import pika

        from zlogcollect.testing.rabbitmq import RabbitNode

        self.node = RabbitNode()
        self.node.start()
        self.url = self.node.url
        self.port = self.node.port
        self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self._channel = self._connection.channel()
        self._channel.queue_declare(QUEUE, durable=True)
        self._channel.queue_bind(QUEUE, "amq.topic", BINDING)

    def depth(self) -> int:
        """Messages in the queue (one ``queue_declare(passive=True)`` round trip)."""
        count: int = self._channel.queue_declare(QUEUE, passive=True).method.message_count
        return count

    def purge(self) -> None:
        self._channel.queue_purge(QUEUE)

    def wait_depth(self, n: int, timeout: float, what: str) -> float:
        return wait_until(lambda: self.depth() >= n, timeout, what, interval=0.01)

    def close(self) -> None:
        try:
            self._connection.close()
        except Exception:  # noqa: BLE001 - the node goes away next anyway
            pass
        self.node.close()


class Queue(Protocol):
    """What prime_bridge needs of the queue (or queues) a bridge feeds."""

    def purge(self) -> None: ...

    def depth(self) -> int: ...


def prime_bridge(proc: Any, sock: zmq.Socket[Any], queue: Queue) -> int:
    """Probe a started bridge until it forwards, wait until it confirmed every probe, then pause it
    (SIGSTOP) with *queue* emptied: the records sent next are timed from its SIGCONT.
    Returns the probes it received (PUB drops those sent before the subscription arrived)."""
    queue.purge()
    probe = [b"bench.INFO", f"{PROBE} {uuid.uuid4().hex[:12]}\n".encode()]
    deadline = time.monotonic() + 20
    while queue.depth() == 0:
        if time.monotonic() > deadline:
            raise BenchError(f"the bridge never forwarded a probe\n{proc.describe()}")
        sock.send_multipart(probe)
        time.sleep(0.05)
    probes = 0

    def settled() -> bool:
        nonlocal probes
        seen = counters(proc)
        probes = int(seen["received"])
        return int(seen["amqp"].get("delivered", 0)) == probes

    wait_until(settled, 20, "the bridge to confirm every probe", interval=0.05)
    proc.send(signal.SIGSTOP)
    queue.purge()
    return probes


def bridge_once(broker: Broker, n: int) -> tuple[float, float]:
    """Pre-queue *n* records at a stopped ``zlogcollect bridge``; records/s until queued and until confirmed."""
    records = [[b"bench.INFO.db.query", (MESSAGE % i + "\n").encode()] for i in range(n)]
    with scratch("bridge") as tmp:
        endpoint = tcp_endpoint()
        proc = zlogcollect(
            "bridge",
            ["--bind", endpoint, "--amqp-url", broker.url, "--declare-queue", f"{QUEUE}={BINDING}"],
            tmp,
        )
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        try:
            probes = prime_bridge(proc, sock, broker)
            for frames in records:
                sock.send_multipart(frames)
            t0 = time.perf_counter()
            proc.send(signal.SIGCONT)
            t1 = broker.wait_depth(n, 300, f"{n} records from the bridge")

            def confirmed() -> bool:
                return int(counters(proc)["amqp"].get("delivered", 0)) >= n + probes

            t2 = wait_until(confirmed, 60, "the bridge's confirms", interval=0.02)
            return n / (t1 - t0), n / (t2 - t0)
        finally:
            sock.close(0)
            ctx.term()
            proc.stop()


def publisher_once(
    broker: Broker, make: Callable[[], Proc], n: int, stop_line: str | None = None
) -> tuple[float, Any]:
    """A publisher worker gets ready, then "go": records/s until the queue holds *n* messages."""
    proc = make()
    try:
        proc.wait_stdout(timeout=120)
        broker.purge()
        t0 = time.perf_counter()
        proc.tell("go")
        t1 = broker.wait_depth(n, 300, f"{n} records from {proc.name}")
        if stop_line is not None:
            proc.tell(stop_line)
            proc.popen.wait(30)
            return n / (t1 - t0), None
        return n / (t1 - t0), proc.wait_json(60)
    finally:
        proc.kill()


def rabbit_missing() -> str | None:
    """Why the AMQP scenarios cannot run here (pika or Debian's rabbitmq-server missing), or None."""
    try:
        import pika  # noqa: F401

        from zlogcollect.testing.rabbitmq import RabbitNode
    except ImportError as exc:
        return f"needs pika and zlogcollect/testing/rabbitmq.py ({exc})"
    if not RabbitNode.available():
        return "Debian's rabbitmq-server is not installed here (apt-get install rabbitmq-server)"
    return None


def run(settings: Settings, outcome: Outcome) -> None:
    outcome.skipped = rabbit_missing()
    if outcome.skipped:
        return
    try:
        import python_logging_rabbitmq  # noqa: F401

        oneway = True
    except ImportError:
        oneway = False
        outcome.notes.append("python-logging-rabbitmq is not installed: RabbitMQHandlerOneWay not measured")
    n = settings.pick(30_000, 500)
    n_blocking = settings.pick(3_000, 300)
    outcome.notes.append(
        f"bridge: {n:,} records pre-queued at a SIGSTOPped `zlogcollect bridge`, timed from SIGCONT until the "
        "queue holds them all (queue_declare passive every 10 ms), and until the bridge counts every confirm"
    )
    outcome.notes.append(
        f"raw pika: {n:,} messages ({n_blocking:,} for BlockingConnection) with the bridge's body, properties and "
        "mandatory flag, timed from 'go' until the queue holds them all"
    )
    if oneway:
        outcome.notes.append(
            "RabbitMQHandlerOneWay publishes WITHOUT confirms (delivery is not known to the app); "
            "its records are logged into its queue before its worker thread starts"
        )
    progress("bridge: starting a private RabbitMQ node")
    broker = Broker()
    try:
        progress(f"bridge: RabbitMQ up on port {broker.port} in {broker.node.last_start_seconds:.1f} s")
        for run_index in range(settings.runs):
            queued, confirmed = bridge_once(broker, n)
            outcome.figure("zlogcollect bridge (until queued)", "records/s").values.append(queued)
            outcome.figure("zlogcollect bridge (until confirmed)", "records/s").values.append(confirmed)
            progress(f"bridge run {run_index + 1}: zlogcollect bridge: {queued:,.0f} records/s")
            rate, _ = publisher_once(
                broker,
                lambda: worker(
                    "pika_blocking", stdin=True, url=broker.url, count=n_blocking, max_seconds=300
                ),
                n_blocking,
            )
            outcome.figure("pika BlockingConnection + confirm_delivery()", "records/s").values.append(rate)
            progress(f"bridge run {run_index + 1}: pika BlockingConnection: {rate:,.0f} records/s")
            rate, _ = publisher_once(
                broker,
                lambda: worker(
                    "pika_select", stdin=True, url=broker.url, count=n, window=256, max_seconds=300
                ),
                n,
            )
            outcome.figure("pika SelectConnection, async confirms, window 256", "records/s").values.append(
                rate
            )
            progress(f"bridge run {run_index + 1}: pika SelectConnection: {rate:,.0f} records/s")
            if oneway:
                rate, _ = publisher_once(
                    broker,
                    lambda: worker("oneway", stdin=True, port=broker.port, count=n, max_seconds=300),
                    n,
                    stop_line="stop",
                )
                outcome.figure("RabbitMQHandlerOneWay (no confirms)", "records/s").values.append(rate)
                progress(f"bridge run {run_index + 1}: RabbitMQHandlerOneWay: {rate:,.0f} records/s")
    finally:
        broker.close()
    bridge = "zlogcollect bridge (until queued)"
    outcome.ratio_check(
        "bridge / pika BlockingConnection with confirms",
        bridge,
        "pika BlockingConnection + confirm_delivery()",
        0.8,
    )
    outcome.ratio_check(
        "bridge / pika SelectConnection, window 256 (best pika does)",
        bridge,
        "pika SelectConnection, async confirms, window 256",
        0.8,
    )
    if oneway:
        outcome.derived["bridge / RabbitMQHandlerOneWay (no confirms)"] = outcome.ratio(
            bridge, "RabbitMQHandlerOneWay (no confirms)"
        )
