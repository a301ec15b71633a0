"""Benchmark 9: a collector SIGKILLed again and again under a steady ZLogHandler app: what is twice, what is lost.

Not a speed: a count. Each run starts a collector on a fresh --dir (``--json``,
``--flush-interval 0.01``, so batches are many and small and a kill often lands
in or right after a write), a ZLogHandler app logging ``n <i>`` at a steady rate,
and SIGKILLs the collector at even intervals, starting a new one on the same
--dir 0.1 s later each time. At the end every number must be in the file once:
the figures are the records written twice, the records missing and the lines a
kill cut (their record comes again whole; the cut start is left in the file).
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import (
    BenchError,
    Check,
    Outcome,
    Settings,
    progress,
    scratch,
    tcp_endpoint,
    worker,
    zlogcollect,
)


def _numbers(path: Path) -> tuple[Counter[int], int]:
    """The numbers of the ``n <i>`` records in a --json file, and the lines that are not whole records."""
    numbers: Counter[int] = Counter()
    cut = 0
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return numbers, 0
    for line in text.splitlines():
        try:
            numbers[int(json.loads(line)["message"].split()[1])] += 1
        except (ValueError, KeyError, IndexError, TypeError):
            cut += 1
    return numbers, cut


def run(settings: Settings, outcome: Outcome) -> None:
    rate = settings.pick(3000, 1000)
    seconds = settings.pick(40, 6)
    kills = settings.pick(35, 4)
    runs = settings.runs if settings.quick else max(settings.runs, 3)
    outcome.notes.append(
        f"a ZLogHandler app at {rate} records/s for {seconds} s; its collector (--json, --flush-interval 0.01) "
        f"SIGKILLed {kills} times at even intervals and started again 0.1 s later on the same --dir; {runs} runs"
    )
    for run_index in range(runs):
        twice, missing, cut, lost = _one_run(rate, seconds, kills)
        figures = (
            ("records written twice", "records", twice),
            ("records missing", "records", missing),
            ("lines cut by a kill", "lines", cut),
            ("lost (the last collector's counter)", "records", lost),
        )
        for name, unit, value in figures:
            outcome.figure(name, unit, higher_is_better=False).values.append(value)
        progress(
            f"restarts run {run_index + 1}: {kills} kills: {twice} twice, {missing} missing, {cut} cut lines"
        )
    for name in ("records written twice", "records missing"):
        worst = max(outcome.figure(name, "records").values)
        outcome.checks.append(Check(f"{name} (most in a run)", worst, 0.0, at_most=True))


def _one_run(rate: int, seconds: float, kills: int) -> tuple[int, int, int, int]:
    with scratch("restarts") as tmp:
        endpoint = tcp_endpoint()
        logs = tmp / "logs"
        args = ["--bind", endpoint, "--dir", str(logs), "--json", "--flush-interval", "0.01"]
        collector = zlogcollect("collect", args, tmp)
        app = worker(
            "steady_app",
            stdin=True,
            endpoint=endpoint,
            root="steady",
            rate=rate,
            seconds=seconds,
            max_seconds=seconds + 120,
        )
        try:
            if app.wait_stdout(30) != "started":
                raise BenchError(f"the app did not start\n{app.describe()}")
            start = time.monotonic()
            interval = (seconds - 1.5) / kills
            for kill in range(kills):
                time.sleep(max(start + 1 + interval * kill - time.monotonic(), 0.0))
                collector.kill()
                time.sleep(0.1)
                collector = zlogcollect("collect", args, tmp)
            app.wait_stdout(seconds + 60, start=1)  # "logged": every record was handed to the handler
            app.tell("exit")
            result = app.wait_json(60)
            total = int(rate * seconds)
            if result.get("logged") != total or result.get("dropped"):
                raise BenchError(f"the app logged {result}, not {total} records without drops")
            deadline = time.monotonic() + 30
            while len(_numbers(logs / "steady.log")[0]) < total and time.monotonic() < deadline:
                time.sleep(0.2)
            if collector.stop(signal.SIGTERM) != 0:
                raise BenchError(f"the last collector did not stop cleanly\n{collector.describe()}")
            lost = int(collector.counters().get("lost", 0))
        finally:
            app.kill()
            collector.kill()
        numbers, cut = _numbers(logs / "steady.log")
        twice = sum(1 for count in numbers.values() if count > 1)
        missing = sum(1 for n in range(total) if n not in numbers)
        return twice, missing, cut, lost
