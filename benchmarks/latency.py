"""Benchmark 5: latency from the ``logger`` call to the line on disk at a steady ~2,000 records/s."""

from __future__ import annotations

import time

from benchmarks.common import (
    BenchError,
    FileTail,
    Outcome,
    Settings,
    TokenWatch,
    percentile,
    progress,
    scratch,
    tcp_endpoint,
    wait_until,
    worker,
    zlogcollect,
)
from benchmarks.workers import PROBE

RATE = 2000.0
READ_EVERY = 0.002


def latency_once(flush_interval: float, seconds: float) -> dict[str, float]:
    """One app logs at RATE for *seconds*; a reader polls the file every 2 ms and stamps each new line."""
    with scratch("lat") as tmp:
        endpoint = tcp_endpoint()
        logs = tmp / "logs"
        proc = zlogcollect(
            "collect", ["--bind", endpoint, "--dir", str(logs), "--flush-interval", str(flush_interval)], tmp
        )
        app = worker(
            "latency_app",
            stdin=True,
            endpoint=endpoint,
            root="lat",
            rate=RATE,
            seconds=seconds,
            max_seconds=120,
        )
        try:
            app.wait_stdout(timeout=30)
            path = logs / "lat.log"
            wait_until(TokenWatch(path, f"{PROBE} lat".encode()), 20, "the latency app's probe")
            tail = FileTail(path)
            tail.read_new()
            app.tell("go")
            total = int(RATE * seconds)
            latencies: list[float] = []
            deadline = time.monotonic() + seconds + flush_interval + 15
            while len(latencies) < total and time.monotonic() < deadline:
                lines = tail.read_new()
                now = time.time()
                for line in lines:
                    # TIME | LEVEL | SOURCE | ORIGIN | SUBTOPIC | MESSAGE (the default line)
                    fields = line.split(b" | ", 5)
                    if len(fields) < 6 or fields[2] != b"lat" or fields[4] != b"lat":
                        continue
                    stamp = fields[5].split()[0]
                    latencies.append(now - float(stamp))
                time.sleep(READ_EVERY)
            result = app.wait_json(30)
            if not latencies:
                raise BenchError(f"no latency line arrived\n{proc.describe()}")
            return {
                "p50": percentile(latencies, 50) * 1000,
                "p99": percentile(latencies, 99) * 1000,
                "max": max(latencies) * 1000,
                "delivered": len(latencies) / total,
                "late": result["late"],
            }
        finally:
            app.kill()
            proc.stop()


def run(settings: Settings, outcome: Outcome) -> None:
    seconds = settings.pick(10.0, 1.5)
    variants = ((1.0, seconds, "default --flush-interval 1"), (0.1, seconds / 2, "--flush-interval 0.1"))
    outcome.notes.append(
        f"ZLogHandler at {RATE:,.0f} records/s, each message stamped with time.time() before the call; "
        f"a reader polls the file every {READ_EVERY * 1000:.0f} ms (its poll adds up to that)"
    )
    for run_index in range(settings.runs):
        for flush, duration, label in variants:
            got = latency_once(flush, duration)
            for key in ("p50", "p99", "max"):
                outcome.figure(f"{label}: {key}", "ms", higher_is_better=False).values.append(got[key])
            outcome.figure(f"{label}: delivered/sent", "ratio").values.append(got["delivered"])
            progress(
                f"latency run {run_index + 1}: {label}: p50 {got['p50']:.0f} ms, p99 {got['p99']:.0f} ms"
            )
    outcome.figure_check(
        "p99 latency at --flush-interval 1 (ms)",
        "default --flush-interval 1: p99",
        1050.0,
        at_most=True,
        detail="flush interval + 50 ms",
    )
    outcome.figure_check(
        "p99 latency at --flush-interval 0.1 (ms), not a target",
        "--flush-interval 0.1: p99",
        150.0,
        at_most=True,
        detail="same rule: flush interval + 50 ms",
    )
