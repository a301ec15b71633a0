"""A producer as in the seed recipe, with zlogcollect's handler (or, with --stock, pyzmq's PUBHandler).

Run a collector first (`zlogcollect collect`), then e.g. `python examples/app1.py`.
Either way the app's socket connects to the collector, which binds.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import time
from collections.abc import Sequence

import zmq
from zmq.log.handlers import PUBHandler

from zlogcollect import ZLogHandler

EVERY_LEVEL = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
MOSTLY_ERRORS = (logging.ERROR,) * 6 + (logging.WARNING, logging.INFO, logging.CRITICAL)
SUBTOPICS = ("db.query", "http.request", "cache", "")


def main(app: str, levels: Sequence[int], argv: Sequence[str] | None = None) -> None:
    """Log random records under root topic *app* at a steady rate."""
    parser = argparse.ArgumentParser(description=f"{app}: a log producer from the seed article")
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5558", help="the collector's endpoint")
    parser.add_argument("--count", type=int, default=0, help="records to send, then exit (0: forever)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between records")
    parser.add_argument(
        "--stock", action="store_true", help="use pyzmq's stock PUBHandler, as the seed recipe"
    )
    args = parser.parse_args(argv)

    logger = logging.getLogger(app)
    logger.setLevel(logging.DEBUG)
    if args.stock:
        context = zmq.Context()
        socket = context.socket(zmq.PUB)
        socket.connect(args.endpoint)  # the collector binds, every app connects
        stock = PUBHandler(socket)
        stock.root_topic = app
        handler: logging.Handler = stock
        handler.setFormatter(logging.Formatter("%(filename)s:%(lineno)d | %(message)s"))
        logger.addHandler(handler)
        # The stock handler drops whatever it sends before the subscription arrives
        # (the slow-joiner problem); zlogcollect's handler holds records until then.
        time.sleep(0.5)
    else:
        handler = ZLogHandler(args.endpoint, app=app)
        logger.addHandler(handler)

    sent = 0
    try:
        while not args.count or sent < args.count:
            level = random.choice(levels)
            subtopic = random.choice(SUBTOPICS)
            text = f"hello from pid {os.getpid()}, record {sent}"
            logger.log(level, f"{subtopic}::{text}" if subtopic else text)
            sent += 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        handler.close()  # both flush what is queued (the stock one lingers on term)
        if args.stock:
            socket.close(linger=2000)
            context.term()
