"""The recommended way to send an app's logs to zlogcollect: one call to `zlogcollect.setup`.

Run a collector first (`zlogcollect collect`), then `python examples/handler_app.py`.
"""

from __future__ import annotations

import argparse
import logging
import time

import zlogcollect


def main() -> None:
    parser = argparse.ArgumentParser(description="an app logging through zlogcollect's handler")
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5558", help="the collector's endpoint")
    parser.add_argument(
        "--count", type=int, default=0, help="records to log, then exit (0: one a second, forever)"
    )
    args = parser.parse_args()

    zlogcollect.setup(args.endpoint, app="handler_app", level=logging.DEBUG)
    log = logging.getLogger("shop.orders")
    sent = 0
    while not args.count or sent < args.count:
        log.info("db.query::order %d stored", sent)  # topic handler_app.INFO.db.query
        sent += 1
        if not args.count:
            time.sleep(1.0)
    # Nothing to flush or sleep here: logging.shutdown() at exit sends what is left.


if __name__ == "__main__":
    main()
