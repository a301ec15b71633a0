"""Benchmark 5: latency from the ``logger`` call to the line on disk at a steady ~2,000 records/s,
and what group commit costs: file writes per record at that rate and under a flood."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence

from benchmarks.capacity import RECEIVERS, drain_once
from benchmarks.common import (
    CHILD_ENV,
    BenchError,
    FileTail,
    Outcome,
    Proc,
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


def tail_latency_once(seconds: float) -> dict[str, float]:
    """One app logs at RATE for *seconds* to a collector with ``--publish``; ``zlogcollect tail``
    prints each record, and a thread stamps each line as it arrives on tail's stdout."""
    with scratch("tlat") as tmp:
        endpoint, publish = tcp_endpoint(), tcp_endpoint()
        proc = zlogcollect(
            "collect", ["--bind", endpoint, "--dir", str(tmp / "logs"), "--publish", publish], tmp
        )
        tail = Proc(
            [
                sys.executable,
                "-m",
                "zlogcollect",
                "tail",
                "--connect",
                publish,
                "--format",
                "%(message)s",
                "tlat.#",
            ],
            "zlogcollect tail",
            tmp,
            CHILD_ENV,
        )
        app = worker(
            "latency_app",
            stdin=True,
            endpoint=endpoint,
            root="tlat",
            rate=RATE,
            seconds=seconds,
            max_seconds=120,
        )
        arrivals: list[float] = []
        lines = tail.stdout_lines  # appended by the Proc's reader thread as lines arrive

        def stamp() -> None:
            # Stamp lines as the reader thread appends them (a 1 ms poll, added to the figure).
            seen = 0
            while tail.alive() or seen < len(lines):
                now = time.time()
                while seen < len(lines):
                    arrivals.append(now)
                    seen += 1
                time.sleep(0.001)

        stamper = threading.Thread(target=stamp, daemon=True)
        stamper.start()
        try:
            app.wait_stdout(timeout=30)
            wait_until(lambda: any(PROBE in line for line in lines), 30, "a probe on tail's stdout")
            first = len(lines)
            app.tell("go")
            total = int(RATE * seconds)
            wait_until(
                lambda: sum(1 for line in lines[first:] if not line.startswith(PROBE)) >= total,
                seconds + 16,
                "every record on tail's stdout",
            )
            app.wait_json(30)
            latencies = []
            for line, arrived in zip(lines[first:], arrivals[first:], strict=False):
                if line.startswith(PROBE):
                    continue
                latencies.append(arrived - float(line.split()[0]))
            if not latencies:
                raise BenchError(f"no line arrived on tail's stdout\n{proc.describe()}")
            return {
                "p50": percentile(latencies, 50) * 1000,
                "p99": percentile(latencies, 99) * 1000,
                "max": max(latencies) * 1000,
                "delivered": len(latencies) / total,
            }
        finally:
            app.kill()
            tail.kill()
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
        got = tail_latency_once(duration)
        for key in ("p50", "p99", "max"):
            outcome.figure(f"log call -> tail stdout: {key}", "ms", higher_is_better=False).values.append(
                got[key]
            )
        outcome.figure("log call -> tail stdout: delivered/sent", "ratio").values.append(got["delivered"])
        progress(
            f"latency run {run_index + 1}: log call -> tail stdout: p50 {got['p50']:.1f} ms, p99 {got['p99']:.1f} ms"
        )
        flood = flood_writes_per_record(settings.pick(FLOOD, 20_000))
        outcome.figure("flood: file writes per record", "writes", higher_is_better=False).values.append(flood)
        progress(f"latency run {run_index + 1}: flood: {flood:.4f} file writes per record")
    outcome.figure_check(
        "p50 log call -> tail stdout (ms)",
        "log call -> tail stdout: p50",
        200.0,
        at_most=True,
        detail="sent at the end of the drain, before the file write; tail writes each batch",
    )
    outcome.figure_check(
        "p99 latency at default flags (ms)",
        "defaults: p99",
        20.0,
        at_most=True,
        detail="group commit: written when the socket runs dry",
    )
