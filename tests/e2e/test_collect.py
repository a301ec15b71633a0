"""The `zlogcollect collect` daemon as a real process, fed by stock pyzmq PUBHandlers."""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import (
    CollectorProcess,
    StockSender,
    counter,
    free_tcp_endpoint,
    one_error_line,
    read_lines,
    run_collector,
    short_ipc_endpoint,
    wait_until,
)

pytestmark = pytest.mark.e2e

# time | level | source | origin (host:pid, "-" for stock senders) | subtopic | message
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| (\w+) \| ([^|]+) \| [^|]+ \| ([^|]+) \| (.*)$")


def start(collectors: list[CollectorProcess], *args: str) -> CollectorProcess:
    proc = CollectorProcess(["--flush-interval", "0.1", *args])
    collectors.append(proc)
    proc.wait_ready()
    return proc


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_stock_handlers_reach_per_source_files_and_errors_log(
    collectors: list[CollectorProcess], logdir: Path, transport: str
) -> None:
    """Records from stock PUBHandlers land in {source}.log with level and subtopic; errors also in errors.log."""
    endpoint = free_tcp_endpoint() if transport == "tcp" else short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    app1 = StockSender(endpoint, "app1")
    web = StockSender(endpoint, "shop.web")
    rootless = StockSender(endpoint, "")
    try:
        app1.wait_connected(logdir)
        web.wait_connected(logdir)
        rootless.wait_connected(logdir)
        app1.logger.info("hello %s", "world")
        app1.logger.error("db.query::timeout after %d ms", 30)
        web.logger.warning("cart::slow")
        web.logger.critical("down")
        rootless.logger.debug("no root")
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            app1.logger.exception("it broke")
        wait_until(lambda: len(read_lines(logdir / "errors.log")) >= 4, what="errors.log")
    finally:
        for sender in (app1, web, rootless):
            sender.close()
    assert proc.stop() == 0

    app1_lines = [LINE.match(line) for line in read_lines(logdir / "app1.log")]
    parsed = [m.groups() for m in app1_lines if m]
    assert ("INFO", "app1", "-", "hello world") in parsed
    assert ("ERROR", "app1", "db.query", "timeout after 30 ms") in parsed
    text = (logdir / "app1.log").read_text()
    assert "Traceback (most recent call last)" in text
    assert "ZeroDivisionError: boom" in text
    web_parsed = [m.groups() for m in map(LINE.match, read_lines(logdir / "shop.web.log")) if m]
    assert ("WARNING", "shop.web", "cart", "slow") in web_parsed
    assert ("CRITICAL", "shop.web", "-", "down") in web_parsed
    default = [m.groups() for m in map(LINE.match, read_lines(logdir / "default.log")) if m]
    assert default == [("DEBUG", "-", "-", "no root")]
    errors = [m.groups() for m in map(LINE.match, read_lines(logdir / "errors.log")) if m]
    # Two senders race, so only the set of lines is fixed, not their order.
    assert sorted((g[0], g[1], g[3]) for g in errors) == [
        ("CRITICAL", "shop.web", "down"),
        ("ERROR", "app1", "it broke"),
        ("ERROR", "app1", "timeout after 30 ms"),
    ]
    proc.summary()
    assert counter(proc, "malformed") == 0


def test_routes_with_wildcards_and_placeholders(collectors: list[CollectorProcess], logdir: Path) -> None:
    """--route PATTERN=FILE sends matching records to extra files, with {source} and {level} filled in."""
    endpoint = short_ipc_endpoint()
    proc = start(
        collectors,
        "--bind", endpoint, "--dir", str(logdir),
        "--route", "app1.ERROR.#=app1-errors.log",
        "--route", "*.*.db.#=db/{source}-{level}.log",
        "--route", "#.WARNING=warnings.log",
    )  # fmt: skip
    sender = StockSender(endpoint, "app1")
    try:
        sender.wait_connected(logdir)
        sender.logger.error("db.pool::exhausted")
        sender.logger.error("plain error")
        sender.logger.info("db.query::fast")
        sender.logger.warning("no subtopic warning")
        sender.logger.warning("x::warning with subtopic")
        wait_until(lambda: len(read_lines(logdir / "app1.log")) >= 5, what="app1.log")
    finally:
        sender.close()
    assert proc.stop() == 0
    assert [line.split(" | ")[-1] for line in read_lines(logdir / "app1-errors.log")] == [
        "exhausted",
        "plain error",
    ]
    assert [line.split(" | ")[-1] for line in read_lines(logdir / "db" / "app1-ERROR.log")] == ["exhausted"]
    assert [line.split(" | ")[-1] for line in read_lines(logdir / "db" / "app1-INFO.log")] == ["fast"]
    assert [line.split(" | ")[-1] for line in read_lines(logdir / "warnings.log")] == ["no subtopic warning"]


def test_json_lines(collectors: list[CollectorProcess], logdir: Path) -> None:
    """--json writes one parseable JSON object per record with the parsed fields."""
    import json

    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir), "--json")
    sender = StockSender(endpoint, "app2")
    try:
        sender.wait_connected(logdir)
        sender.logger.error("db::line one\nline two")
        wait_until(lambda: read_lines(logdir / "app2.log"), what="app2.log")
    finally:
        sender.close()
    assert proc.stop() == 0
    (record,) = [json.loads(line) for line in read_lines(logdir / "app2.log")]
    assert record["source"] == "app2"
    assert record["levelname"] == "ERROR"
    assert record["levelno"] == 40
    assert record["subtopic"] == "db"
    assert record["message"] == "line one\nline two"
    assert record["topic"] == "app2.ERROR.db"


def test_sigterm_drains_everything_sent_before_the_signal(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """N records sent before SIGTERM are all on disk after the collector exits 0."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir), "--flush-interval", "1")
    sender = StockSender(endpoint, "burst")
    n = 20_000
    try:
        sender.wait_connected(logdir)
        for i in range(n):
            sender.logger.info("record %d", i)
        proc.send(signal.SIGTERM)
        assert proc.stop() == 0
    finally:
        sender.close()
    lines = read_lines(logdir / "burst.log")
    assert len(lines) == n
    assert [int(line.rsplit(" ", 1)[1]) for line in lines] == list(range(n))
    assert f"burst.log:{n}" in proc.summary()
    assert counter(proc, "malformed") == 0
    assert "SIGTERM" in proc.stderr


def line_ending(path: Path, text: str) -> Callable[[], bool]:
    """A predicate: some line of *path* ends with *text*."""
    return lambda: any(line.endswith(text) for line in read_lines(path))


def test_a_line_is_written_when_the_socket_runs_dry_not_at_the_flush_timer(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """Group commit: with a 60 s --flush-interval, a lone record still reaches disk at once.

    The interval is only the upper bound under continuous load; the 10 s wait
    here is far below it, so this passes only if the write happens when the
    socket runs dry (after --flush-delay, 5 ms by default).
    """
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir), "--flush-interval", "60")
    sender = StockSender(endpoint, "quiet")
    try:
        sender.wait_connected(logdir)
        for i in range(3):
            sender.logger.info("alone %d", i)
            wait_until(line_ending(logdir / "quiet.log", f"alone {i}"), 10, what=f"record {i} on disk")
    finally:
        sender.close()
    assert proc.stop() == 0


def test_a_long_flush_delay_holds_lines_until_it_passes(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """--flush-delay trades latency for fewer writes: lines wait for it (here until SIGTERM)."""
    endpoint = short_ipc_endpoint()
    proc = start(
        collectors, "--bind", endpoint, "--dir", str(logdir), "--flush-interval", "60", "--flush-delay", "60"
    )
    sender = StockSender(endpoint, "held")
    try:
        sender.wait_connected(logdir)  # the first write after start-up is not delayed
        before = proc.ask_counters()["received"]
        sender.logger.info("waits")
        wait_until(lambda: proc.ask_counters()["received"] > before, what="the record received")
        assert not any(line.endswith("waits") for line in read_lines(logdir / "held.log"))
    finally:
        sender.close()
    assert proc.stop() == 0
    assert read_lines(logdir / "held.log")[-1].endswith("waits")


def test_sigint_also_drains_and_exits_zero(collectors: list[CollectorProcess], logdir: Path) -> None:
    """SIGINT behaves like SIGTERM: exit status 0 and a counters line."""
    proc = start(collectors, "--bind", short_ipc_endpoint(), "--dir", str(logdir))
    assert proc.stop(signal.SIGINT) == 0
    assert "received=0" in proc.summary()


def test_sighup_reopens_files_after_logrotate_moved_them(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """After the file is renamed and SIGHUP sent, new records go to a fresh file of the old name."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    sender = StockSender(endpoint, "rot")
    try:
        sender.wait_connected(logdir)
        sender.logger.info("before")
        wait_until(lambda: read_lines(logdir / "rot.log"), what="rot.log")
        os.rename(logdir / "rot.log", logdir / "rot.log.1")
        proc.send(signal.SIGHUP)
        wait_until(lambda: "reopening" in proc.stderr, what="the SIGHUP log line")
        sender.logger.info("after")
        wait_until(lambda: read_lines(logdir / "rot.log"), what="the reopened rot.log")
    finally:
        sender.close()
    assert proc.stop() == 0
    assert [line.split(" | ")[-1] for line in read_lines(logdir / "rot.log.1")] == ["before"]
    assert [line.split(" | ")[-1] for line in read_lines(logdir / "rot.log")] == ["after"]


def test_sigusr1_prints_counters(collectors: list[CollectorProcess], logdir: Path) -> None:
    """SIGUSR1 prints the counters line and the collector keeps running."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    sender = StockSender(endpoint, "cnt")
    try:
        sender.wait_connected(logdir)
        proc.send(signal.SIGUSR1)
        wait_until(lambda: any("counters:" in line for line in proc.stderr_lines), what="counters")
    finally:
        sender.close()
    line = next(line for line in proc.stderr_lines if "counters:" in line)
    assert counter(proc, "received") >= 1
    assert "zlprobe.log:" in line
    assert proc.counters()["files"]["zlprobe.log"] >= 1  # the same counters as JSON, written first
    assert proc.proc.poll() is None
    assert proc.stop() == 0


def test_rotation_names_and_backup_count_match_the_stdlib(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """With --when S the rotated names follow TimedRotatingFileHandler and only --backup-count remain."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir), "--when", "S", "--backup-count", "2")
    sender = StockSender(endpoint, "tick")
    try:
        sender.wait_connected(logdir)
        deadline = time.monotonic() + 4.5
        i = 0
        while time.monotonic() < deadline:
            sender.logger.info("tick %d", i)
            i += 1
            time.sleep(0.05)
    finally:
        sender.close()
    assert proc.stop() == 0
    rotated = sorted(p.name for p in logdir.glob("tick.log.*"))
    assert len(rotated) == 2, rotated
    for name in rotated:
        assert re.fullmatch(r"tick\.log\.\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", name), name
    # Every record is either in the live file or in a kept backup, or was in a deleted one:
    kept = sum(len(read_lines(logdir / name)) for name in [*rotated, "tick.log"])
    assert 0 < kept <= i


def test_compress_gzips_rotated_files(collectors: list[CollectorProcess], logdir: Path) -> None:
    """--compress turns rotated files into .gz files that hold the rotated lines."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir), "--when", "S", "--compress")
    sender = StockSender(endpoint, "gz")
    sent = 0
    try:
        sender.wait_connected(logdir)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            sender.logger.info("line %d", sent)
            sent += 1
            time.sleep(0.05)
    finally:
        sender.close()
    assert proc.stop() == 0
    archives = sorted(logdir.glob("gz.log.*.gz"))
    assert archives, sorted(p.name for p in logdir.iterdir())
    assert not [p for p in logdir.glob("gz.log.*") if not p.name.endswith(".gz")]
    lines = [line for path in archives for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
    lines += read_lines(logdir / "gz.log")
    assert [int(line.rsplit(" ", 1)[1]) for line in lines] == list(range(sent))


def test_malformed_frames_are_quarantined_with_reason(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """Each kind of bad input is counted by reason and kept, escaped, in _malformed.log."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir), "--max-record-bytes", "4096")
    sender = StockSender(endpoint, "ok")
    bad = [
        [b"only.one.frame"],
        [b"app.INFO", b"x", b"not an extension", b"four"],
        [b"", b"empty topic"],
        [b"app.NOLEVEL.x", b"no level"],
        [b"app.INFO", b"\xff\xfe bad utf-8"],
        [b"app.INFO", b"nul \x00 byte"],
        [b"app.INFO", b"x" * 4090],  # each frame fits the limit, the record does not
        [b"app.INFO", b"text", b"{not json"],
        [b"app.INFO", b"text", b'{"v":1,"a":' + b"[" * 1500 + b"]" * 1500 + b"}"],  # RecursionError bait
    ]
    try:
        sender.wait_connected(logdir)
        for frames in bad:
            sender.socket.send_multipart(frames)
        sender.logger.info("still alive")
        wait_until(lambda: read_lines(logdir / "ok.log"), what="a good record after the bad ones")
        wait_until(lambda: len(read_lines(logdir / "_malformed.log")) >= len(bad), what="_malformed.log")
    finally:
        sender.close()
    assert proc.stop() == 0
    quarantined = read_lines(logdir / "_malformed.log")
    reasons = [line.split(" | ")[1] for line in quarantined]
    assert reasons == [
        "frame_count", "frame_count", "empty_topic", "no_level", "bad_utf8", "nul_byte", "too_large",
        "bad_extension", "bad_extension",
    ]  # fmt: skip
    assert "\\xff\\xfe bad utf-8" in quarantined[4]
    assert "nul \\x00 byte" in quarantined[5]
    assert len(quarantined[6]) < 3000 and "more bytes]" in quarantined[6]
    proc.summary()
    assert counter(proc, "malformed") == len(bad)
    assert counter(proc, "received") == counter(proc, "malformed") + len(read_lines(logdir / "ok.log")) + len(
        read_lines(logdir / "zlprobe.log")
    )


def test_topics_cannot_escape_the_log_directory(collectors: list[CollectorProcess], tmp_path: Path) -> None:
    """Path-like, absolute, control-character and reserved sources all stay plain files inside --dir."""
    logdir = tmp_path / "logs"
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    sender = StockSender(endpoint, "x")
    hostile = [
        "../../evil",
        "/etc/passwd",
        "..",
        "a/../../b",
        "tab\there",
        "errors",
        "_malformed",
        "E" * 300,
        ".hidden",
    ]
    try:
        sender.wait_connected(logdir)
        for root in hostile:
            sender.socket.send_multipart([f"{root}.ERROR".encode(), f"from {root!r}".encode()])
        wait_until(lambda: len(read_lines(logdir / "errors.log")) >= len(hostile), what="errors.log")
    finally:
        sender.close()
    assert proc.stop() == 0
    outside = sorted(p.name for p in tmp_path.iterdir())
    assert outside == ["logs"]
    names = sorted(p.name for p in logdir.iterdir())
    assert all(p.is_file() and p.parent == logdir for p in logdir.iterdir()), names
    assert not any(name.startswith(".") for name in names)
    assert max(len(name) for name in names) <= 110
    assert "errors_.log" in names and "_malformed_.log" in names
    assert not (logdir / "_malformed.log").exists()
    assert len(read_lines(logdir / "errors.log")) == len(hostile)


def test_a_deleted_file_is_recreated(collectors: list[CollectorProcess], logdir: Path) -> None:
    """When a log file is deleted under the collector, the next batch recreates it."""
    endpoint = short_ipc_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    sender = StockSender(endpoint, "gone")
    try:
        sender.wait_connected(logdir)
        sender.logger.info("first")
        wait_until(lambda: read_lines(logdir / "gone.log"), what="gone.log")
        (logdir / "gone.log").unlink()
        sender.logger.info("second")
        wait_until(lambda: read_lines(logdir / "gone.log"), what="gone.log to come back")
    finally:
        sender.close()
    assert proc.stop() == 0
    assert [line.split(" | ")[-1] for line in read_lines(logdir / "gone.log")] == ["second"]
    assert "errors=reopened:1" in proc.summary()


def test_three_stock_senders_100k_records_all_arrive(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """Three stock-PUBHandler apps send 100,000 records in all at a few thousand per second; every one lands."""
    endpoint = free_tcp_endpoint()
    proc = start(collectors, "--bind", endpoint, "--dir", str(logdir))
    counts = {"app1": 33_334, "app2": 33_333, "app3": 33_333}
    script = tmp_path / "sender.py"
    script.write_text(SENDER)
    senders = [
        subprocess.Popen(
            [sys.executable, str(script), endpoint, name, str(n), str(logdir)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, n in counts.items()
    ]
    for sender in senders:
        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err
    try:
        wait_until(
            lambda: all(len(read_lines(logdir / f"{name}.log")) >= n for name, n in counts.items()),
            timeout=60,
            what="every record on disk",
        )
    except AssertionError:
        have = {name: len(read_lines(logdir / f"{name}.log")) for name in counts}
        raise AssertionError(f"on disk {have} of {counts}; collector: {proc.ask_counters()}") from None
    assert proc.stop() == 0
    for name, n in counts.items():
        lines = read_lines(logdir / f"{name}.log")
        assert len(lines) == n
        assert [int(line.rsplit(" ", 1)[1]) for line in lines] == list(range(n))
        assert all(f" | {name} | " in line for line in lines)
    errors = read_lines(logdir / "errors.log")
    assert len(errors) == sum(1 for n in counts.values() for i in range(n) if i % 50 == 0)


SENDER = """
import logging, sys, time
import zmq
from zmq.log.handlers import PUBHandler

endpoint, name, n, logdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = zmq.Context()
sock = ctx.socket(zmq.PUB)
# No high-water mark: a collector slowed by a loaded CI machine must not make this PUB drop
# silently (that would test the machine's speed, not that every record received lands).
sock.setsockopt(zmq.SNDHWM, 0)
sock.connect(endpoint)
handler = PUBHandler(sock)
handler.root_topic = name
handler.setFormatter(logging.Formatter("%(message)s"))
log = logging.getLogger(name)
log.setLevel(logging.DEBUG)
log.addHandler(handler)
# The slow joiner: wait until the collector has written a probe from us.
import os
probe = logging.getLogger(name + ".probe")
deadline = time.monotonic() + 20
while not os.path.exists(os.path.join(logdir, name + "-probe.log")):
    sock.send_multipart([(name + "-probe.INFO").encode(), b"probe"])
    time.sleep(0.05)
    assert time.monotonic() < deadline, "collector never saw the probe"
rate = 3500.0
start = time.monotonic()
for i in range(n):
    if i % 50 == 0:
        log.error("batch::record %d", i)
    else:
        log.info("record %d", i)
    if i % 100 == 99:
        ahead = (i + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
sock.close(linger=60000)
ctx.term()
"""


def test_a_terminal_gets_a_live_status_line(logdir: Path) -> None:
    """With stderr on a terminal the collector redraws a status line with counts in place."""
    import pty

    endpoint = short_ipc_endpoint()
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zlogcollect",
            "collect",
            "--bind",
            endpoint,
            "--dir",
            str(logdir),
            "--flush-interval",
            "0.1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    output = b""

    def read_some() -> bytes:
        nonlocal output
        import select

        while select.select([leader], [], [], 0.05)[0]:
            try:
                output += os.read(leader, 65536)
            except OSError:
                break
        return output

    sender = None
    try:
        wait_until(lambda: b"ready:" in read_some(), what="the ready line on the terminal")
        sender = StockSender(endpoint, "tty")
        sender.wait_connected(logdir)
        for i in range(10):
            sender.logger.info("line %d", i)
        wait_until(
            lambda: re.search(rb"\r\x1b\[Kzlogcollect: received [1-9]", read_some()), what="a status line"
        )
    finally:
        if sender is not None:
            sender.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        read_some()
        os.close(leader)
    text = output.decode(errors="replace")
    stopped = text[text.index("stopped:") - 60 :]
    assert "\x1b[K" in text
    assert re.search(r"\r\x1b\[K\d{4}-\d\d-\d\d [^\r]*stopped:", text), stopped


def test_a_second_process_on_the_same_dir_is_refused_until_the_first_is_gone(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """One process per --dir: a second one (a collector or a writer) exits 75 with one line naming the holder.

    Two on one --dir would mix their state files and write each other's records again.
    The lock goes with the process, SIGKILL included.
    """
    first = start(collectors, "--bind", short_ipc_endpoint(), "--dir", str(logdir))
    second = run_collector(["collect", "--bind", short_ipc_endpoint(), "--dir", str(logdir)])
    assert second.returncode == 75, second.stderr
    line = one_error_line(second.stderr)
    assert f"is in use by another zlogcollect (pid {first.popen.pid})" in line, line
    writer = run_collector(
        [
            "collect",
            "--from-amqp",
            "amqp://guest:secretpw@127.0.0.1:1/%2F",
            "--queue",
            "q",
            "--dir",
            str(logdir),
        ]
    )
    assert writer.returncode == 75 and "in use by another zlogcollect" in writer.stderr, writer.stderr
    assert "secretpw" not in writer.stderr
    first.kill()
    third = start(collectors, "--bind", short_ipc_endpoint(), "--dir", str(logdir))
    assert third.stop() == 0, third.stderr


def test_a_link_planted_as_the_lock_file_is_refused_and_its_target_untouched(
    tmp_path: Path, logdir: Path
) -> None:
    """`_zlogcollect.lock` as a symlink (to a file the collector must not truncate): one line, exit 73."""
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (logdir / "_zlogcollect.lock").symlink_to(target)
    result = run_collector(["collect", "--bind", short_ipc_endpoint(), "--dir", str(logdir)])
    assert result.returncode == 73, result.stderr
    assert "cannot open _zlogcollect.lock" in one_error_line(result.stderr)
    assert target.read_text() == "keep me\n"
