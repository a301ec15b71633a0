"""Round trips through the private RabbitMQ node, including stop/restart and crash/restart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from zlogcollect.testing.rabbitmq import RabbitNode

ROUTING_KEY = "app1.ERROR.db"
BINDING_KEY = "app1.ERROR.#"


@pytest.fixture
def queue_name() -> str:
    # Unique per test: the node is shared by the whole session.
    return f"test-{uuid.uuid4().hex[:12]}"


def _connect(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    # Fail fast instead of pika's long default retries when the broker is down.
    params.connection_attempts = 1
    params.socket_timeout = 5
    return pika.BlockingConnection(params)


def _declare(channel: BlockingChannel, queue: str) -> None:
    channel.queue_declare(queue=queue, durable=True)
    channel.queue_bind(queue=queue, exchange="amq.topic", routing_key=BINDING_KEY)


def _publish_confirmed(url: str, queue: str, bodies: list[bytes]) -> None:
    """Declare `queue`, publish `bodies` persistent with confirms; each confirm is waited for."""
    with _connect(url) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        _declare(channel, queue)
        for body in bodies:
            # mandatory=True: an unroutable message raises instead of vanishing.
            channel.basic_publish(
                exchange="amq.topic",
                routing_key=ROUTING_KEY,
                body=body,
                properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
                mandatory=True,
            )


def _consume(url: str, queue: str, count: int) -> list[bytes]:
    """Consume up to `count` messages from `queue` (acking them), giving up after 5 s of silence."""
    received: list[bytes] = []
    with _connect(url) as conn:
        channel = conn.channel()
        messages: Iterator[tuple[object, object, bytes | None]] = channel.consume(queue, inactivity_timeout=5)
        for method, _props, body in messages:
            if body is None:  # inactivity timeout
                break
            assert isinstance(method, pika.spec.Basic.Deliver)
            channel.basic_ack(method.delivery_tag)
            received.append(body)
            if len(received) == count:
                break
        channel.cancel()
    return received


def _delete(url: str, queue: str) -> None:
    with _connect(url) as conn:
        conn.channel().queue_delete(queue)


def test_topic_round_trip(rabbit_url: str, queue_name: str) -> None:
    """A persistent, confirmed message on amq.topic reaches a durable queue bound with app1.ERROR.#."""
    bodies = [b'{"msg": "disk full", "n": %d}' % i for i in range(3)]
    _publish_confirmed(rabbit_url, queue_name, bodies)

    assert _consume(rabbit_url, queue_name, len(bodies)) == bodies
    _delete(rabbit_url, queue_name)


def test_non_matching_key_is_not_routed(rabbit_url: str, queue_name: str) -> None:
    """A message whose routing key does not match app1.ERROR.# never reaches the bound queue."""
    with _connect(rabbit_url) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        _declare(channel, queue_name)
        # Not mandatory: other tests' queues on the shared node may well match it.
        channel.basic_publish(exchange="amq.topic", routing_key="app1.INFO.db", body=b"not for us")
        # app1.ERROR matches app1.ERROR.# too: '#' also matches zero words.
        channel.basic_publish(exchange="amq.topic", routing_key="app1.ERROR", body=b"for us")
        # Both are confirmed, so both are routed already: the count is final.
        assert channel.queue_declare(queue=queue_name, passive=True).method.message_count == 1

    assert _consume(rabbit_url, queue_name, 1) == [b"for us"]
    _delete(rabbit_url, queue_name)


def test_graceful_restart_keeps_durable_messages(
    rabbit: RabbitNode, rabbit_url: str, queue_name: str
) -> None:
    """A confirmed persistent message in a durable queue survives stop() and restart(keep_data=True)."""
    _publish_confirmed(rabbit_url, queue_name, [b"survivor"])

    rabbit.stop()
    assert not rabbit.running
    rabbit.restart(keep_data=True)

    assert rabbit.url == rabbit_url  # same port: clients can reconnect to the same URL
    assert _consume(rabbit_url, queue_name, 1) == [b"survivor"]
    _delete(rabbit_url, queue_name)


def test_crash_then_restart(rabbit: RabbitNode, rabbit_url: str, queue_name: str) -> None:
    """After crash() the node restarts on its data: confirmed persistent messages are kept and AMQP works."""
    _publish_confirmed(rabbit_url, queue_name, [b"confirmed before crash"])

    rabbit.crash()
    assert not rabbit.running
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        _connect(rabbit_url).close()
    rabbit.restart()

    assert _consume(rabbit_url, queue_name, 1) == [b"confirmed before crash"]
    _publish_confirmed(rabbit_url, queue_name, [b"after restart"])
    assert _consume(rabbit_url, queue_name, 1) == [b"after restart"]
    _delete(rabbit_url, queue_name)


def test_ctl_lists_declared_queue(rabbit: RabbitNode, rabbit_url: str, queue_name: str) -> None:
    """ctl() talks to the private node and sees a queue declared over AMQP."""
    with _connect(rabbit_url) as conn:
        channel = conn.channel()
        _declare(channel, queue_name)
        assert queue_name in rabbit.ctl("list_queues", "-q", "name", "durable")
        channel.queue_delete(queue_name)
