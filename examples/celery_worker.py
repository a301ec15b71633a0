"""Celery workers sending their logs to zlogcollect, hooked in through Celery's logging signals.

Celery replaces the logging configuration when a worker starts, so handlers
added before that are lost; its `after_setup_logger` and
`after_setup_task_logger` signals are the place to add ours. Celery is not a
zlogcollect dependency: without it this example says so and exits 0.

    python examples/celery_worker.py --broker redis://localhost:6379/0   # a real worker
    python examples/celery_worker.py --count 5   # run 5 tasks in-process, no broker
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from zlogcollect import ZLogHandler

try:
    from celery import Celery
    from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_shutdown
    from celery.utils.log import get_task_logger
except ImportError:
    Celery = None

log = logging.getLogger(__name__)
_handler: ZLogHandler | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description="a Celery worker logging through zlogcollect")
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5558", help="the collector's endpoint")
    parser.add_argument(
        "--count", type=int, default=0, help="run N tasks in-process, then exit (0: start a worker)"
    )
    parser.add_argument("--broker", default="memory://", help="Celery broker URL for the worker")
    args = parser.parse_args()
    if Celery is None:
        print(
            "celery_worker.py: celery is not installed (pip install celery); nothing to run", file=sys.stderr
        )
        return

    app = Celery("celery_worker", broker=args.broker)
    task_log = get_task_logger(__name__)

    @app.task
    def add(x: int, y: int) -> int:
        task_log.info("tasks::add(%d, %d)", x, y)
        return x + y

    def attach(logger: logging.Logger, **_: Any) -> None:
        # One handler for both loggers: one socket per process. The task logger
        # does not propagate to the root logger, so it needs the handler itself.
        global _handler
        if _handler is None:
            _handler = ZLogHandler(args.endpoint, app="celery")
        logger.addHandler(_handler)

    def close(**_: Any) -> None:
        # Pool children end with os._exit, so logging.shutdown() never runs there.
        if _handler is not None:
            _handler.close()

    after_setup_logger.connect(attach, weak=False)
    after_setup_task_logger.connect(attach, weak=False)
    worker_process_shutdown.connect(close, weak=False)

    if args.count:
        app.conf.task_always_eager = True  # run tasks here, without a broker or worker
        app.log.setup(loglevel=logging.INFO)  # what a worker does at start: fires the signals
        for n in range(args.count):
            add.delay(n, n)
        log.info("ran %d tasks", args.count)
        return
    app.worker_main(["worker", "--loglevel=INFO"])


if __name__ == "__main__":
    main()
