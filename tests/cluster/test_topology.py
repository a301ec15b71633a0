"""`zlogcollect topology declare` on a real three-node cluster, fed by a real bridge.

apps (ZLogHandler) ─ZMQ─▶ `zlogcollect bridge` ─▶ per-test exchange ─▶ consistent-hash
exchange (on the "source" header) ─▶ quorum queues with single active consumer ─▶ pika
consumers. Each test uses its own exchanges and queues (deleted before and after), so
the session's cluster carries nothing from one test into the next.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from tests.cluster.helpers import (
    Apps,
    Record,
    Topology,
    assert_exactly_once_in_order,
    bridge,
    channel,
    drain,
)
from tests.helpers import CollectorProcess, wait_until
from zlogcollect.exits import ExitStatus
from zlogcollect.testing.process import Child
from zlogcollect.testing.rabbitmq import RabbitCluster


def test_declare_is_idempotent_and_dry_run_declares_nothing(
    cluster_urls: list[str], topology: Topology
) -> None:
    """--dry-run prints the plan and touches nothing; declaring twice gives the same queues, no error."""
    dry = subprocess.run(
        [sys.executable, "-m", "zlogcollect", "topology", "declare", cluster_urls[1], "--dry-run",
         "--queue-prefix", topology.prefix],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "x-single-active-consumer=True" in dry.stdout and "guest:***@" in dry.stdout
    assert ":guest@" not in dry.stdout + dry.stderr
    with pytest.raises(pika.exceptions.ChannelClosedByBroker), channel(cluster_urls[0]) as ch:
        ch.queue_declare(topology.queues[0], passive=True)
    for _ in range(2):
        result = topology.declare(cluster_urls[1])
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("declared queue") == topology.shards
        assert "warning" not in result.stderr
    # Fewer shards than before: the last queue is still bound, and the operator is told.
    fewer = topology.declare(cluster_urls[0], shards=topology.shards - 1)
    assert fewer.returncode == 0, fewer.stderr
    last = topology.queues[-1]
    assert f"warning: queue {last!r} exists (an earlier declare had more shards)" in fewer.stderr
    with channel(cluster_urls[2]) as ch:
        for queue in topology.queues:
            # Declared on node 2, seen from node 3: a quorum queue with these arguments (else 406).
            ch.queue_declare(
                queue,
                durable=True,
                arguments={"x-queue-type": "quorum", "x-single-active-consumer": True},
            )


def test_a_missing_bridge_exchange_is_one_line_saying_what_to_do(
    cluster_urls: list[str], topology: Topology
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zlogcollect", "topology", "declare", cluster_urls[0],
         "--source-exchange", topology.source, "--exchange", topology.exchange, "--queue-prefix", topology.prefix],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == ExitStatus.CONFIG, result.stderr
    assert result.stderr == (
        f"zlogcollect: error: exchange {topology.source!r} does not exist: start the bridge with"
        " --declare-exchange first, or pass --declare-source-exchange\n"
    )


def test_each_source_lands_in_exactly_one_queue_in_order(
    cluster_urls: list[str], topology: Topology, collectors: list[CollectorProcess]
) -> None:
    """Six apps through a real bridge: every source's records, whatever their level, in one queue, in order."""
    assert topology.declare(cluster_urls[0]).returncode == 0
    endpoint = bridge(collectors, cluster_urls[0], topology.source)
    sources = [f"app{i}" for i in range(6)]
    apps = Apps(endpoint, sources, per_source=150, rate=3000)
    apps.start()
    apps.close()
    total = len(sources) * 150
    wait_until(lambda: sum(topology.lengths(cluster_urls[1])) >= total, 30, what=f"{total} records queued")
    owner: dict[str, str] = {}
    everything: list[Record] = []
    for queue in topology.queues:
        records = drain(cluster_urls[1], queue)
        everything += records
        for source in {s for s, _ in records}:
            assert source not in owner, f"{source} is in {owner.get(source)} and {queue}"
            owner[source] = queue
    assert sorted(owner) == sources
    assert len(set(owner.values())) > 1, "the hash put every source in one queue"
    assert_exactly_once_in_order(everything, sources, 150)


CONSUMER = """
import json, sys, pika
url, queue, out = sys.argv[1:4]
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.basic_qos(prefetch_count=20)
with open(out, "a", buffering=1) as f:
    print("consuming", file=sys.stderr, flush=True)
    def take(ch, method, props, body):
        record = json.loads(body)
        f.write(f"{record['source']} {record['msg'].split()[1]}\\n")
        ch.basic_ack(method.delivery_tag)  # after the line is written: at-least-once
    ch.basic_consume(queue, take)
    ch.start_consuming()
"""


def lines(path: Path) -> list[Record]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [
        (s, int(n))
        for s, n in (line.split() for line in text.splitlines() if line.endswith(tuple("0123456789")))
    ]


@pytest.mark.parametrize("topology", [1], indirect=True)
def test_the_standby_consumer_takes_over_when_the_active_one_is_killed(
    cluster_urls: list[str],
    topology: Topology,
    collectors: list[CollectorProcess],
    children: list[Child],
    tmp_path: Path,
) -> None:
    """Single active consumer: the standby gets nothing until kill -9 of the active one, then the rest."""
    assert topology.declare(cluster_urls[0]).returncode == 0
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    out_a, out_b = tmp_path / "a.txt", tmp_path / "b.txt"
    queue = topology.queues[0]

    def consumer(url: str, out: Path) -> Child:
        child = Child([sys.executable, str(script), url, queue, str(out)], name=out.stem)
        children.append(child)
        wait_until(lambda: "consuming" in child.stderr, 20, what=f"consumer {out.stem} connected")
        return child

    active = consumer(cluster_urls[1], out_a)
    endpoint = bridge(collectors, cluster_urls[0], topology.source)
    sources = ["app1", "app2"]
    apps = Apps(endpoint, sources, per_source=300, rate=300)  # 2 s of traffic
    apps.start()
    wait_until(lambda: len(lines(out_a)) >= 50, 20, what="the first consumer's records")
    # Registered second, on another node: the standby.
    consumer(cluster_urls[2], out_b)
    wait_until(lambda: len(lines(out_a)) >= 200, 20, what="more records to the active consumer")
    assert lines(out_b) == [], "the standby consumer got records while the active one lived"
    active.popen.send_signal(signal.SIGKILL)
    active.popen.wait(10)
    apps.close()
    total = len(sources) * 300
    wait_until(lambda: len(set(lines(out_a) + lines(out_b))) >= total, 30, what="every record consumed")
    first, second = lines(out_a), lines(out_b)
    assert second, "the standby took nothing over"
    # At-least-once: what the killed one wrote but had not acked comes again, at the seam only.
    for source in sources:
        numbers = [n for s, n in first if s == source] + [n for s, n in second if s == source]
        resumed = [n for s, n in second if s == source]
        assert sorted(set(numbers)) == list(range(300)), f"{source}: records lost"
        assert resumed == sorted(resumed), f"{source}: out of order after the take-over"
        assert len(numbers) - 300 <= 20, f"{source}: more duplicates than the prefetch window"


@pytest.mark.parametrize("topology", [2], indirect=True)
def test_a_broker_node_killed_mid_stream_loses_and_duplicates_nothing(
    rabbit_cluster: RabbitCluster,
    cluster_urls: list[str],
    topology: Topology,
    collectors: list[CollectorProcess],
) -> None:
    """The queues' leader node is SIGKILLed while the bridge publishes: the other two keep a majority,
    elect new leaders and hold each record once, in order (the bridge's own node stops gracefully in
    the next test)."""
    # Declared through node 3, so the queues' leaders are there (client-local leader locator).
    assert topology.declare(cluster_urls[2]).returncode == 0
    endpoint = bridge(collectors, cluster_urls[0], topology.source)
    sources = ["app1", "app2", "app3"]
    apps = Apps(endpoint, sources, per_source=400, rate=600)  # 2 s of traffic
    apps.start()
    wait_until(lambda: sum(topology.lengths(cluster_urls[0])) >= 300, 20, what="records before the crash")
    rabbit_cluster.crash_node(2)
    apps.close()
    total = len(sources) * 400
    wait_until(
        lambda: sum(topology.lengths(cluster_urls[1])) >= total, 60, what=f"{total} records with a node down"
    )
    everything = [record for queue in topology.queues for record in drain(cluster_urls[1], queue)]
    assert len(everything) == total
    assert_exactly_once_in_order(everything, sources, 400)


@pytest.mark.parametrize("topology", [2], indirect=True)
def test_the_bridge_moves_to_the_next_node_when_its_node_stops(
    rabbit_cluster: RabbitCluster,
    cluster_urls: list[str],
    topology: Topology,
    collectors: list[CollectorProcess],
    tmp_path: Path,
) -> None:
    """--amqp-node: the bridge's own node stops mid-stream; it goes on through the next, losing nothing.

    Records whose confirm was lost with the connection are re-sent (at-least-once): a
    duplicate carries the same message_id, and there are at most the confirm window's.
    """
    assert topology.declare(cluster_urls[1]).returncode == 0
    nodes = [url.split("@")[1].split("/")[0] for url in cluster_urls[1:]]
    endpoint = bridge(
        collectors, cluster_urls[0], topology.source, "--amqp-node", nodes[0], "--amqp-node", nodes[1],
        "--stats-file", str(tmp_path / "stats.json"),
    )  # fmt: skip
    proc = collectors[-1]
    sources = ["app1", "app2"]
    apps = Apps(endpoint, sources, per_source=500, rate=500)  # 2 s of traffic
    apps.start()
    wait_until(lambda: sum(topology.lengths(cluster_urls[1])) >= 200, 20, what="records before the stop")
    rabbit_cluster.stop_node(0)
    apps.close()
    total = len(sources) * 500
    wait_until(lambda: sum(topology.lengths(cluster_urls[1])) >= total, 60, what=f"{total} records")
    wait_until(lambda: "AMQP: connected to amqp://guest:***@" in proc.stderr, 10, what="the reconnection")
    everything = [record for queue in topology.queues for record in drain(cluster_urls[2], queue)]
    assert set(everything) == {(s, n) for s in sources for n in range(500)}, "records lost"
    assert len(everything) - total <= 256, "more duplicates than the confirm window"
    for source in sources:
        numbers = [n for s, n in everything if s == source]
        first_seen = sorted(set(numbers), key=numbers.index)
        assert first_seen == list(range(500)), f"{source}: out of order"
    assert proc.stop() == 0
    assert proc.counters()["amqp"]["node_switches"] >= 1
