"""`zlogcollect topology declare`'s plan from its options (pure); the command itself: tests/e2e/test_topology_cli.py."""

from __future__ import annotations

import pytest

from zlogcollect.topology import (
    ExchangeBind,
    ExchangeDeclare,
    QueueBind,
    QueueDeclare,
    TopologyError,
    TopologyOptions,
    plan,
)


def test_the_default_plan_shards_on_the_source_header_into_quorum_sac_queues() -> None:
    steps = plan(TopologyOptions())
    assert steps[0] == ExchangeDeclare("zlogcollect.shards", "x-consistent-hash", {"hash-header": "source"})
    # Everything the bridge publishes to amq.topic (any routing key) reaches the hash exchange.
    assert steps[1] == ExchangeBind("zlogcollect.shards", "amq.topic", "#")
    queues = [s for s in steps if isinstance(s, QueueDeclare)]
    assert [q.name for q in queues] == [f"zlogcollect.shard.{i}" for i in range(4)]
    for queue in queues:
        assert queue.arguments == {"x-queue-type": "quorum", "x-single-active-consumer": True}
    binds = [s for s in steps if isinstance(s, QueueBind)]
    # Equal weights: the binding key is the weight for a consistent-hash exchange.
    assert [(b.queue, b.exchange, b.routing_key) for b in binds] == [
        (q.name, "zlogcollect.shards", "1") for q in queues
    ]


def test_options_name_everything_and_a_fanout_source_binds_with_an_empty_key() -> None:
    options = TopologyOptions(
        shards=2,
        exchange="logs.hash",
        queue_prefix="logs.q",
        source_exchange="logs",
        source_exchange_type="fanout",
        declare_source_exchange=True,
    )
    steps = plan(options)
    assert steps[0] == ExchangeDeclare("logs", "fanout", {})
    assert steps[2] == ExchangeBind("logs.hash", "logs", "")
    assert [s.name for s in steps if isinstance(s, QueueDeclare)] == ["logs.q.0", "logs.q.1"]
    assert "weight 1" in steps[-1].describe() and "'logs.q.1'" in steps[-1].describe()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (TopologyOptions(shards=0), "--shards 0: expected 1 to 1000"),
        (TopologyOptions(shards=1001), "--shards 1001"),
        (TopologyOptions(exchange=""), "--exchange: empty name"),
        (TopologyOptions(exchange="amq.mine"), "reserved"),
        (TopologyOptions(queue_prefix="a\nb"), "control character"),
        (TopologyOptions(queue_prefix="bad\udcff"), "not valid UTF-8"),
        (TopologyOptions(queue_prefix="x" * 300), "longer than 255 bytes"),
        (TopologyOptions(queue_prefix="x" * 252, shards=1000), "longer than 255 bytes"),  # x...x.999
        (TopologyOptions(queue_prefix="x" * 254, shards=10), "longer than 255 bytes"),  # x...x.9
        (TopologyOptions(exchange="amq.topic"), "reserved"),
        (TopologyOptions(exchange="logs", source_exchange="logs"), "must differ"),
        (TopologyOptions(source_exchange_type="direct"), "only for topic and fanout"),
        (TopologyOptions(source_exchange="amq.topic", declare_source_exchange=True), "reserved"),
    ],
)
def test_options_that_cannot_work_are_one_clear_error(options: TopologyOptions, message: str) -> None:
    with pytest.raises(TopologyError, match=message.replace(".", r"\.")):
        plan(options)
