"""A midnight with many sources: receive-loop time of one rotation pass, and the background pruning after it."""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import time

from benchmarks.common import Outcome, Settings, progress
from zlogcollect.formatting import text_formatter
from zlogcollect.routing import Router, default_routes
from zlogcollect.sinks.files import FileSink, Rotation
from zlogcollect.stats import Stats
from zlogcollect.wire import Record

BACKUPS = 30


def _populate(directory: str, sources: int, today: datetime.date) -> None:
    """*sources* log files, each with BACKUPS dated backups (older than yesterday, the rotated file's date)."""
    stamps = [(today - datetime.timedelta(days=d)).isoformat() for d in range(2, BACKUPS + 2)]
    for i in range(sources):
        for stamp in stamps:
            os.close(
                os.open(os.path.join(directory, f"s{i:05d}.log.{stamp}"), os.O_CREAT | os.O_WRONLY, 0o644)
            )


def one_pass(sources: int) -> tuple[float, float, int]:
    """Seconds the receive loop spends in the flush that rotates every source, seconds until pruning
    is done (close), and the backups left (must be BACKUPS per source)."""
    directory = tempfile.mkdtemp(prefix="zlrot")
    try:
        now = time.time()
        _populate(directory, sources, datetime.date.fromtimestamp(now))
        stats = Stats()
        sink = FileSink(
            directory,
            Router(default_routes(errors_file=None)),
            text_formatter("%(message)s"),
            Rotation(when="midnight", backup_count=BACKUPS),
            stats,
            batch_chars=1 << 40,  # flush only when told to: the pass is timed alone
            max_files=sources + 10,
        )
        records = [Record(f"s{i:05d}", "INFO", 20, "", "line", now) for i in range(sources)]
        for record in records:
            sink.write(record)
        sink.flush()
        for handle in sink.handles().values():
            handle.rolloverAt = int(time.time()) - 1  # due now; the next one is computed from the real clock
        for record in records:
            sink.write(record)
        t0 = time.perf_counter()
        sink.flush()
        receive = time.perf_counter() - t0
        sink.close()
        total = time.perf_counter() - t0
        left = sum(1 for name in os.listdir(directory) if not name.endswith(".log"))
        return receive, total, left
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(settings: Settings, outcome: Outcome) -> None:
    sizes = [200] if settings.quick else [1000, 4000, 10000]
    for sources in sizes:
        for run_no in range(settings.runs):
            receive, total, left = one_pass(sources)
            progress(
                f"rotation {sources} sources x {BACKUPS} backups, run {run_no + 1}: "
                f"receive loop {receive:.3f} s, pruning done after {total:.3f} s"
            )
            if left != sources * BACKUPS:
                raise RuntimeError(f"{left} backups left, expected {sources * BACKUPS}")
            outcome.figure(
                f"{sources} sources: rotation pass (receive loop)", "s", higher_is_better=False
            ).values.append(receive)
            outcome.figure(
                f"{sources} sources: until pruning is done", "s", higher_is_better=False
            ).values.append(total)
    biggest = sizes[-1]
    outcome.figure_check(
        f"{biggest} sources rotating at once cost the receive loop < 1 s",
        f"{biggest} sources: rotation pass (receive loop)",
        1.0,
        at_most=True,
    )
