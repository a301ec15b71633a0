"""A gunicorn-style pre-fork server: the parent sets up logging once, forked workers just log.

Each worker gets its own zmq context and socket on its first record (a zmq
context does not survive fork), and never re-sends what the parent still held.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import zlogcollect

log = logging.getLogger("prefork")


def work(number: int, count: int) -> None:
    """A worker's life: log *count* records (or one a second, forever)."""
    sent = 0
    while not count or sent < count:
        # The subtopic is cut from the message before the arguments are merged in.
        log.info(f"worker{number}::request %d handled by pid %d", sent, os.getpid())
        sent += 1
        if not count:
            time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description="a pre-fork server logging through zlogcollect")
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5558", help="the collector's endpoint")
    parser.add_argument("--count", type=int, default=0, help="records per worker, then exit (0: forever)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes to fork")
    args = parser.parse_args()

    zlogcollect.setup(args.endpoint, app="prefork")
    log.info("master %d forking %d workers", os.getpid(), args.workers)
    children = []
    for number in range(args.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                work(number, args.count)
                code = 0
            finally:
                # A forked worker leaves with os._exit so it never runs the parent's
                # atexit hooks; that skips logging.shutdown() too, so call it first.
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    failed = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        failed += code != 0
        log.info("worker %d exited with %d", pid, code)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
