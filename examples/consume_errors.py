"""The seed article's error processor: read app1's errors from the `app1-error` queue with pika.

Start the chain with the queue declared by the collector (README, "Forwarding to RabbitMQ"):

    zlogcollect collect --amqp-url amqp://guest:guest@127.0.0.1:5672/%2F \\
        --declare-queue 'app1-error=app1.ERROR.#'
    python examples/consume_errors.py

The queue belongs to the collector, which declares it once it reaches the
broker: this consumer waits for it (`--wait`, passive declares) instead of
declaring it itself, so the two never disagree on its arguments. The URL
defaults to $AMQP_URL when that is set.

Each message is JSON in python-logging-rabbitmq's field set plus `source`
and `subtopic`; `message_id` is stable across re-sends, so a consumer can
drop the rare duplicate a re-send after a lost confirm causes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def wait_for_queue(connection: pika.BlockingConnection, queue: str, timeout: float) -> BlockingChannel:
    """A channel on which *queue* exists, once the collector has declared it."""
    deadline = time.monotonic() + timeout
    while True:
        channel = connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
            return channel
        except pika.exceptions.ChannelClosedByBroker as exc:
            # 404: not declared yet. The broker closes the channel; try on a new one.
            if exc.reply_code != 404 or time.monotonic() >= deadline:
                raise
        connection.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description="print app1's errors from RabbitMQ")
    parser.add_argument("--url", default=os.environ.get("AMQP_URL") or DEFAULT_URL, help="default: $AMQP_URL")
    parser.add_argument("--queue", default="app1-error")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: run until Ctrl-C)")
    parser.add_argument(
        "--timeout", type=float, default=0, help="stop after N seconds without a message (0: never)"
    )
    parser.add_argument(
        "--wait", type=float, default=30, help="seconds to wait for the queue to be declared (default 30)"
    )
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    try:
        channel = wait_for_queue(connection, args.queue, args.wait)
    except pika.exceptions.ChannelClosedByBroker as exc:
        connection.close()
        sys.exit(f"consume_errors: queue {args.queue!r}: {exc.reply_text} (is the collector running?)")
    channel.basic_qos(prefetch_count=100)
    seen: set[str] = set()
    handled = 0
    try:
        for method, properties, body in channel.consume(args.queue, inactivity_timeout=args.timeout or None):
            if method is None:  # inactivity timeout
                break
            record: dict[str, Any] = json.loads(body)
            if properties.message_id not in seen:  # at-least-once delivery: skip re-sends
                seen.add(properties.message_id)
                where = f"{record['source']}:{record['subtopic']}" if record["subtopic"] else record["source"]
                print(f"{method.routing_key} {record['levelname']} {where} {record['msg']}", flush=True)
                handled += 1
            channel.basic_ack(method.delivery_tag)
            if args.count and handled >= args.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        channel.cancel()
        connection.close()


if __name__ == "__main__":
    main()
