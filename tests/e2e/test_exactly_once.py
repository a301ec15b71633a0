"""Exactly once on the collector side, with a real collector and raw-frame publishers replaying seqs.

A ZLogHandler re-sends its last records when a collector (re)subscribes; here
a bare socket sends the same frames again (same pub and seq), as it would.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from tests.helpers import (
    CollectorProcess,
    counter,
    read_lines,
    short_ipc_endpoint,
    wait_until,
)
from tests.helpers import (
    RawSender as BareSender,
)
from zlogcollect.seqtrack import MAX_GAPS

pytestmark = pytest.mark.e2e


def start(collectors: list[CollectorProcess], logdir: Path, endpoint: str, *args: str) -> CollectorProcess:
    proc = CollectorProcess(["--flush-interval", "0.1", "--bind", endpoint, "--dir", str(logdir), *args])
    collectors.append(proc)
    proc.wait_ready()
    return proc


class Publisher(BareSender):
    """One publisher's records as raw frames: ``app.INFO``, the seq as text, the extension."""

    def __init__(self, endpoint: str, pub: str = "p", padding: int = 0) -> None:
        super().__init__(endpoint)
        self.pub = pub
        self.padding = b" " + b"x" * padding if padding else b""

    def record(self, seq: int) -> None:
        extension = {"v": 1, "pub": self.pub, "seq": seq, "host": "h", "pid": 7}
        self.send(b"app.INFO", f"{seq:07d}".encode() + self.padding, json.dumps(extension).encode())

    def wait_connected(self, proc: CollectorProcess) -> None:
        """Stock probe records until the collector counts one (SIGUSR1, JSON counters)."""
        baseline = counter(proc, "received") if any("counters:" in x for x in proc.stderr_lines) else 0

        def seen() -> bool:
            self.send(b"zlprobe.INFO", b"probe")
            start = len(proc.stderr_lines)
            proc.send(signal.SIGUSR1)
            proc.wait_stderr("counters:", 20, start=start)
            return counter(proc, "received") > baseline

        wait_until(seen, 30, interval=0.05, what="the collector to receive a probe")


def received_all(proc: CollectorProcess, count: int) -> bool:
    """The collector received at least *count* records and nothing more since (it is idle)."""
    before = proc.ask_counters()["received"]
    return bool(before >= count and proc.ask_counters()["received"] == before)


def lines_at_least(logdir: Path, count: int) -> Callable[[], bool]:
    return lambda: len(read_lines(logdir / "app.log")) >= count


def seqs_on_disk(logdir: Path) -> Counter[int]:
    return Counter(int(line.split(" | ")[-1].split()[0]) for line in read_lines(logdir / "app.log"))


def send(proc: CollectorProcess, endpoint: str, seqs: list[int], padding: int = 0) -> None:
    publisher = Publisher(endpoint, padding=padding)
    try:
        publisher.wait_connected(proc)
        for seq in seqs:
            publisher.record(seq)
    finally:
        publisher.close()


def test_a_replay_is_written_once_and_fills_the_gap_it_finds(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """0..99 with 60..69 lost, then 50..120 again: every seq on disk once, lost 0, 10 recovered."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, logdir, endpoint)
    first = [seq for seq in range(100) if not 60 <= seq < 70]
    send(proc, endpoint, first + list(range(50, 121)))
    wait_until(lambda: len(read_lines(logdir / "app.log")) >= 121, 30, what="121 lines")
    assert proc.stop() == 0
    assert seqs_on_disk(logdir) == Counter(range(121))
    counters = proc.counters()
    assert (counters["lost"], counters["recovered"], counters["replayed_duplicates"]) == (0, 10, 40)
    assert "replayed_duplicates=40 recovered=10" in proc.summary()
    assert counters["received"] == counters["written"] + counters["replayed_duplicates"]


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM", "SIGKILL, journal only"])
def test_a_restarted_collector_drops_what_it_had_written(
    collectors: list[CollectorProcess], logdir: Path, stop: str
) -> None:
    """Records written by a run that was killed (or stopped) and replayed to the next: on disk once.

    The first run writes only in 256 KiB batches (no flush timer before the kill), so the
    records it received after its last batch are still in memory when it dies: the replay brings those, the
    state tells the next run which ones it already has. "journal only": _publishers.json
    cannot be saved at all (a directory planted as its temporary file), so only the
    journal says what reached the disk, across both runs.
    """
    endpoint = short_ipc_endpoint()
    end = 3000
    if stop.endswith("journal only"):
        (logdir / "_publishers.json.tmp").mkdir()
    first = start(collectors, logdir, endpoint, "--flush-interval", "60", "--flush-delay", "60")
    send(first, endpoint, list(range(end)), padding=1000)
    # Killed once it received everything (between batches: a kill in the middle of a batch's
    # write leaves that batch's lines to be written again, the residual window docs/OPERATIONS.md names).
    wait_until(lambda: received_all(first, end), 60, what="every record received")
    if stop.startswith("SIGKILL"):
        first.kill()
    else:
        assert first.stop() == 0
    written = len(read_lines(logdir / "app.log"))
    assert (logdir / "_publishers.journal").exists()
    second = start(collectors, logdir, endpoint)
    send(second, endpoint, list(range(end + 100)), padding=1000)
    wait_until(lambda: len(read_lines(logdir / "app.log")) >= end + 100, 30, what="the replay")
    assert second.stop() == 0
    assert seqs_on_disk(logdir) == Counter(range(end + 100))
    counters = second.counters()
    assert counters["lost"] == 0, counters
    assert counters["replayed_duplicates"] == written, (written, counters)
    if stop.endswith("journal only"):
        assert counters["errors"]["state_file"] > 0
        assert not (logdir / "_publishers.json").exists()


def test_a_sparse_publisher_keeps_the_gap_cap(collectors: list[CollectorProcess], logdir: Path) -> None:
    """Every 40th seq up to 2 million: lost is exact, the saved gaps stay at the cap, the journal small."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, logdir, endpoint)
    count = 50_000
    send(proc, endpoint, [seq * 40 for seq in range(count)])
    wait_until(lambda: len(read_lines(logdir / "app.log")) >= count, 60, what="every record")
    assert proc.stop() == 0
    assert proc.counter("lost") == (count - 1) * 39
    entry = json.loads((logdir / "_publishers.json").read_text())["publishers"]["p"]
    assert entry["seq"] == (count - 1) * 40
    assert len(entry["gaps"]) == MAX_GAPS
    assert (logdir / "_publishers.journal").stat().st_size < 64 * 1024


class ReplayingPublisher(threading.Thread):
    """What ZLogHandler does, from a bare XPUB socket: connect, send records at *rate*, keep the last
    *window* of them, and re-send those, in order, whenever a collector (re)subscribes (XPUB_VERBOSE).

    The socket lives in this thread only; the test pauses, resumes and stops it through events.
    """

    def __init__(self, endpoint: str, rate: float = 1000.0, window: int = 3000) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.rate = rate
        self.kept: deque[list[bytes]] = deque(maxlen=window)
        self.sent = 0
        self.resubscriptions = 0
        self.running = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def frames(self, seq: int) -> list[bytes]:
        extension = {"v": 1, "pub": "replaying", "seq": seq, "host": "h", "pid": 7}
        text = f"{seq:07d} ".encode() + b"x" * 200
        return [b"app.INFO", text, json.dumps(extension).encode()]

    def run(self) -> None:
        context = zmq.Context()
        sock = context.socket(zmq.XPUB)
        try:
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.connect(self.endpoint)
            next_at = time.monotonic()
            while not self.done.is_set():
                while sock.poll(0, zmq.POLLIN):
                    if sock.recv()[:1] == b"\x01":  # a (re)subscription: the window first
                        self.resubscriptions += 1
                        for frames in self.kept:
                            sock.send_multipart(frames)
                if not self.running.wait(0.01):
                    next_at = time.monotonic()
                    continue
                now = time.monotonic()
                if now < next_at:
                    time.sleep(min(next_at - now, 0.01))
                    continue
                frames = self.frames(self.sent)
                sock.send_multipart(frames)
                self.kept.append(frames)
                self.sent += 1
                next_at += 1 / self.rate
        except BaseException as exc:  # reported to the test by stop()
            self.error = exc
        finally:
            sock.close(linger=5000)
            context.term()

    def sent_at_least(self, count: int) -> Callable[[], bool]:
        return lambda: self.sent >= count

    def stop(self) -> None:
        self.done.set()
        self.join(30)
        assert not self.is_alive() and self.error is None, self.error


def test_collector_restarts_under_load_leave_every_record_once(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """A publisher at 1,000 records/s that replays its last 3,000 on every subscription; the collector
    is SIGKILLed, SIGTERMed, SIGKILLed (each time once what it received is written) and started again on
    the same --dir while records queue in the publisher's socket: every record on disk once, lost 0."""
    endpoint = short_ipc_endpoint()
    publisher = ReplayingPublisher(endpoint)
    publisher.start()
    try:
        proc = start(collectors, logdir, endpoint)
        publisher.running.set()
        for stop in ("SIGKILL", "SIGTERM", "SIGKILL"):
            wait_until(lambda: publisher.sent >= 1000 * (len(collectors)), 60, what="records sent")
            publisher.running.clear()  # quiet: the kill lands between batches, not inside one
            sent = publisher.sent
            wait_until(lines_at_least(logdir, sent), 60, what="what was sent written")
            if stop == "SIGKILL":
                proc.kill()
            else:
                assert proc.stop() == 0
            publisher.running.set()  # records queue in the socket while no collector runs
            wait_until(publisher.sent_at_least(sent + 300), 60, what="records sent during the outage")
            proc = start(collectors, logdir, endpoint)
            wait_until(lambda: publisher.resubscriptions >= len(collectors), 60, what="the resubscription")
        wait_until(lambda: publisher.sent >= 1000 * len(collectors), 60, what="the last records sent")
        publisher.running.clear()
        sent = publisher.sent
        wait_until(lambda: len(read_lines(logdir / "app.log")) >= sent, 60, what="every record written")
    finally:
        publisher.stop()
    assert proc.stop() == 0
    assert seqs_on_disk(logdir) == Counter(range(sent))
    counters = proc.counters()
    assert counters["lost"] == 0, counters
    assert counters["replayed_duplicates"] > 0, counters
