"""--http on a bridge with a real broker: the AMQP families count what the broker confirmed; /healthz follows it."""

from __future__ import annotations

import pytest

from tests.amqp.test_bridge import connect_sender, declare, drain, launch
from tests.e2e.test_http import health, scrape
from tests.helpers import CollectorProcess, short_ipc_endpoint, wait_until
from zlogcollect.testing.process import free_port
from zlogcollect.testing.rabbitmq import RabbitNode

pytestmark = pytest.mark.amqp


def value(address: str, name: str) -> float:
    return scrape(address)[(name, ())]


def test_amqp_metrics_and_health_follow_the_broker(
    rabbit: RabbitNode, rabbit_url: str, collectors: list[CollectorProcess]
) -> None:
    """Confirmed equals received once the broker took everything; broker away + buffer over 80 % = 503, back = 200."""
    endpoint = short_ipc_endpoint()
    address = f"127.0.0.1:{free_port()}"
    declare(rabbit_url, "httpq", "httpapp.#")
    proc = launch(
        collectors,
        "bridge",
        "--bind",
        endpoint,
        "--amqp-url",
        rabbit_url,
        "--buffer",
        "1000",
        "--http",
        address,
    )
    sender = connect_sender(endpoint, "httpapp", rabbit_url)
    try:
        for i in range(200):
            sender.logger.info("record %d", i)

        def all_confirmed() -> bool:
            samples = scrape(address)
            received = samples[("zlogcollect_records_received_total", ())]
            return received >= 200 and samples[("zlogcollect_amqp_confirmed_total", ())] == received

        wait_until(all_confirmed, timeout=30, what="every record confirmed")
        samples = scrape(address)
        assert (
            samples[("zlogcollect_amqp_published_total", ())]
            >= samples[("zlogcollect_amqp_confirmed_total", ())]
        )
        assert samples[("zlogcollect_amqp_buffered", ())] == 0
        assert samples[("zlogcollect_amqp_connected", ())] == 1
        assert samples[("zlogcollect_amqp_dropped_total", ())] == 0
        status, body = health(address)
        assert status == 200 and body["amqp"] == {"connected": True, "buffered": 0, "buffer": 1000}

        rabbit.stop()
        wait_until(
            lambda: value(address, "zlogcollect_amqp_connected") == 0, timeout=30, what="the link lost"
        )
        assert health(address)[0] == 200  # away, but the buffer is empty: nothing is at risk yet
        for i in range(850):
            sender.logger.info("while away %d", i)
        wait_until(lambda: health(address)[0] == 503, timeout=20, what="/healthz to fail")
        assert "AMQP" in health(address)[1]["problems"][0]
        rabbit.restart(keep_data=True)
        wait_until(lambda: health(address)[0] == 200, timeout=60, what="/healthz to recover")
        wait_until(
            lambda: value(address, "zlogcollect_amqp_buffered") == 0, timeout=30, what="the buffer sent"
        )
    finally:
        sender.close()
    assert proc.stop() == 0
    assert len(drain(rabbit.url, "httpq")) == 1050
