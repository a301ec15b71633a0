"""Exactly once on the collector side, with a real collector and raw-frame publishers replaying seqs.

A ZLogHandler re-sends its last records when a collector (re)subscribes; here
a bare socket sends the same frames again (same pub and seq), as it would.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest

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

    The first run writes only in 256 KiB batches (no flush timer before the kill), so some
    records it received are still in memory when it dies: the replay brings those, the
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
    wait_until(lambda: len(read_lines(logdir / "app.log")) >= 2000, 30, what="early writes")
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
