"""Benchmark 4: peak RSS of the collector under a flood and of the bridge with its broker down."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import zmq

from benchmarks.common import (
    BenchError,
    Outcome,
    Proc,
    Settings,
    counters,
    free_port,
    progress,
    scratch,
    tcp_endpoint,
    wait_until,
    worker,
    zlogcollect,
)
from benchmarks.workers import MESSAGE, PROBE

MB = 1024.0  # /proc/PID/status reports KiB


def flood_once(
    body_bytes: int, seconds: float, senders: int, options: Sequence[str] = ()
) -> dict[str, float]:
    """*senders* raw PUB loops flood a collector for *seconds*; its RSS along the way."""
    with scratch("flood") as tmp:
        endpoint = tcp_endpoint()
        proc = zlogcollect("collect", ["--bind", endpoint, "--dir", str(tmp / "logs"), *options], tmp)
        floods: list[Proc] = []
        try:
            baseline = proc.status("VmRSS")
            for k in range(senders):
                floods.append(
                    worker(
                        "flood",
                        stdin=True,
                        endpoint=endpoint,
                        root=f"flood{k}",
                        seconds=seconds,
                        max_count=100_000_000,
                        body_bytes=body_bytes,
                    )
                )
            for flood in floods:
                flood.wait_stdout(timeout=30)
            for flood in floods:
                flood.tell("go")
            t0 = time.monotonic()
            half = 0
            while any(f.alive() for f in floods) and time.monotonic() - t0 < seconds + 10:
                if not half and time.monotonic() - t0 >= seconds / 2:
                    half = proc.status("VmHWM")
                time.sleep(0.1)
            elapsed = time.monotonic() - t0
            peak = proc.status("VmHWM")
            received = int(counters(proc)["received"])
            if not proc.alive():
                raise BenchError(proc.describe())
            return {
                "baseline": baseline / MB,
                "half": (half or peak) / MB,
                "peak": peak / MB,
                "rate": received / elapsed,
            }
        finally:
            for flood in floods:
                flood.kill()
            proc.kill()  # its backlog is not the point; a 5 s drain would only cost time


def buffer_once(buffer: int, send: int) -> dict[str, float]:
    """The bridge with its broker down: *send* records into ``--buffer`` *buffer*."""
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"  # nothing listens there
    records = [[b"bench.INFO.db.query", (MESSAGE % i + "\n").encode()] for i in range(send)]
    with scratch("buffer") as tmp:
        endpoint = tcp_endpoint()
        proc = zlogcollect("bridge", ["--bind", endpoint, "--amqp-url", dead, "--buffer", str(buffer)], tmp)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        try:
            probe = [b"bench.INFO", f"{PROBE} {uuid.uuid4().hex[:12]}\n".encode()]
            deadline = time.monotonic() + 20
            while int(counters(proc)["received"]) == 0:
                if time.monotonic() > deadline:
                    raise BenchError(f"the bridge never received a probe\n{proc.describe()}")
                sock.send_multipart(probe)
                time.sleep(0.05)
            time.sleep(0.2)  # probes still in flight land before the baseline is read
            probes = int(counters(proc)["received"])
            baseline = proc.status("VmRSS")
            for frames in records:
                sock.send_multipart(frames)
            state: dict[str, Any] = {}

            def all_received() -> bool:
                state.update(counters(proc))
                return int(state["received"]) >= probes + send

            wait_until(all_received, 300, f"the bridge to take {send:,} records", interval=0.2)
            peak = proc.status("VmHWM")
            settled = proc.status("VmRSS")
            dropped = int(state["amqp"].get("dropped", 0))
            return {
                "baseline": baseline / MB,
                "peak": peak / MB,
                "settled": settled / MB,
                "dropped": dropped,
            }
        finally:
            sock.close(0)
            ctx.term()
            proc.kill()


FLOODS = (
    # (senders, record bytes, collector options, is it a target?)
    (3, 80, (), True),
    (3, 1000, (), True),
    (1, 80, (), False),
    (3, 1000, ("--rcvhwm", "200000"), False),
)


def flood_label(senders: int, size: int, options: Sequence[str]) -> str:
    extra = f", {' '.join(options)}" if options else ""
    return f"collector flood, {senders} sender{'s' if senders > 1 else ''}, {size} B records{extra}"


def run(settings: Settings, outcome: Outcome) -> None:
    seconds = settings.pick(6.0, 1.5)
    outcome.notes.append(
        f"flood: raw PUB loops (default SNDHWM) against `zlogcollect collect` (default --rcvhwm 20000 unless shown) "
        f"for {seconds:g} s; peak = VmHWM at the end, 'at half time' = VmHWM after {seconds / 2:g} s"
    )
    for run_index in range(settings.runs):
        for senders, size, options, _ in FLOODS:
            got = flood_once(size, seconds, senders, options)
            label = flood_label(senders, size, options)
            outcome.figure(f"{label}: peak RSS", "MB", higher_is_better=False).values.append(got["peak"])
            outcome.figure(f"{label}: peak RSS at half time", "MB", higher_is_better=False).values.append(
                got["half"]
            )
            outcome.figure(f"{label}: received under flood", "records/s").values.append(got["rate"])
            progress(
                f"memory run {run_index + 1}: {label}: peak {got['peak']:.0f} MB, {got['rate']:,.0f} records/s"
            )
    buffer = settings.pick(100_000, 2_000)
    send = settings.pick(150_000, 3_000)
    small = buffer // 2
    outcome.notes.append(
        f"bridge: broker down (nothing listens on its port), --buffer {buffer:,} (and {small:,}), "
        f"{send:,} records sent; MB per 100k = (peak - RSS before sending) / buffered records x 100k"
    )
    for run_index in range(settings.runs):
        for size in (buffer, small):
            got = buffer_once(size, send)
            label = f"bridge, broker down, --buffer {size:,}"
            growth = got["peak"] - got["baseline"]
            outcome.figure(f"{label}: peak RSS", "MB", higher_is_better=False).values.append(got["peak"])
            outcome.figure(f"{label}: growth over start", "MB", higher_is_better=False).values.append(growth)
            outcome.figure(f"{label}: RSS once all taken", "MB", higher_is_better=False).values.append(
                got["settled"]
            )
            outcome.figure(f"{label}: MB per 100k buffered", "MB", higher_is_better=False).values.append(
                growth / size * 100_000
            )
            outcome.figure(
                f"{label}: dropped (buffer full)", "records", higher_is_better=False
            ).values.append(got["dropped"])
            progress(f"memory run {run_index + 1}: {label}: peak {got['peak']:.0f} MB (+{growth:.0f} MB)")
    for senders, size, options, target in FLOODS:
        label = flood_label(senders, size, options)
        outcome.figure_check(
            f"{label}: peak RSS (MB){'' if target else ', not a target'}",
            f"{label}: peak RSS",
            200.0,
            at_most=True,
        )
    big, half = f"bridge, broker down, --buffer {buffer:,}", f"bridge, broker down, --buffer {small:,}"
    outcome.derived["bridge growth, --buffer N / --buffer N/2 (2.0 = bounded by the buffer)"] = outcome.ratio(
        f"{big}: growth over start", f"{half}: growth over start"
    )
    # What one more buffered record costs, without the fixed part (the receive queue in flight).
    outcome.derived["bridge marginal MB per 100k buffered records"] = (
        (outcome.get(f"{big}: growth over start") - outcome.get(f"{half}: growth over start"))
        / (buffer - small)
        * 100_000
    )
