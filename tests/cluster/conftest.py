"""The tests in this directory need the private three-node RabbitMQ cluster, started once per session.

Marked ``cluster``: ``scripts/test --quick`` and ``-m "not cluster"`` leave them out;
under CI=true a missing rabbitmq-server fails them instead of skipping (as tests/amqp).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import Topology
from tests.helpers import broker_unavailable
from zlogcollect.testing.rabbitmq import RabbitCluster, RabbitNode, RabbitNodeError

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Hooks in a sub-directory conftest see every item of the session: mark only ours.
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """Three clustered RabbitMQ nodes with the consistent-hash plugin, shared by the session.

    A test that stops or crashes a node starts it again before it ends
    (`cluster_urls` also brings back any node left down).
    """
    if not RabbitNode.available():
        broker_unavailable(
            "rabbitmq-server is not installed (apt-get install --no-install-recommends rabbitmq-server)"
        )
    try:
        cluster = RabbitCluster(size=3)
    except RabbitNodeError as exc:
        broker_unavailable(f"cannot set up a RabbitMQ cluster: {exc}")
    t0 = time.monotonic()
    try:
        cluster.start()
    except (RabbitNodeError, OSError) as exc:
        cluster.close()
        broker_unavailable(f"the RabbitMQ cluster failed to start: {exc}")
    print(f"\nRabbitMQ cluster of 3 nodes started in {time.monotonic() - t0:.1f} s")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster_urls(rabbit_cluster: RabbitCluster) -> list[str]:
    """Every node's AMQP URL, after starting again any node an earlier test left down."""
    for index, node in enumerate(rabbit_cluster.nodes):
        if not node.running:
            try:
                rabbit_cluster.start_node(index)
            except RabbitNodeError as exc:
                pytest.fail(f"RabbitMQ node {node.nodename} could not be restarted: {exc}", pytrace=False)
    return rabbit_cluster.urls


@pytest.fixture
def topology(
    request: pytest.FixtureRequest, rabbit_cluster: RabbitCluster, cluster_urls: list[str]
) -> Iterator[Topology]:
    # A fixed name per test: the hash ring (hence which queue a source lands in) is
    # then the same every run.
    made = Topology(f"t-{request.node.name[5:30]}", shards=getattr(request, "param", 3))
    made.delete(cluster_urls[0])
    yield made
    # Through a node that is up: a test may have stopped one.
    made.delete(next(node.url for node in rabbit_cluster.nodes if node.running))
