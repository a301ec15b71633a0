"""The seed article's error processor: read app1's errors from the `app1-error` queue with pika.

Start the chain with the queue declared by the collector:

    zlogcollect collect --amqp-url amqp://guest:guest@127.0.0.1:5672/%2F \\
        --declare-queue 'app1-error=app1.ERROR.#'
    python examples/consume_errors.py

Each message is JSON in python-logging-rabbitmq's field set plus `source`
and `subtopic`; `message_id` is stable across re-sends, so a consumer can
drop the rare duplicate a re-send after a lost confirm causes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pika


def main() -> None:
    parser = argparse.ArgumentParser(description="print app1's errors from RabbitMQ")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--queue", default="app1-error")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: run until Ctrl-C)")
    parser.add_argument(
        "--timeout", type=float, default=0, help="stop after N seconds without a message (0: never)"
    )
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
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
