"""The whole path of issue 15: apps → bridge → cluster → file writers (`collect --from-amqp`).

Skipped until the writer (`zlogcollect collect --from-amqp URL --queue NAME`) is in the
package; they run as soon as it is. Files are checked in the default text format: the
message is the line's last field (`n 17`), the file is `SOURCE.log` under the writer's --dir.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.cluster.helpers import Apps, Topology, bridge
from tests.helpers import CollectorProcess, wait_until
from zlogcollect.cli import cli
from zlogcollect.testing.rabbitmq import RabbitCluster


def _has_writer() -> bool:
    """Whether `zlogcollect collect --help` lists --from-amqp (read from the click command itself)."""
    return any("--from-amqp" in param.opts for param in cli.commands["collect"].params)


pytestmark = pytest.mark.skipif(not _has_writer(), reason="needs collect --from-amqp")

SOURCES = ["app1", "app2", "app3"]


def numbers(directory: Path, source: str) -> list[int]:
    """The record numbers in DIR/SOURCE.log, in file order."""
    try:
        text = (directory / f"{source}.log").read_text()
    except FileNotFoundError:
        return []
    return [int(line.rsplit(" | ", 1)[1].split()[1]) for line in text.splitlines() if " | n " in line]


def writer(
    collectors: list[CollectorProcess], url: str, queues: list[str], directory: Path, *extra: str
) -> CollectorProcess:
    args = ["--from-amqp", url, "--dir", str(directory), *extra]
    for queue in queues:
        args += ["--queue", queue]
    proc = CollectorProcess(args)
    collectors.append(proc)
    proc.wait_ready()
    return proc


def total_in(directories: list[Path]) -> int:
    return sum(len(set(numbers(d, s))) for d in directories for s in SOURCES)


@pytest.mark.parametrize("topology", [1], indirect=True)
def test_two_writers_kill_9_the_active_one_the_standby_writes_the_rest(
    cluster_urls: list[str], topology: Topology, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    """Single active consumer over two writers: the active one is SIGKILLed mid-stream, the standby
    (its own --dir, as on another host) writes the rest; together they hold every record, each
    source in order, and the only repeats are what the dead one wrote but had not acknowledged."""
    assert topology.declare(cluster_urls[0]).returncode == 0
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    # Both subscribe before any traffic; the first to subscribe is the active one.
    active = writer(collectors, cluster_urls[1], topology.queues, dir_a)
    standby = writer(collectors, cluster_urls[2], topology.queues, dir_b)
    endpoint = bridge(collectors, cluster_urls[0], topology.source)
    apps = Apps(endpoint, SOURCES, per_source=400, rate=300)  # 4 s of traffic
    apps.start()
    wait_until(lambda: total_in([dir_a]) >= 300, 20, what="records to the active writer")
    assert total_in([dir_b]) == 0, "the standby wrote while the active writer lived"
    active.proc.send_signal(signal.SIGKILL)
    active.proc.wait(10)
    apps.close()
    wait_until(
        lambda: all(set(numbers(dir_a, s)) | set(numbers(dir_b, s)) == set(range(400)) for s in SOURCES),
        30,
        what="every record in the files",
    )
    assert total_in([dir_b]) > 0, "the standby took nothing over"
    for source in SOURCES:
        first, second = numbers(dir_a, source), numbers(dir_b, source)
        assert first == sorted(set(first)) and second == sorted(set(second)), (
            f"{source}: out of order or doubled"
        )
        repeated = set(first) & set(second)
        # Only at the seam: what A wrote last (unacknowledged when it died) came again to B.
        assert not repeated or min(repeated) > max(set(first) - repeated, default=-1)
    assert standby.stop() == 0


@pytest.mark.parametrize("topology", [2], indirect=True)
def test_a_writer_restarted_on_its_dir_writes_nothing_twice(
    cluster_urls: list[str], topology: Topology, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    """kill -9 a writer mid-stream and start it again on the same --dir: each record once in the files."""
    assert topology.declare(cluster_urls[0]).returncode == 0
    logs = tmp_path / "logs"
    first = writer(collectors, cluster_urls[1], topology.queues, logs)
    endpoint = bridge(collectors, cluster_urls[0], topology.source)
    apps = Apps(endpoint, SOURCES, per_source=400, rate=400)  # 3 s of traffic
    apps.start()
    wait_until(lambda: total_in([logs]) >= 300, 20, what="records before the kill")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    again = writer(collectors, cluster_urls[1], topology.queues, logs)
    apps.close()
    wait_until(lambda: total_in([logs]) >= 400 * len(SOURCES), 30, what="every record in the files")
    assert again.stop() == 0
    for source in SOURCES:
        assert numbers(logs, source) == list(range(400)), f"{source}: lost, doubled or out of order"


@pytest.mark.parametrize("topology", [2], indirect=True)
def test_a_broker_node_stopped_mid_stream_leaves_each_record_once_in_the_files(
    rabbit_cluster: RabbitCluster,
    cluster_urls: list[str],
    topology: Topology,
    collectors: list[CollectorProcess],
    tmp_path: Path,
) -> None:
    """The bridge's node (and the queues' leader) stops: the bridge moves on (--amqp-node) and re-sends
    what was unconfirmed; the writer drops those repeats by message_id: each record once, in order."""
    assert topology.declare(cluster_urls[0]).returncode == 0
    logs = tmp_path / "logs"
    writer(collectors, cluster_urls[1], topology.queues, logs)
    nodes = [url.split("@")[1].split("/")[0] for url in cluster_urls[1:]]
    endpoint = bridge(
        collectors, cluster_urls[0], topology.source, "--amqp-node", nodes[0], "--amqp-node", nodes[1]
    )
    stream_through_a_node_stop(rabbit_cluster, endpoint, logs, 0)


def stream_through_a_node_stop(rabbit_cluster: RabbitCluster, endpoint: str, logs: Path, node: int) -> None:
    """400 records per source through *endpoint*, broker node *node* stopped after the first 200 are
    written: every record in the files once, in order."""
    apps = Apps(endpoint, SOURCES, per_source=400, rate=600)
    apps.start()
    wait_until(lambda: total_in([logs]) >= 200, 20, what="records before the stop")
    rabbit_cluster.stop_node(node)
    apps.close()
    wait_until(lambda: total_in([logs]) >= 400 * len(SOURCES), 60, what="every record in the files")
    for source in SOURCES:
        assert numbers(logs, source) == list(range(400)), f"{source}: lost, doubled or out of order"


@pytest.mark.parametrize("topology", [2], indirect=True)
def test_the_writers_node_stopped_mid_stream_it_moves_to_the_next_node(
    rabbit_cluster: RabbitCluster,
    cluster_urls: list[str],
    topology: Topology,
    collectors: list[CollectorProcess],
    tmp_path: Path,
) -> None:
    """The writer's own node stops: it reconnects to the next --amqp-node, gets again what it had not
    acknowledged and drops what it had written: each record once, in order."""
    assert topology.declare(cluster_urls[0]).returncode == 0
    logs = tmp_path / "logs"
    hosts = [url.split("@")[1].split("/")[0] for url in cluster_urls]
    proc = writer(
        collectors, cluster_urls[1], topology.queues, logs, "--amqp-node", hosts[2], "--amqp-node", hosts[0]
    )
    endpoint = bridge(collectors, cluster_urls[0], topology.source, "--amqp-node", hosts[2])
    stream_through_a_node_stop(rabbit_cluster, endpoint, logs, 1)
    counts = proc.ask_counters()["amqp"]
    assert counts["node_switches"] >= 1 and counts["reconnects"] >= 1, counts
    assert proc.stop() == 0
