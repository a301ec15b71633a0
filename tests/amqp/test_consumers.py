"""Consumers written for the seed article and for python-logging-rabbitmq work on the bridge unchanged."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.amqp.test_bridge import channel, connect_sender, launch, queue_length
from tests.helpers import CollectorProcess, short_ipc_endpoint, wait_until
from tests.helpers_handler import private_logger
from zlogcollect.handler import ZLogHandler

# Every numeric and text field of a standard LogRecord, as a consumer might format them.
CONSUMER = textwrap.dedent(
    """
    import json, logging, sys
    import pika

    FORMAT = (
        "%(name)s|%(levelno)d|%(levelname)s|%(pathname)s|%(filename)s|%(module)s|%(lineno)d|"
        "%(funcName)s|%(created)f|%(msecs)d|%(relativeCreated)d|%(thread)d|%(threadName)s|"
        "%(processName)s|%(process)d|%(asctime)s|%(message)s"
    )
    url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    formatter = logging.Formatter(FORMAT)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    ch = connection.channel()
    seen = []

    def on_message(ch, method, properties, body):
        # What a python-logging-rabbitmq consumer does with a message.
        record = logging.makeLogRecord(json.loads(body))
        seen.append({"key": method.routing_key, "subtopic": (properties.headers or {}).get("subtopic"),
                     "text": formatter.format(record), "record": record.__dict__})
        ch.basic_ack(method.delivery_tag)
        if len(seen) >= count:
            ch.stop_consuming()

    ch.basic_consume(queue, on_message)
    connection.call_later(20, ch.stop_consuming)
    ch.start_consuming()
    connection.close()
    print(json.dumps(seen, default=str))
    """
)


def test_seed_and_python_logging_rabbitmq_consumers_read_both_handlers(
    rabbit_url: str, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    """The seed's exact binding app1.ERROR gets records with subtopics; makeLogRecord + any field formats."""
    endpoint = short_ipc_endpoint()
    with channel(rabbit_url) as ch:
        ch.queue_delete("app1-error")
        ch.queue_declare("app1-error", durable=True)
        ch.queue_bind("app1-error", "amq.topic", "app1.ERROR")  # the seed's exact key, no '#'
    launch(collectors, "bridge", "--bind", endpoint, "--amqp-url", rabbit_url)
    stock = connect_sender(endpoint, "app1", rabbit_url)
    handler = ZLogHandler(endpoint, app="app1")
    app = private_logger("shop.orders", handler)
    try:
        stock.logger.error("db.query::stock timeout after %d ms", 30)
        app.error("db.query::zlog timeout after %d ms", 30)
        empty: dict[str, int] = {}
        try:
            empty["k"]
        except KeyError:
            app.exception("lookup failed")
        app.error("with extras", extra={"source": "app1-producer", "env": "dev", "ratio": math.nan})
        app.info("not an error")
        wait_until(lambda: queue_length(rabbit_url, "app1-error") >= 4, what="four app1 errors")
    finally:
        handler.close()
        stock.close()
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    result = subprocess.run(
        [sys.executable, str(script), rabbit_url, "app1-error", "4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    by_message = {m["record"]["msg"]: m for m in seen}
    assert sorted(by_message) == [
        "lookup failed",
        "stock timeout after 30 ms",
        "with extras",
        "zlog timeout after 30 ms",
    ]
    assert {m["key"] for m in seen} == {"app1.ERROR"}
    assert by_message["stock timeout after 30 ms"]["subtopic"] == "db.query"
    assert by_message["zlog timeout after 30 ms"]["subtopic"] == "db.query"

    stock_text = by_message["stock timeout after 30 ms"]["text"]
    assert stock_text.startswith("app1|40|ERROR||||0||") and stock_text.endswith("|stock timeout after 30 ms")
    zlog = by_message["zlog timeout after 30 ms"]
    assert zlog["text"].startswith("shop.orders|40|ERROR|")
    assert f"|{Path(__file__).name}|" in zlog["text"]
    assert zlog["record"]["process"] > 0 and zlog["record"]["lineno"] > 0

    failed = by_message["lookup failed"]
    assert "KeyError: 'k'" in failed["record"]["exc_info"]
    assert failed["text"].count("KeyError: 'k'") == 1
    assert "|lookup failed\nTraceback (most recent call last):" in failed["text"]

    extras = by_message["with extras"]["record"]
    assert (extras["source"], extras["env"], extras["ratio"]) == ("app1-producer", "dev", "NaN")
    assert by_message["with extras"]["subtopic"] == ""
    logging.getLogger(__name__).debug("consumer output: %s", seen)
