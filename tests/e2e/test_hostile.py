"""Hostile peers against a real `zlogcollect collect`: raw PUB sockets sending what they like."""

from __future__ import annotations

import json
import resource
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.helpers import (
    CollectorProcess,
    counter,
    free_tcp_endpoint,
    read_lines,
    short_ipc_endpoint,
    wait_until,
)
from tests.helpers import (
    RawSender as BareSender,
)

pytestmark = pytest.mark.e2e


def start(collectors: list[CollectorProcess], *args: str) -> CollectorProcess:
    proc = CollectorProcess(["--flush-interval", "0.1", *args])
    collectors.append(proc)
    proc.wait_ready()
    return proc


def ext(**fields: object) -> bytes:
    """An extension frame exactly as ZLogHandler sends it (compact JSON, version 1)."""
    return json.dumps({"v": 1, **fields}, separators=(",", ":")).encode()


class RawSender(BareSender):
    """The shared raw sender, plus a wait until the collector counts its records."""

    def wait_connected(self, proc: CollectorProcess) -> None:
        """Send stock probe records until the collector counts more (SIGUSR1, JSON counters)."""
        baseline = counter(proc, "received") if lines_with(proc, "counters:") else 0

        def seen() -> bool:
            self.send(b"zlprobe.INFO", b"probe")
            proc.send(signal.SIGUSR1)
            wait_until(lambda: any("counters:" in line for line in proc.stderr_lines), 20)
            return counter(proc, "received") > baseline

        wait_until(seen, 30, interval=0.05, what="the collector to receive a probe")


def lines_with(proc: CollectorProcess, text: str) -> list[str]:
    return [line for line in proc.stderr_lines if text in line]


def test_custom_level_from_the_handler_lands_in_the_app_file(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """app1.NOTICE with levelname/levelno in the extension is a NOTICE record; quarantined is never lost."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    sender = RawSender(endpoint)
    meta = {"host": "web01", "pid": 4242, "created": 1795620119.5, "pub": "e98848f8a008e39a"}
    try:
        sender.wait_connected(proc)
        sender.send(b"app1.NOTICE", b"first", ext(levelname="NOTICE", levelno=25, seq=0, **meta))
        # Quarantined (no level, no levelname), but its seq was used: not a gap.
        sender.send(b"app1.BOGUS", b"odd", ext(levelno=26, seq=1, **meta))
        sender.send(b"app1.NOTICE.db", b"second", ext(levelname="NOTICE", levelno=25, seq=2, **meta))
        # A stock sender with the same unknown level: quarantined with a hint, warned about once.
        sender.send(b"app2.NOTICE", b"stock 1")
        sender.send(b"app2.NOTICE", b"stock 2")
        sender.send(b"app2.NOTICE", b"stock 3")
        wait_until(lambda: len(read_lines(logdir / "app1.log")) >= 2, what="app1.log")
        wait_until(lambda: len(read_lines(logdir / "_malformed.log")) >= 4, what="_malformed.log")
    finally:
        sender.close()
    assert proc.stop() == 0
    lines = read_lines(logdir / "app1.log")
    assert [line.split(" | ")[1].strip() for line in lines] == ["NOTICE", "NOTICE"]
    assert "first" in lines[0] and "second" in lines[1]
    quarantined = read_lines(logdir / "_malformed.log")
    assert (
        sum("no_level | unknown level 'NOTICE' \u2014 add --level NOTICE=25" in q for q in quarantined) == 3
    )
    warnings = lines_with(proc, "unknown level 'NOTICE'")
    assert len(warnings) == 1, proc.stderr
    summary = proc.summary()
    assert counter(proc, "lost") == 0, summary
    assert "unseen_before_start" not in summary
    assert not lines_with(proc, "lost 1 records")


def test_many_publishers_with_announced_loss_and_a_forged_host(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """10,001 publishers with loss in one flush: no crash, escaped host, a bounded number of warnings."""
    endpoint = short_ipc_endpoint()
    proc = start(
        collectors, "--bind", endpoint, "--dir", str(logdir), "--flush-interval", "2", "--flush-delay", "2"
    )
    sender = RawSender(endpoint)
    host = "evil\n2026-01-01 00:00:00 zlogcollect[1] ERROR: forged\x1b[31m"
    count = 10_001
    try:
        sender.wait_connected(proc)
        for n in range(count):
            sender.send(b"app.INFO", b"x", ext(pub=f"p{n}", seq=1, dropped=1, host=host, pid=n))
        sender.send(b"done.INFO", b"last")
        wait_until(lambda: read_lines(logdir / "done.log"), 30, what="every record")
    finally:
        sender.close()
    assert proc.stop() == 0, proc.stderr
    proc.summary()
    assert counter(proc, "lost") == count
    assert not lines_with(proc, "Traceback")
    assert not any(line.startswith("2026-01-01") for line in proc.stderr_lines)
    assert "\x1b" not in proc.stderr
    loss_lines = lines_with(proc, "lost 1 records from host")
    assert 1 <= len(loss_lines) <= 10
    assert "evil\\n2026-01-01" in loss_lines[0] and "\\x1b[31m" in loss_lines[0]
    assert lines_with(proc, f"and {count - len(loss_lines)} more publishers lost records")
    assert len(proc.stderr_lines) < 40, proc.stderr


def test_huge_numbers_on_the_wire_are_malformed_and_counters_still_print(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """A 4,299-digit seq is out of range: quarantined, and SIGUSR1 / SIGTERM still print counters."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    sender = RawSender(endpoint)
    huge = b"9" * 4299
    try:
        sender.wait_connected(proc)
        for _ in range(3):
            sender.send(b"app.INFO", b"zero", ext(pub="p", seq=0))
            sender.send(b"app.INFO", b"huge", b'{"v":1,"pub":"p","seq":' + huge + b"}")
        sender.send(b"app.INFO", b"big pid", b'{"v":1,"pub":"q","seq":0,"pid":' + huge + b"}")
        sender.send(b"app.INFO", b"bad dropped", ext(pub="q", seq=1, dropped=2**64))
        wait_until(lambda: len(read_lines(logdir / "_malformed.log")) >= 5, what="_malformed.log")
        before = len(lines_with(proc, "counters:"))
        proc.send(signal.SIGUSR1)
        wait_until(lambda: len(lines_with(proc, "counters:")) > before, what="the counters line")
    finally:
        sender.close()
    assert proc.stop() == 0, proc.stderr
    summary = proc.summary()
    assert "bad_extension:5" in summary, summary
    assert counter(proc, "lost") == 0
    malformed = read_lines(logdir / "_malformed.log")
    assert (
        "seq must be an integer in 0..9223372036854775807, got an integer of over 100 digits" in malformed[0]
    )


def test_a_frame_over_the_record_limit_is_refused_by_libzmq(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """A frame bigger than --max-record-bytes can never be a record: it is never buffered or received."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir), "--max-record-bytes", "4096")
    sender = RawSender(endpoint)
    try:
        sender.wait_connected(proc)
        sender.send(b"big.INFO", b"x" * 100_000, b"y" * 100_000)
    finally:
        sender.close()
    # libzmq disconnects the peer that sent the oversized frame; others go on.
    again = RawSender(endpoint)
    try:
        again.wait_connected(proc)
        again.send(b"after.INFO", b"still here")
        wait_until(lambda: read_lines(logdir / "after.log"), what="a record after the oversized one")
    finally:
        again.close()
    assert proc.stop() == 0
    summary = proc.summary()
    assert counter(proc, "malformed") == 0, summary  # it was never received, so never buffered


def test_long_topics_and_oversized_fields_are_malformed_and_not_kept(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """Topics over 1,024 bytes and a 300 kB host are refused; _publishers.json stays small."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    sender = RawSender(endpoint)
    try:
        sender.wait_connected(proc)
        for n in range(50):
            sender.send(f"app{n}.INFO.".encode() + b"t" * 2000, b"x")
        for n in range(20):
            sender.send(b"app.INFO", b"x", ext(pub=f"h{n}", seq=0, host="h" * 300_000, pid=n))
        sender.send(b"app.INFO", b"x", ext(pub="p" * 100_000, seq=0))
        sender.send(b"app.INFO", b"x", ext(pub="ok", seq=0, pid="1" * 1000))
        wait_until(lambda: len(read_lines(logdir / "_malformed.log")) >= 72, what="_malformed.log")
    finally:
        sender.close()
    assert proc.stop() == 0
    summary = proc.summary()
    assert "topic_too_long:50" in summary and "bad_extension:22" in summary, summary
    state = (logdir / "_publishers.json").read_bytes()
    assert len(state) < 10_000
    saved = json.loads(state)["publishers"]
    assert all(len(name) <= 64 and len(entry["host"]) <= 255 for name, entry in saved.items())
    assert counter(proc, "lost") == 0


class LimitedCollector(CollectorProcess):
    """A collector whose hard limit on open files is *nofile*, so it cannot raise it."""

    def __init__(self, args: Sequence[str], nofile: int) -> None:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        super().__init__(args, preexec=limit)


def test_failed_accepts_are_counted_when_descriptors_run_out(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """Out of descriptors, libzmq cannot accept: each failure is counted, with a bounded warning."""
    endpoint = free_tcp_endpoint()
    proc = LimitedCollector(["--flush-interval", "0.1", "--bind", endpoint, "--dir", str(logdir)], 64)
    collectors.append(proc)
    proc.wait_ready()
    host, port = endpoint[len("tcp://") :].rsplit(":", 1)
    peers = []
    try:
        for _ in range(100):
            peers.append(socket.create_connection((host, int(port))))

        def counted() -> bool:
            proc.send(signal.SIGUSR1)
            wait_until(lambda: lines_with(proc, "counters:"), 20)
            return "accept_failed:" in lines_with(proc, "counters:")[-1]

        wait_until(counted, 30, interval=0.2, what="accept_failed in the counters")
    finally:
        for peer in peers:
            peer.close()
    assert proc.stop() == 0
    assert 1 <= len(lines_with(proc, "cannot accept connections")) <= 3


def test_state_is_saved_with_every_batch_so_a_kill_does_not_over_report(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """SIGKILL between flush timers, then restart: reported loss is what is really missing, within a batch."""
    endpoint = short_ipc_endpoint()
    args = ["--bind", endpoint, "--dir", str(logdir)]
    # Run 0 ends cleanly: its state says seq 9 was the last one written.
    zero = start(collectors, *args)
    sender = RawSender(endpoint)
    try:
        sender.wait_connected(zero)
        for seq in range(10):
            sender.send(b"app.INFO", f"{seq:06d}".encode(), ext(pub="p", seq=seq))
        wait_until(lambda: len(read_lines(logdir / "app.log")) >= 10, what="the first records")
    finally:
        sender.close()
    assert zero.stop() == 0
    # Run 1 writes in batches of 256 KiB; its 60 s flush timer and delay never run out before the kill.
    first = start(collectors, *args, "--flush-interval", "60", "--flush-delay", "60")
    sender = RawSender(endpoint)
    end = 3010
    try:
        sender.wait_connected(first)
        for seq in range(10, end):
            sender.send(b"app.INFO", f"{seq:06d} ".encode() + b"x" * 1000, ext(pub="p", seq=seq))
        wait_until(lambda: len(read_lines(logdir / "app.log")) >= 2500, 30, what="early writes")
    finally:
        sender.close()
    first.kill()
    written = len(read_lines(logdir / "app.log"))
    second = start(collectors, *args)
    sender = RawSender(endpoint)
    try:
        sender.wait_connected(second)
        sender.send(b"app.INFO", b"after", ext(pub="p", seq=end))
        wait_until(lambda: "after" in (logdir / "app.log").read_text(), what="the record after the restart")
    finally:
        sender.close()
    assert second.stop() == 0
    missing = end - written
    lost = counter(second, "lost")
    assert missing <= lost <= missing + 1000, (missing, lost)


@pytest.mark.parametrize(
    "content",
    ['{"publishers": null}', "[]", '"text"', '{"publishers": {"p": {"seq": "x"}}}', '{"publishers": 5}'],
)
def test_a_state_file_of_the_wrong_shape_is_ignored(
    collectors: list[CollectorProcess], logdir: Path, content: str
) -> None:
    """_publishers.json holding the wrong shape is ignored with a warning, not exit 1."""
    (logdir / "_publishers.json").write_text(content)
    proc = start(collectors, "--bind", short_ipc_endpoint(), "--dir", str(logdir))
    assert proc.stop() == 0
    assert lines_with(proc, "_publishers.json"), proc.stderr
    assert not lines_with(proc, "Traceback")


def test_a_link_planted_as_the_state_temp_file_is_not_followed(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """_publishers.json.tmp pointing elsewhere is replaced, never written through."""
    target = tmp_path / "victim"
    target.write_text("precious\n")
    (logdir / "_publishers.json.tmp").symlink_to(target)
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    sender = RawSender(endpoint)
    try:
        sender.wait_connected(proc)
        sender.send(b"app.INFO", b"x", ext(pub="p", seq=0))
        wait_until(lambda: (logdir / "_publishers.json").exists(), what="the state file")
    finally:
        sender.close()
    assert proc.stop() == 0
    assert target.read_text() == "precious\n"
    assert "p" in json.loads((logdir / "_publishers.json").read_text())["publishers"]


class FailingSink:
    """A sink whose write always fails (a bug in a sink must not stop the loop nor forge stderr)."""

    def write(self, record: object) -> None:
        raise RuntimeError(f"cannot write {record!r}")

    def quarantine(self, reason: str, detail: str, frames: Sequence[bytes]) -> None: ...
    def flush(self) -> None: ...
    def reopen(self) -> None: ...
    def close(self) -> None: ...


def test_sink_failures_name_the_source_escaped_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """A source with a newline and an escape sequence is shown escaped, traceback on the same line."""
    from zlogcollect.collector import Collector
    from zlogcollect.stats import Stats

    stats = Stats()
    collector = Collector([FailingSink()], stats)
    with caplog.at_level("ERROR", logger="zlogcollect.collector"):
        collector.dispatch([b"evil\n2026 zlogcollect ERROR: forged\x1b[2J.INFO", b"x"])
        collector.dispatch([b"evil.INFO", b"again"])
    assert stats.dropped["sink_error"] == 2
    (message,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in message and "\x1b" not in message
    # The newline and the ESC were escaped on receive (the source holds "\\n" and "\\x1b"), and again for stderr.
    assert "evil\\\\n2026 zlogcollect ERROR: forged\\\\x1b[2J" in message and "RuntimeError" in message


def received(proc: CollectorProcess) -> int:
    """The collector's `received` counter now (SIGUSR1; the JSON is written before the line)."""
    before = len(lines_with(proc, "counters:"))
    proc.send(signal.SIGUSR1)
    wait_until(lambda: len(lines_with(proc, "counters:")) > before, 20, what="a counters line")
    return counter(proc, "received")


def kill_and_count_loss(
    collectors: list[CollectorProcess], first: CollectorProcess, args: list[str], logdir: Path, next_seq: int
) -> tuple[int, CollectorProcess]:
    """SIGKILL *first*, restart on the same directory, send seq *next_seq*: (records missing, the restart)."""
    first.kill()
    on_disk = {int(line.rsplit(" ", 1)[1]) for line in read_lines(logdir / "app.log") if " seq " in line}
    second = start(collectors, *args)
    sender = RawSender(args[1])
    try:
        sender.wait_connected(second)
        sender.send(b"app.INFO", f"seq {next_seq}".encode(), ext(pub="p", seq=next_seq))
        wait_until(
            lambda: f"seq {next_seq}" in "".join(read_lines(logdir / "app.log")), what="the record after"
        )
    finally:
        sender.close()
    assert second.stop() == 0
    return next_seq - len(on_disk), second


def test_a_kill_right_after_a_timer_flush_counts_the_pending_record_lost(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """The state saved after a timed flush never claims a record that is still only in memory."""
    args = ["--bind", short_ipc_endpoint(), "--dir", str(logdir)]
    first = start(collectors, *args, "--flush-interval", "2", "--flush-delay", "2")
    sender = RawSender(args[1])
    try:
        sender.wait_connected(first)
        for seq in range(10):
            sender.send(b"app.INFO", f"seq {seq}".encode(), ext(pub="p", seq=seq))
        wait_until(lambda: len(read_lines(logdir / "app.log")) >= 10, what="the timed flush")
        count = received(first)
        sender.send(b"app.INFO", b"seq 10", ext(pub="p", seq=10))  # waits out the 2 s --flush-delay
        wait_until(lambda: received(first) > count, what="seq 10 received")
    finally:
        sender.close()
    missing, second = kill_and_count_loss(collectors, first, args, logdir, 11)
    assert counter(second, "lost") == missing, second.summary()


def test_records_of_a_publisher_new_to_a_killed_run_count_as_lost_not_unseen(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """A run killed before it wrote anything of a new publisher: the next run reports those records lost."""
    args = ["--bind", short_ipc_endpoint(), "--dir", str(logdir)]
    first = start(collectors, *args, "--flush-interval", "60", "--flush-delay", "60")
    sender = RawSender(args[1])
    try:
        sender.wait_connected(first)
        count = received(first)
        for seq in range(500):
            sender.send(b"app.INFO", f"seq {seq}".encode(), ext(pub="p", seq=seq))
        wait_until(lambda: received(first) >= count + 500, what="500 records received")
    finally:
        sender.close()
    missing, second = kill_and_count_loss(collectors, first, args, logdir, 500)
    assert missing == 500
    assert counter(second, "lost") == 500, second.summary()
    assert counter(second, "unseen_before_start") == 0
