"""Benchmark 2: app-side cost, ns per ``logger.info("sub::msg %s", i)`` through each handler.

Two figures per handler: the calling thread's wall time per call (what the app waits),
and the whole process's CPU per call until the other end has every record (what the
app pays, libzmq's I/O thread included: CURVE encrypts there, off the calling thread).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from benchmarks.common import Outcome, Settings, median, progress, scratch, tcp_endpoint, wait_until, worker

HANDLERS = (
    ("NullHandler (floor)", "null"),
    ("logging.FileHandler", "file"),
    ("stock PUBHandler", "stock"),
    ("ZLogHandler (structured, default)", "zlog"),
    ("ZLogHandler replay=0 (no replay window)", "zlog_noreplay"),
    ("ZLogHandler structured=False", "zlog_plain"),
    ("ZLogHandler (structured) with CURVE", "zlog_curve"),
)
CURVE = "ZLogHandler (structured) with CURVE"


def run(settings: Settings, outcome: Outcome) -> None:
    calls = settings.pick(40_000, 5_000)
    batches = settings.pick(5, 2)
    outcome.notes.append(
        f"each run is a fresh process: 20,000 warm-up calls, then {batches} timed loops of {calls:,} calls "
        "(the run's figure is their median); a raw pyzmq SUB process drains the other end "
        "(for CURVE a CURVE server SUB, certificates from zmq.auth.create_certificates); "
        "'process CPU' is time.process_time_ns() of the app process (all threads) from the first timed call "
        "until the drainer has the sentinel, per timed call"
    )
    with scratch("app") as tmp:
        import zmq.auth

        for name, where in (("collector", "server-cert"), ("app", "client-cert")):
            (tmp / where).mkdir(mode=0o700)
            zmq.auth.create_certificates(tmp / where, name)
        plain, curve = tcp_endpoint(), tcp_endpoint()
        drainers = [
            worker("raw_sub", endpoint=plain, marker_dir=str(tmp), max_seconds=900),
            worker(
                "raw_sub",
                endpoint=curve,
                marker_dir=str(tmp),
                max_seconds=900,
                curve_secret=str(tmp / "server-cert" / "collector.key_secret"),
            ),
        ]
        try:
            for drainer in drainers:
                drainer.wait_stdout()
            for run_index in range(settings.runs):
                for label, kind in HANDLERS:
                    endpoint = curve if kind.endswith("_curve") else plain
                    measure(outcome, tmp, endpoint, label, kind, calls, batches)
                    wall = outcome.figure(label, "").values[-1]
                    cpu = outcome.figure(f"{label}: process CPU", "").values[-1]
                    progress(
                        f"appside run {run_index + 1}: {label}: {wall:,.0f} ns, process CPU {cpu:,.0f} ns"
                    )
        finally:
            for drainer in drainers:
                drainer.stop()
    stock, ours, floor = "stock PUBHandler", "ZLogHandler (structured, default)", "NullHandler (floor)"
    outcome.ratio_check(
        "ZLogHandler (structured) / stock PUBHandler, per call", ours, stock, 0.7, at_most=True
    )
    outcome.ratio_check("ZLogHandler (structured) / NullHandler, per call", ours, floor, 1.8, at_most=True)
    outcome.derived["stock PUBHandler / NullHandler"] = outcome.ratio(stock, floor)
    outcome.derived["ZLogHandler structured=False / stock PUBHandler"] = outcome.ratio(
        "ZLogHandler structured=False", stock
    )
    outcome.derived["replay window on (default) / replay=0, per call"] = outcome.ratio(
        ours, "ZLogHandler replay=0 (no replay window)"
    )
    outcome.derived["logging.FileHandler / stock PUBHandler"] = outcome.ratio("logging.FileHandler", stock)
    outcome.derived["CURVE / plain ZLogHandler, per call (calling thread, wall)"] = outcome.ratio(CURVE, ours)
    outcome.derived["CURVE / plain ZLogHandler, per call (process CPU, I/O thread included)"] = outcome.ratio(
        f"{CURVE}: process CPU", f"{ours}: process CPU"
    )
    above = outcome.get(stock) - outcome.get(floor)
    if above > 0:
        outcome.derived["handler part only (minus NullHandler): ZLogHandler / stock"] = (
            outcome.get(ours) - outcome.get(floor)
        ) / above


def measure(
    outcome: Outcome, tmp: Path, endpoint: str, label: str, kind: str, calls: int, batches: int
) -> None:
    token = uuid.uuid4().hex[:12]
    proc = worker(
        "app_cost",
        kind=kind,
        endpoint=endpoint,
        scratch=str(tmp),
        token=token,
        calls=calls,
        batches=batches,
        max_seconds=300,
    )
    result = proc.wait_json(300)
    outcome.figure(label, "ns/call", higher_is_better=False).values.append(median(result["per_call_ns"]))
    outcome.figure(f"{label}: process CPU", "ns/call", higher_is_better=False).values.append(
        result["cpu_per_call_ns"]
    )
    if kind in ("null", "file"):
        return
    marker = tmp / f"sentinel-{token}"
    wait_until(marker.exists, 20, f"the drainer's count for {label}")
    delivered = int(marker.read_text())
    outcome.figure(f"{label}: delivered/sent", "ratio").values.append(delivered / result["sent"])
