"""Benchmark 5: latency from the ``logger`` call to the line on disk at a steady ~2,000 records/s,
and what group commit costs: file writes per record at that rate and under a flood."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from benchmarks.capacity import RECEIVERS, drain_once
from benchmarks.common import (
    BenchError,
    FileTail,
    Outcome,
    Settings,
    TokenWatch,
    counters,
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
FLOOD = 200_000


def flood_writes_per_record(n: int) -> float:
    """File writes per record while the collector drains *n* pre-queued records (its capacity run)."""
    counted: list[int] = []
    receiver = next(r for r in RECEIVERS if r.kind == "zlogcollect" and not r.args and not r.structured)

    def attach(_pid: int) -> Callable[[], None]:
        return lambda: None

    drain_once(receiver, n, attach, counters_at_end=counted)
    return counted[0] / n


def latency_once(flags: Sequence[str], seconds: float) -> dict[str, float]:
    """One app logs at RATE for *seconds*; a reader polls the file every 2 ms and stamps each new line."""
    with scratch("lat") as tmp:
        endpoint = tcp_endpoint()
        logs = tmp / "logs"
        proc = zlogcollect("collect", ["--bind", endpoint, "--dir", str(logs), *flags], tmp)
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
            writes_before = counters(proc)["file_writes"]
            app.tell("go")
            total = int(RATE * seconds)
            latencies: list[float] = []
            deadline = time.monotonic() + seconds + 16
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
            writes = counters(proc)["file_writes"] - writes_before
            result = app.wait_json(30)
            if not latencies:
                raise BenchError(f"no latency line arrived\n{proc.describe()}")
            return {
                "p50": percentile(latencies, 50) * 1000,
                "p99": percentile(latencies, 99) * 1000,
                "max": max(latencies) * 1000,
                "delivered": len(latencies) / total,
                "late": result["late"],
                "writes": writes / max(len(latencies), 1),
            }
        finally:
            app.kill()
            proc.stop()


def run(settings: Settings, outcome: Outcome) -> None:
    seconds = settings.pick(10.0, 1.5)
    variants = (((), seconds, "defaults"),)
    outcome.notes.append(
        f"ZLogHandler at {RATE:,.0f} records/s, each message stamped with time.time() before the call; "
        f"a reader polls the file every {READ_EVERY * 1000:.0f} ms (its poll adds up to that). "
        "File writes are the collector's file_writes counter (one os.write per file per batch) "
        "divided by the records."
    )
    for run_index in range(settings.runs):
        for flags, duration, label in variants:
            got = latency_once(flags, duration)
            for key in ("p50", "p99", "max"):
                outcome.figure(f"{label}: {key}", "ms", higher_is_better=False).values.append(got[key])
            outcome.figure(f"{label}: delivered/sent", "ratio").values.append(got["delivered"])
            outcome.figure(
                f"{label}: file writes per record", "writes", higher_is_better=False
            ).values.append(got["writes"])
            progress(
                f"latency run {run_index + 1}: {label}: p50 {got['p50']:.1f} ms, p99 {got['p99']:.1f} ms,"
                f" {got['writes']:.3f} file writes per record"
            )
        flood = flood_writes_per_record(settings.pick(FLOOD, 20_000))
        outcome.figure("flood: file writes per record", "writes", higher_is_better=False).values.append(flood)
        progress(f"latency run {run_index + 1}: flood: {flood:.4f} file writes per record")
    outcome.figure_check(
        "p99 latency at default flags (ms)",
        "defaults: p99",
        20.0,
        at_most=True,
        detail="group commit: written when the socket runs dry",
    )
