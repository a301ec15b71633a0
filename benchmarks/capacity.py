"""Benchmark 1: collector capacity, a pre-queued drain from the SUB socket to disk, and live senders."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq

from benchmarks.common import (
    POLL,
    BenchError,
    FileTail,
    Outcome,
    Proc,
    Settings,
    TokenWatch,
    count_lines,
    counters,
    progress,
    scratch,
    tcp_endpoint,
    wait_until,
    worker,
    zlogcollect,
)
from benchmarks.workers import MESSAGE, PROBE, SENTINEL
from zlogcollect.formatting import DEFAULT_FORMAT

PADDING = 5000
"""Records sent after the sentinel: they push zlogcollect's pending batch over its 256 KiB
flush threshold, so the sentinel's batch is written by size instead of waiting for the
1 s flush timer (that wait is latency, not capacity; see docs/BENCHMARKS.md)."""


@dataclass(frozen=True)
class Receiver:
    """One collector variant: how to start it and how to see that a token reached its disk."""

    label: str
    kind: str  # raw | seed | zlogcollect
    args: tuple[str, ...] = ()
    structured: bool = False
    publish: bool = False
    """With ``--publish`` and one subscriber attached (a plain SUB that counts, as a fast ``tail``)."""
    curve: bool = False
    """A CURVE server (``--curve-secret``, ``--allow-keys``); the sender is a CURVE client with an allowed key."""

    @property
    def rooted(self) -> bool:
        """The seed cannot take a root topic (``getattr(logging, "bench.info")``)."""
        return self.kind != "seed"

    def topic(self, root: str, subtopic: str = "") -> bytes:
        parts = [root] if self.rooted else []
        parts.append("INFO")
        if subtopic:
            parts.append(subtopic)
        return ".".join(parts).encode()

    def start(
        self, tmp: Path, endpoint: str, max_seconds: float, publish: str = "", keys: CurveKeys | None = None
    ) -> Proc:
        if self.kind == "raw":
            secret = str(keys.server_secret) if keys is not None else ""
            proc = worker(
                "raw_sub",
                endpoint=endpoint,
                marker_dir=str(tmp),
                max_seconds=max_seconds,
                curve_secret=secret,
            )
            proc.wait_stdout()
            return proc
        if self.kind == "seed":
            proc = worker("seed", endpoint=endpoint, path=str(tmp / "seed.log"), max_seconds=max_seconds)
            proc.wait_stdout()
            return proc
        extra = ["--publish", publish] if publish else []
        if keys is not None:
            extra += ["--curve-secret", str(keys.server_secret), "--allow-keys", str(keys.allowed)]
        return zlogcollect(
            "collect", ["--bind", endpoint, "--dir", str(tmp / "logs"), *self.args, *extra], tmp
        )

    def file(self, tmp: Path, root: str) -> Path:
        return tmp / "seed.log" if self.kind == "seed" else tmp / "logs" / f"{root}.log"

    def watch(self, tmp: Path, root: str, word: str, token: str) -> Callable[[], bool]:
        """A cheap poll: true once ``WORD token`` reached the receiver (a marker file, or a line on disk)."""
        if self.kind == "raw":
            marker = tmp / f"{'probe' if word == PROBE else 'sentinel'}-{token}"
            return marker.exists
        return TokenWatch(self.file(tmp, root), f"{word} {token}".encode())


@dataclass(frozen=True)
class CurveKeys:
    """Certificates made with ``zmq.auth.create_certificates`` in a scratch directory."""

    server_secret: Path
    """The collector's ``.key_secret``."""
    allowed: Path
    """The allow-list directory: the sender's public ``.key`` only."""
    client_secret: Path
    """The sender's ``.key_secret``."""

    @classmethod
    def create(cls, tmp: Path) -> CurveKeys:
        import zmq.auth

        server_dir, allowed, client_dir = tmp / "server-cert", tmp / "allowed", tmp / "client-cert"
        for path in (server_dir, allowed, client_dir):
            path.mkdir(mode=0o700)
        _, server_secret = zmq.auth.create_certificates(server_dir, "collector")
        public, client_secret = zmq.auth.create_certificates(client_dir, "bench")
        (allowed / "bench.key").write_bytes(Path(public).read_bytes())
        return cls(Path(server_secret), allowed, Path(client_secret))

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make *sock* a CURVE client of the collector (before connect)."""
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(self.server_secret)
        public, secret = zmq.auth.load_certificate(self.client_secret)
        assert secret is not None
        sock.curve_serverkey = server_public
        sock.curve_publickey = public
        sock.curve_secretkey = secret


CURVE_NO_PEER = "zlogcollect with CURVE, the line without the peer column"
"""CURVE with a line like the plain default (no ``%(peer)s``): the peer column sends every line
down the formatter's general path, so this variant separates that from the transport's cost.
Not ``DEFAULT_FORMAT`` itself: with CURVE on, the collector takes that as "the default" and adds the peer."""
NO_PEER_FORMAT = DEFAULT_FORMAT.replace(" | %(message)s", ": %(message)s")

RECEIVERS = (
    Receiver("raw pyzmq SUB loop", "raw"),
    Receiver("seed recipe", "seed"),
    Receiver("zlogcollect", "zlogcollect"),
    Receiver("zlogcollect --publish, one subscriber attached", "zlogcollect", publish=True),
    Receiver("zlogcollect --json", "zlogcollect", ("--json",)),
    Receiver("zlogcollect, structured frames", "zlogcollect", (), structured=True),
    Receiver("raw pyzmq SUB loop with CURVE", "raw", curve=True),
    Receiver("zlogcollect with CURVE", "zlogcollect", curve=True),
    Receiver("zlogcollect with CURVE, structured frames", "zlogcollect", structured=True, curve=True),
    Receiver(CURVE_NO_PEER, "zlogcollect", ("--format", NO_PEER_FORMAT), curve=True),
)


def _wait_stopped(pid: int) -> None:
    def stopped() -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return stat.rpartition(")")[2].split()[0] in ("T", "t")

    wait_until(stopped, 5, f"pid {pid} to stop")


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _io_thread_seconds(pid: int) -> float:
    """CPU time of a process's libzmq I/O threads (named ``ZMQbg/IO/N``): where CURVE encrypts and decrypts."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if not (task / "comm").read_text().startswith("ZMQbg/IO"):
                continue
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _records(receiver: Receiver, n: int, root: str) -> list[list[bytes]]:
    """*n* records as a stock PUBHandler sends them (plus the extension for structured frames)."""
    from zlogcollect.wire import encode_extension

    topic = receiver.topic(root, "db.query")
    records = [[topic, (MESSAGE % i + "\n").encode()] for i in range(n)]
    if receiver.structured:
        pub, now = uuid.uuid4().hex[:16], time.time()
        for i, frames in enumerate(records):
            frames.append(
                encode_extension(
                    {
                        "created": now,
                        "host": "bench-host",
                        "pid": 4242,
                        "process": "MainProcess",
                        "thread": "MainThread",
                        "logger": "bench.app",
                        "path": "/srv/app/handlers.py",
                        "line": 42,
                        "func": "handle",
                        "pub": pub,
                        "seq": i,
                    }
                )
            )
    return records


def probe_until_seen(
    sock: zmq.Socket[bytes], receiver: Receiver, tmp: Path, root: str, token: str, timeout: float = 20
) -> None:
    """Send probes every 20 ms until the receiver has one (the subscription arrived)."""
    frames = [receiver.topic(root), f"{PROBE} {token}\n".encode()]
    deadline = time.monotonic() + timeout
    seen = receiver.watch(tmp, root, PROBE, token)
    while not seen():
        if time.monotonic() > deadline:
            raise BenchError(f"{receiver.label} never wrote a probe")
        sock.send_multipart(frames)
        time.sleep(0.02)


def drain_once(
    receiver: Receiver,
    n: int,
    attach: Callable[[int], Callable[[], None]] | None = None,
    counters_at_end: list[int] | None = None,
    cpu: list[float] | None = None,
    io_cpu: list[float] | None = None,
) -> float:
    """Pre-queue *n* records at a stopped receiver, resume it, time until the sentinel is on disk.

    *attach* (for profiling) is called with the receiver's pid before the drain and returns
    a function called once the sentinel is on disk. *cpu* gets the receiver's CPU time per
    record in µs (all its threads; less sensitive to a busy machine than the rate), *io_cpu*
    the part of it in libzmq's I/O thread.
    """
    root, token = "bench", uuid.uuid4().hex[:12]
    records = _records(receiver, n, root)
    pad = [[receiver.topic(root, "pad"), b"padding after the sentinel\n"]] * PADDING
    sentinel = [receiver.topic(root), f"{SENTINEL} {token}\n".encode()]
    with scratch("cap") as tmp:
        endpoint = tcp_endpoint()
        publish = tcp_endpoint() if receiver.publish else ""
        keys = CurveKeys.create(tmp) if receiver.curve else None
        proc = receiver.start(tmp, endpoint, max_seconds=300, publish=publish, keys=keys)
        subscriber = worker("count_sub", endpoint=publish, max_seconds=300) if publish else None
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            keys.apply(sock)
        sock.connect(endpoint)
        try:
            probe_until_seen(sock, receiver, tmp, root, token)
            if subscriber is not None:
                # The subscription must be in place (and seen by the collector) before the queue fills.
                probe = [receiver.topic(root), f"{PROBE} {token}\n".encode()]
                deadline = time.monotonic() + 20
                while not subscriber.stdout_lines:
                    if time.monotonic() > deadline:
                        raise BenchError("the --publish subscriber never received a record")
                    sock.send_multipart(probe)
                    time.sleep(0.02)
            finish = attach(proc.pid) if attach is not None else None
            writes_before = counters(proc)["file_writes"] if counters_at_end is not None else 0
            proc.send(signal.SIGSTOP)
            _wait_stopped(proc.pid)
            send = sock.send_multipart
            for frames in records:
                send(frames)
            send(sentinel)
            for frames in pad:
                send(frames)
            cpu_before = _cpu_seconds(proc.pid)
            io_before = _io_thread_seconds(proc.pid)
            t0 = time.perf_counter()
            proc.send(signal.SIGCONT)
            t1 = wait_until(
                receiver.watch(tmp, root, SENTINEL, token), 300, f"the sentinel from {receiver.label}", POLL
            )
            if cpu is not None:
                cpu.append((_cpu_seconds(proc.pid) - cpu_before) / n * 1e6)
            if io_cpu is not None:
                io_cpu.append((_io_thread_seconds(proc.pid) - io_before) / n * 1e6)
            if finish is not None:
                finish()
            if counters_at_end is not None:  # file writes during the drain (zlogcollect only)
                counters_at_end.append(counters(proc)["file_writes"] - writes_before)
            return n / (t1 - t0)
        finally:
            sock.close(0)
            ctx.term()
            proc.stop()
            if subscriber is not None:
                subscriber.kill()


def wait_for_quiet(
    tails: list[FileTail], last_total: int, last_change: float, pad_file: Path | None
) -> float:
    """Until the files stop growing for 0.5 s (and *pad_file* has all the padding), at most 30 s.

    Returns when they last grew (``time.perf_counter()``), *last_change* if they did not.
    """
    quiet_since = time.perf_counter()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        total = sum(tail.count_new() for tail in tails)
        now = time.perf_counter()
        if total != last_total:
            last_total, last_change, quiet_since = total, now, now
        pad_done = pad_file is None or count_lines(pad_file, (PROBE.encode(),)) >= PADDING
        if pad_done and now - quiet_since > 0.5:
            break
        time.sleep(POLL * 2)
    return last_change


def live_once(receiver: Receiver, senders: int, count: int) -> tuple[float, float, float]:
    """*senders* stock PUBHandler apps log *count* records each as fast as they can.

    Returns (delivered/sent, delivered records/s from "go" to the last line on disk,
    mean sender-side records/s).
    """
    tokens = [uuid.uuid4().hex[:12] for _ in range(senders)]
    roots = [f"live{k}" for k in range(senders)]
    padded = receiver.kind == "zlogcollect"  # the seed writes (and flushes) every record at once
    with scratch("live") as tmp:
        endpoint = tcp_endpoint()
        proc = receiver.start(tmp, endpoint, max_seconds=300)
        apps: list[Proc] = []
        ctx = zmq.Context()
        pad_sock = ctx.socket(zmq.PUB)
        pad_sock.setsockopt(zmq.SNDHWM, 0)
        pad_sock.setsockopt(zmq.LINGER, 0)
        pad_sock.connect(endpoint)
        try:
            for root, token in zip(roots, tokens, strict=True):
                apps.append(
                    worker(
                        "live_sender",
                        stdin=True,
                        endpoint=endpoint,
                        root=root if receiver.rooted else "",
                        token=token,
                        count=count,
                        max_seconds=120,
                    )
                )
            files = sorted({receiver.file(tmp, root) for root in roots})
            for root, token in zip(roots, tokens, strict=True):
                wait_until(receiver.watch(tmp, root, PROBE, token), 20, f"a probe from {root}")
            if padded:
                # Subscribed now: after the senders it is too late (the timer flush comes first).
                probe_until_seen(pad_sock, receiver, tmp, "pad", uuid.uuid4().hex[:12])
            tails = [FileTail(path) for path in files]
            last_total = sum(tail.count_new() for tail in tails)
            t_go = last_change = time.perf_counter()
            for app in apps:
                app.tell("go")
            results = []
            for app in apps:
                while app.alive():
                    total = sum(tail.count_new() for tail in tails)
                    if total != last_total:
                        last_total, last_change = total, time.perf_counter()
                    time.sleep(POLL * 2)
                results.append(app.wait_json(10))
            if padded:
                pad = [receiver.topic("pad", "pad"), b"padding after the senders\n"]
                for _ in range(PADDING):
                    pad_sock.send_multipart(pad)
            pad_file = receiver.file(tmp, "pad") if padded else None
            last_change = wait_for_quiet(tails, last_total, last_change, pad_file)
            delivered = sum(count_lines(path, (PROBE.encode(),)) for path in files)
            sent = senders * count
            sender_rate = sum(r["sent"] / r["seconds"] for r in results) / senders
            return delivered / sent, delivered / (last_change - t_go), sender_rate
        finally:
            for app in apps:
                app.kill()
            pad_sock.close(0)
            ctx.term()
            proc.stop()


def run(settings: Settings, outcome: Outcome) -> None:
    n = settings.pick(200_000, 5_000)
    count = settings.pick(50_000, 2_000)
    outcome.notes.append(
        f"drain: {n:,} records pre-queued at a SIGSTOPped receiver, timed from SIGCONT to the sentinel on disk"
    )
    for run_index in range(settings.runs):
        for receiver in RECEIVERS:
            cpu: list[float] = []
            io_cpu: list[float] = []
            plain_run = receiver.kind == "zlogcollect" and (not receiver.args or receiver.curve)
            rate = drain_once(
                receiver, n, cpu=cpu if plain_run else None, io_cpu=io_cpu if plain_run else None
            )
            outcome.figure(f"drain: {receiver.label}", "records/s").values.append(rate)
            if cpu:
                outcome.figure(
                    f"drain CPU: {receiver.label}", "µs/record", higher_is_better=False
                ).values.append(cpu[0])
            if io_cpu and (receiver.curve or not receiver.publish):
                outcome.figure(
                    f"drain CPU in libzmq's I/O thread: {receiver.label}", "µs/record", higher_is_better=False
                ).values.append(io_cpu[0])
            progress(f"capacity run {run_index + 1}: {receiver.label}: {rate:,.0f} records/s")
    live_receivers = [r for r in RECEIVERS if r.kind == "seed" or (r.kind == "zlogcollect" and not r.args)]
    live_receivers = [r for r in live_receivers if not r.structured and not r.publish and not r.curve]
    outcome.notes.append(
        f"live: stock PUBHandler senders (default SNDHWM 1000), {count:,} records each as fast as they can"
    )
    for run_index in range(settings.runs):
        for senders in (1, 3):
            for receiver in live_receivers:
                ratio, rate, sender_rate = live_once(receiver, senders, count)
                label = f"live {senders} sender{'s' if senders > 1 else ''}: {receiver.label}"
                outcome.figure(f"{label}: delivered/sent", "ratio").values.append(ratio)
                outcome.figure(f"{label}: delivered rate", "records/s").values.append(rate)
                outcome.figure(f"{label}: sender rate (each)", "records/s").values.append(sender_rate)
                progress(
                    f"capacity run {run_index + 1}: {label}: {ratio:.1%} delivered, {rate:,.0f} records/s"
                )
    ours, raw, seed = "drain: zlogcollect", "drain: raw pyzmq SUB loop", "drain: seed recipe"
    outcome.ratio_check("zlogcollect drain / raw SUB loop", ours, raw, 0.8, detail="long-run aim")
    outcome.ratio_check("zlogcollect drain / raw SUB loop (hot-path issue)", ours, raw, 0.6)
    outcome.ratio_check(
        "structured records / plain records, drain", "drain: zlogcollect, structured frames", ours, 0.9
    )
    outcome.ratio_check("zlogcollect drain / seed recipe", ours, seed, 5.0)
    publishing = "drain: zlogcollect --publish, one subscriber attached"
    outcome.ratio_check("zlogcollect --publish (one subscriber) / zlogcollect", publishing, ours, 0.9)
    outcome.derived["drain CPU per record: zlogcollect / zlogcollect --publish"] = outcome.ratio(
        "drain CPU: zlogcollect", "drain CPU: zlogcollect --publish, one subscriber attached"
    )
    curve, structured = "drain: zlogcollect with CURVE", "drain: zlogcollect, structured frames"
    outcome.derived["CURVE / plain, drain (records/s)"] = outcome.ratio(curve, ours)
    outcome.derived["CURVE / plain, drain, structured frames (records/s)"] = outcome.ratio(
        "drain: zlogcollect with CURVE, structured frames", structured
    )
    outcome.derived["CURVE / plain, raw pyzmq SUB loop (records/s)"] = outcome.ratio(
        "drain: raw pyzmq SUB loop with CURVE", raw
    )
    outcome.derived["CURVE without the peer column / plain, drain (records/s)"] = outcome.ratio(
        f"drain: {CURVE_NO_PEER}", ours
    )
    outcome.derived["CURVE without the peer column / plain, drain CPU per record"] = outcome.ratio(
        f"drain CPU: {CURVE_NO_PEER}", "drain CPU: zlogcollect"
    )
    outcome.derived["CURVE / plain, drain CPU per record (all the collector's threads)"] = outcome.ratio(
        "drain CPU: zlogcollect with CURVE", "drain CPU: zlogcollect"
    )
    outcome.derived["CURVE / plain, drain CPU per record, structured frames"] = outcome.ratio(
        "drain CPU: zlogcollect with CURVE, structured frames", "drain CPU: zlogcollect, structured frames"
    )
    for label in ("zlogcollect --json", "zlogcollect, structured frames"):
        outcome.derived[f"drain: {label} / raw"] = outcome.ratio(f"drain: {label}", raw)
        outcome.derived[f"drain: {label} / seed"] = outcome.ratio(f"drain: {label}", seed)
