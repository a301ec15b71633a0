"""Benchmark 6: start-up loss, what reaches the disk from a process that logs 100 records and exits."""

from __future__ import annotations

import subprocess
import time

from benchmarks.common import (
    BenchError,
    Check,
    Outcome,
    Settings,
    count_lines,
    progress,
    scratch,
    tcp_endpoint,
    worker,
    zlogcollect,
)

COUNT = 100
HANDLERS = (("ZLogHandler", "zlog"), ("stock PUBHandler", "stock"))


def run(settings: Settings, outcome: Outcome) -> None:
    runs = settings.runs if settings.quick else max(settings.runs, 5)
    outcome.notes.append(
        f"a fresh process creates the handler, logs {COUNT} records at once and returns (logging.shutdown() "
        f"runs at exit); {runs} processes per handler, the collector (--flush-interval 0.2) file is counted up to 1.5 s after exit"
    )
    with scratch("loss") as tmp:
        endpoint = tcp_endpoint()
        logs = tmp / "logs"
        # A short flush interval only makes the count quick to read; delivery does not depend on it.
        proc = zlogcollect(
            "collect", ["--bind", endpoint, "--dir", str(logs), "--flush-interval", "0.2"], tmp
        )
        try:
            for run_index in range(runs):
                for label, kind in HANDLERS:
                    root = f"{kind}{run_index}"
                    start = time.perf_counter()
                    app = worker(
                        "startup", kind=kind, endpoint=endpoint, root=root, count=COUNT, max_seconds=30
                    )
                    try:
                        code = app.popen.wait(40)
                    except subprocess.TimeoutExpired:
                        app.kill()
                        raise BenchError(f"{label} app did not exit\n{app.describe()}") from None
                    lifetime = time.perf_counter() - start
                    if code != 0:
                        raise BenchError(f"{label} app exited {code}\n{app.describe()}")
                    app.kill()
                    deadline = time.monotonic() + 1.5
                    while count_lines(logs / f"{root}.log") < COUNT and time.monotonic() < deadline:
                        time.sleep(0.02)
                    delivered = count_lines(logs / f"{root}.log")
                    outcome.figure(f"{label}: delivered of {COUNT}", "records").values.append(delivered)
                    outcome.figure(f"{label}: process lifetime", "s", higher_is_better=False).values.append(
                        lifetime
                    )
                    progress(f"loss run {run_index + 1}: {label}: {delivered}/{COUNT} delivered")
        finally:
            proc.stop()
    zlog_delivered = outcome.figure(f"ZLogHandler: delivered of {COUNT}", "records").values
    outcome.checks.append(
        Check(
            f"ZLogHandler records lost of {COUNT} at start-up (median)",
            COUNT - outcome.get(f"ZLogHandler: delivered of {COUNT}"),
            0.0,
            at_most=True,
            detail=f"stock PUBHandler lost {COUNT - outcome.get(f'stock PUBHandler: delivered of {COUNT}'):.0f}",
            best=COUNT - max(zlog_delivered) if zlog_delivered else float("nan"),
        )
    )
