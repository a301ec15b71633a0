"""Issue 16's acceptance test: zero loss across collector crashes and restarts.

A `ZLogHandler` app logs 2,000 records/s for 20 s while its collector is stopped and
started again on the same --dir five times, each time down for about half a second:
by SIGKILL (a crash) in one test, by SIGTERM (a planned restart) in the other. Every
record must be in the files exactly once, in the publisher's sequence, and the last
collector must report zero loss: what was in flight at a kill comes back from the
handler's replay window, and what a restarted collector had already written is
dropped by its per-publisher sequence state (counted as `replayed_duplicates`).

The collectors run with `--drain-timeout 1`: after SIGTERM a collector keeps receiving
until 0.2 s pass without a record, at most that long, and an app that never pauses keeps
the default 5 s drain busy to the end; five such stops would not fit in the app's 20 s.
The app exits only after the last collector is up: an app that exits while no collector
is subscribed cannot replay anything (docs/OPERATIONS.md says so).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CollectorProcess, free_tcp_endpoint, wait_until
from tests.helpers_handler import json_lines, start_app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RATE = 2_000
SECONDS = 20
TOTAL = RATE * SECONDS
RESTARTS = 5
DOWN = 0.5

STEADY_APP = """
    import logging, sys, time
    import zlogcollect

    rate, seconds = int(sys.argv[2]), int(sys.argv[3])
    handler = zlogcollect.setup(sys.argv[1], app="steady", linger=30)
    log = logging.getLogger("steady")
    print("started", flush=True)
    start = time.monotonic()
    for i in range(rate * seconds):
        log.info("n %d", i)
        if i % 20 == 19:  # paced in steps of 10 ms
            ahead = start + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    print("logged", handler.stats["seq"], "dropped", handler.stats["dropped"], flush=True)
    sys.stdin.readline()  # exit (close the handler) once told: the last collector is up by then
"""


@pytest.fixture
def app() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _collector(collectors: list[CollectorProcess], endpoint: str, logdir: Path) -> CollectorProcess:
    proc = CollectorProcess(
        [
            "--bind",
            endpoint,
            "--dir",
            str(logdir),
            "--json",
            "--flush-interval",
            "0.05",
            "--drain-timeout",
            "1",
        ]
    )
    collectors.append(proc)
    proc.wait_ready(30)
    return proc


def _numbers(logdir: Path, cut: list[str] | None = None) -> list[int]:
    """The numbers in the file; the start of a line a SIGKILL cut short goes to *cut* (its record
    came again whole: docs/OPERATIONS.md), so each kill may leave one such line."""
    return [
        int(r["message"].split()[1]) for r in json_lines(logdir / "steady.log", [] if cut is None else cut)
    ]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_five_restarts_under_load_lose_nothing_and_write_nothing_twice(
    stop: signal.Signals,
    collectors: list[CollectorProcess],
    app: list[subprocess.Popen[str]],
    logdir: Path,
    tmp_path: Path,
) -> None:
    """2,000 records/s for 20 s, five restarts about 0.5 s down each: all 40,000 records once, `lost` 0."""
    endpoint = free_tcp_endpoint()
    collector = _collector(collectors, endpoint, logdir)
    proc = start_app(STEADY_APP, endpoint, str(RATE), str(SECONDS), cwd=tmp_path)
    app.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    started = time.monotonic()
    replayed = 0
    for restart in range(RESTARTS):
        # Spread the restarts over the app's run: one every 3 s from t = 2 s.
        time.sleep(max(started + 2 + 3 * restart - time.monotonic(), 0.0))
        written_before = len(_numbers(logdir))
        if stop is signal.SIGKILL:
            collector.kill()
        else:
            assert collector.stop(signal.SIGTERM) == 0, collector.stderr
            counters = collector.counters()
            replayed += counters.get("replayed_duplicates", 0)
        time.sleep(DOWN)
        collector = _collector(collectors, endpoint, logdir)
        assert written_before > 0, f"restart {restart}: nothing written before it"
    assert proc.poll() is None, "the app ended before the last restart"
    logged = proc.stdout.readline().split()  # waits for the app's last record
    out, err = proc.communicate("exit\n", timeout=60)
    assert proc.returncode == 0, err
    assert logged == ["logged", str(TOTAL), "dropped", "0"], " ".join(logged) + out + err

    wait_until(lambda: len(set(_numbers(logdir))) >= TOTAL, 60, what="every record in the file")
    assert collector.stop(signal.SIGTERM) == 0, collector.stderr
    cut: list[str] = []
    numbers = _numbers(logdir, cut)
    assert len(cut) <= (RESTARTS if stop is signal.SIGKILL else 0), cut
    twice = {n: c for n, c in Counter(numbers).items() if c > 1}
    assert not twice, f"{len(twice)} records written more than once, e.g. {sorted(twice)[:10]}"
    assert sorted(numbers) == list(range(TOTAL))
    counters = collector.counters()
    assert counters["lost"] == 0, collector.summary()
    print(
        f"{stop.name}: {TOTAL} records once over {RESTARTS} restarts; "
        f"last run: {collector.summary()}; replayed duplicates dropped at SIGTERM stops: {replayed}"
    )
