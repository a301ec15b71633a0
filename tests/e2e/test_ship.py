"""`zlogcollect ship` and `zlogcollect send` as real subprocesses feeding a real `zlogcollect collect`."""

from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import CollectorProcess, read_lines, run_cli, short_ipc_endpoint, wait_until
from zlogcollect.lines import Line, message_text
from zlogcollect.testing.process import Child
from zlogcollect.wire import escape_controls

pytestmark = pytest.mark.e2e

ZLOGCOLLECT = [sys.executable, "-m", "zlogcollect"]


def start_collector(
    collectors: list[CollectorProcess], logdir: Path, *args: str, fmt: str | None = "%(message)s"
) -> tuple[CollectorProcess, str]:
    """A collector on a fresh ipc endpoint writing only the message (unless *fmt* is None)."""
    endpoint = short_ipc_endpoint()
    options = ["--bind", endpoint, "--dir", str(logdir), "--flush-interval", "0.05", *args]
    if fmt is not None:
        options += ["--format", fmt]
    proc = CollectorProcess(options)
    collectors.append(proc)
    proc.wait_ready()
    return proc, endpoint


def one_error_line(stderr: str) -> str:
    """One error line, ours or click's usage error."""
    return helpers.one_error_line(stderr, ("zlogcollect: error: ", "Error: "))


def wait_for(path: Path, expected: list[str], timeout: float = 60) -> None:
    """Wait until *path* has as many lines as *expected*, then check they are exactly those."""
    wait_until(lambda: len(read_lines(path)) >= len(expected), timeout, f"{len(expected)} lines in {path}")
    assert read_lines(path) == expected


def test_ship_delivers_a_100k_line_file_whole_once_and_in_order(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """Every line of a 100,000-line file arrives once, in order, before ship exits 0; no progress bar off a terminal."""
    proc, endpoint = start_collector(collectors, logdir)
    lines = [
        f'{i:06d} 2001:db8::{i % 65536:x} - - [02/Dec/2026:01:02:03 +0000] "GET /item/{i} HTTP/1.1" 200 {i % 977}'
        for i in range(100_000)
    ]
    source = tmp_path / "access.log"
    source.write_text("".join(line + "\n" for line in lines))
    result = run_cli(["ship", str(source), "--connect", endpoint, "--app", "web"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    wait_for(logdir / "web.log", lines)
    counters = proc.ask_counters()
    assert (counters["received"], counters["malformed"], counters["lost"]) == (100_000, 0, 0)


def test_lines_keep_their_colons_and_take_level_and_subtopic_from_options(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """IPv6 addresses and '::' stay in the text; the subtopic is --subtopic's; --level-from picks levels."""
    _, endpoint = start_collector(collectors, logdir, fmt="%(levelname)s|%(subtopic)s|%(message)s")
    source = tmp_path / "nginx.log"
    source.write_text(
        '::1 - - [02/Dec/2026:01:02:03 +0000] "GET / HTTP/1.1" 200 612\n'
        "2001:db8::7 [error] upstream timed out\n"
        "[warn] db::query slow\n"
        "[verbose] a level nobody knows\n"
        "[CRIT] disk full\n"
    )
    result = run_cli(
        [
            "ship",
            str(source),
            "--connect",
            endpoint,
            "--app",
            "nginx",
            "--subtopic",
            "access",
            "--level",
            "notice",
            "--level-from",
            r"\[(?P<level>[a-zA-Z]+)\]",
        ]
    )
    assert result.returncode == 0, result.stderr
    wait_for(
        logdir / "nginx.log",
        [
            'INFO|access|::1 - - [02/Dec/2026:01:02:03 +0000] "GET / HTTP/1.1" 200 612',
            "ERROR|access|2001:db8::7 [error] upstream timed out",
            "WARNING|access|[warn] db::query slow",
            "INFO|access|[verbose] a level nobody knows",
            "CRITICAL|access|[CRIT] disk full",
        ],
    )
    wait_for(
        logdir / "errors.log",
        ["ERROR|access|2001:db8::7 [error] upstream timed out", "CRITICAL|access|[CRIT] disk full"],
    )


def test_ship_waits_for_a_collector_that_starts_later(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """Started before any collector, ship says it is waiting, then delivers everything once one subscribes."""
    endpoint = short_ipc_endpoint()
    lines = [f"early {i}" for i in range(2000)]
    source = tmp_path / "early.log"
    source.write_text("".join(line + "\n" for line in lines))
    ship = Child([*ZLOGCOLLECT, "ship", str(source), "--connect", endpoint, "--app", "early"], "ship")
    try:
        ship.wait_stderr("waiting for a collector", timeout=20)
        proc = CollectorProcess(
            ["--bind", endpoint, "--dir", str(logdir), "--flush-interval", "0.05", "--format", "%(message)s"]
        )
        collectors.append(proc)
        proc.wait_ready()
        assert ship.popen.wait(60) == 0, ship.stderr
        wait_for(logdir / "early.log", lines)
    finally:
        ship.kill()


def test_binary_garbage_and_invalid_utf8_arrive_escaped(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """A megabyte of random bytes (NULs, invalid UTF-8, control characters): every line arrives, escaped."""
    proc, endpoint = start_collector(collectors, logdir)
    blob = random.Random(12).randbytes(1 << 20) + b"\x00\xff\xfe tail without newline"
    source = tmp_path / "garbage.bin"
    source.write_bytes(blob)
    result = run_cli(["ship", str(source), "--connect", endpoint, "--app", "junk"])
    assert result.returncode == 0, result.stderr
    expected = [escape_controls(message_text(Line(raw, 0))) for raw in blob.split(b"\n")]
    wait_for(logdir / "junk.log", expected)
    assert proc.ask_counters()["malformed"] == 0


@pytest.mark.parametrize("limit", [None, 65536])
def test_an_over_long_line_is_cut_with_the_handlers_note(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path, limit: int | None
) -> None:
    """A line longer than the record limit (the default, or the collector's own) arrives cut, never quarantined."""
    extra = [] if limit is None else ["--max-record-bytes", str(limit)]
    proc, endpoint = start_collector(collectors, logdir, "--multiline", "plain", *extra)
    size = 3 << 20
    source = tmp_path / "long.log"
    source.write_bytes(b"before\n" + b"x" * size + b"\nafter\n")
    result = run_cli(["ship", str(source), "--connect", endpoint, "--app", "long", *extra])
    assert result.returncode == 0, result.stderr
    path = logdir / "long.log"
    wait_until(lambda: len(read_lines(path)) >= 4, 30, "four lines")
    first, kept, note, last = read_lines(path)
    assert (first, last) == ("before", "after")
    assert set(kept) == {"x"}
    assert len(kept) < (limit or 1 << 20) // 2
    match = re.fullmatch(r"\[zlogcollect cut ([\d,]+) bytes here: the record was over the size limit\]", note)
    assert match is not None, note
    assert int(match.group(1).replace(",", "")) == size - len(kept)
    assert proc.ask_counters()["malformed"] == 0


def test_follow_survives_two_rotations_and_a_truncation(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """Like tail -F: rename-and-recreate twice, then truncate; nothing is lost and nothing repeated."""
    _, endpoint = start_collector(collectors, logdir)
    log = tmp_path / "app.log"
    out = logdir / "rot.log"
    expected: list[str] = []
    counter = iter(range(1_000_000))

    def write(path: Path, count: int, mode: str = "a") -> None:
        lines = [f"line {next(counter)}" for _ in range(count)]
        with path.open(mode) as file:
            file.write("".join(line + "\n" for line in lines))
        expected.extend(lines)

    write(log, 100)
    ship = Child([*ZLOGCOLLECT, "ship", str(log), "--follow", "--connect", endpoint, "--app", "rot"], "ship")
    try:
        wait_for(out, expected)
        for rotated in ("app.log.1", "app.log.2"):
            write(log, 50)
            os.rename(log, tmp_path / rotated)
            write(tmp_path / rotated, 50)  # a writer still appending to the renamed file
            write(log, 50, "w")  # the new file
            with log.open("a") as file:  # a line written in two parts
                file.write("split li")
                file.flush()
                file.write("ne\n")
            expected.append("split line")
            wait_for(out, expected)
        start = len(ship.stderr_lines)
        log.write_text("")  # truncated (copytruncate)
        ship.wait_stderr("file truncated", timeout=20, start=start)
        write(log, 30)
        wait_for(out, expected)
        assert sum("file replaced" in line for line in ship.stderr_lines) == 2, ship.stderr
        assert ship.stop() == 0, ship.stderr
    finally:
        ship.kill()
    assert read_lines(out) == expected


def opened(child: Child, path: Path) -> bool:
    """Whether *child* has *path* open (Linux's /proc)."""
    fds = Path(f"/proc/{child.pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    except OSError:  # an fd closed while looking
        return False


def test_follow_from_end_ships_only_new_lines(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    _, endpoint = start_collector(collectors, logdir)
    log = tmp_path / "old.log"
    log.write_text("".join(f"old {i}\n" for i in range(10)))
    ship = Child(
        [*ZLOGCOLLECT, "ship", str(log), "-F", "--from-end", "--connect", endpoint, "--app", "tail"], "ship"
    )
    try:
        wait_until(lambda: opened(ship, log), 20, "ship to open the file")
        with log.open("a") as file:
            file.write("new 0\nnew 1\n")
        wait_for(logdir / "tail.log", ["new 0", "new 1"])
        assert ship.stop() == 0, ship.stderr
    finally:
        ship.kill()


def test_a_named_pipe_is_read_across_writers_that_come_and_go(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """Each writer's lines arrive (a last line without newline too); ship waits for the next writer until stopped."""
    _, endpoint = start_collector(collectors, logdir)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    ship = Child([*ZLOGCOLLECT, "ship", str(fifo), "--connect", endpoint, "--app", "cron"], "ship")
    expected: list[str] = []
    try:
        for writer in range(3):
            lines = [f"writer {writer} line {i}" for i in range(100)]
            with fifo.open("w") as pipe:  # waits for ship to open its end
                pipe.write("\n".join(lines))  # the last line has no newline: the writer's close ends it
            expected += lines
            wait_for(logdir / "cron.log", expected)
        assert ship.alive()
        assert ship.stop(signal.SIGINT) == 0, ship.stderr
    finally:
        ship.kill()


@pytest.mark.parametrize("args", [[], ["-"]])
def test_ship_reads_stdin(collectors: list[CollectorProcess], logdir: Path, args: list[str]) -> None:
    """No FILE, or '-', is stdin, read to its end."""
    _, endpoint = start_collector(collectors, logdir)
    result = run_cli(["ship", *args, "--connect", endpoint, "--app", "script"], stdin=b"one\ntwo\r\nthree")
    assert result.returncode == 0, result.stderr
    wait_for(logdir / "script.log", ["one", "two", "three"])


def test_a_progress_bar_on_a_terminal(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """With stderr on a terminal, a finite file gets tqdm's bar there."""
    _, endpoint = start_collector(collectors, logdir)
    source = tmp_path / "big.log"
    source.write_text("".join(f"line {i}\n" for i in range(20_000)))
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    proc = subprocess.Popen(
        [*ZLOGCOLLECT, "ship", str(source), "--connect", endpoint, "--app", "bar"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        assert proc.wait(60) == 0, shown
    assert re.search(rb"ship: +\d+%\|", shown), shown
    wait_until(lambda: len(read_lines(logdir / "bar.log")) >= 20_000, 30, "20,000 lines")


def test_ship_without_a_collector_gives_up_after_timeout_with_75(tmp_path: Path) -> None:
    source = tmp_path / "x.log"
    source.write_text("a\nb\n")
    result = run_cli(["ship", str(source), "--connect", short_ipc_endpoint(), "--app", "x", "--timeout", "1"])
    assert result.returncode == 75
    assert "took records for 1 s; 2 lines read were not sent" in one_error_line(result.stderr)


def test_ship_stopped_before_a_collector_came_exits_75_saying_how_many_lines_wait(tmp_path: Path) -> None:
    source = tmp_path / "x.log"
    source.write_text("a\nb\nc\n")
    ship = Child([*ZLOGCOLLECT, "ship", str(source), "--connect", short_ipc_endpoint(), "--app", "x"], "ship")
    try:
        ship.wait_stderr("waiting for a collector", timeout=20)
        assert ship.stop() == 75
    finally:
        ship.kill()
    assert ship.stderr_lines[-1].startswith(
        "zlogcollect: error: stopped with 3 lines read but not sent to ipc://"
    )
    assert "Traceback" not in ship.stderr


@pytest.mark.parametrize(
    ("args", "status", "needle"),
    [
        (["ship", "{tmp}/missing.log", "--app", "x"], 66, "missing.log: No such file or directory"),
        (["ship", "{tmp}", "--app", "x"], 66, "is a directory"),
        (["ship", "-", "--app", "x", "--connect", "localhost:5558"], 78, "expected tcp://HOST:PORT"),
        (["ship", "-", "--app", "x", "--connect", "tcp://*:5558"], 78, "expected tcp://HOST:PORT"),
        (["ship", "-", "--app", "x", "--level-from", "([a-z"], 78, "not a regular expression"),
        (["ship", "-", "--app", "x", "--level-from", r"\[(\w+)\]"], 78, "named group 'level'"),
        (["ship", "-", "--app", "x", "--level", "LOUD"], 78, "level 'LOUD'"),
        (["ship", "-", "--app", "web.ERROR"], 78, "names a log level"),
        (["ship", "-", "--app", "x", "--max-record-bytes", "10"], 78, "max-record-bytes"),
        (["send", "LOUD", "hi", "--app", "x"], 78, "level 'LOUD'"),
        (["send", "INFO", "hi", "--app", "x", "--connect", "ipc://"], 78, "expected tcp://HOST:PORT"),
        (["ship", "-"], 2, "Missing option '--app'"),
        (["send", "INFO"], 2, "Missing argument 'MESSAGE'"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_status_from_the_table(
    tmp_path: Path, args: list[str], status: int, needle: str
) -> None:
    result = run_cli([arg.replace("{tmp}", str(tmp_path)) for arg in args], stdin=b"")
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    if status != 2:
        assert needle in one_error_line(result.stderr)
    else:
        assert needle in result.stderr


def test_send_exits_0_once_a_collector_took_the_record(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    _, endpoint = start_collector(collectors, logdir, fmt=None)
    result = run_cli(
        [
            "send",
            "err",
            "db::down at 2001:db8::7",
            "--app",
            "cron",
            "--subtopic",
            "backup",
            "--connect",
            endpoint,
        ]
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    wait_until(lambda: read_lines(logdir / "cron.log"), 20, "the record")
    (line,) = read_lines(logdir / "cron.log")
    fields = line.split(" | ")
    assert fields[1:3] == ["ERROR", "cron"]
    assert fields[4:] == ["backup", "db::down at 2001:db8::7"]
    assert read_lines(logdir / "errors.log") == [line]
    invalid = os.fsdecode(b"caf\xc3\xa9 \xff\xfe")  # argv bytes that are not UTF-8
    result = run_cli(["send", "info", invalid, "--app", "cron", "--connect", endpoint])
    assert result.returncode == 0, result.stderr
    wait_until(lambda: len(read_lines(logdir / "cron.log")) == 2, 20, "the second record")
    second = read_lines(logdir / "cron.log")[1].split(" | ")
    assert second[1:3] + second[4:] == ["INFO", "cron", "-", "café \\xff\\xfe"]


def test_send_without_a_collector_exits_75_with_one_line() -> None:
    endpoint = short_ipc_endpoint()
    result = run_cli(["send", "INFO", "anyone?", "--app", "cron", "--connect", endpoint, "--timeout", "0.5"])
    assert result.returncode == 75
    assert f"no collector at {endpoint} subscribed within 0.5 s" in one_error_line(result.stderr)


def test_a_line_that_starts_with_its_level_name_arrives_whole(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """Syslog-like 'ERROR disk failed' with --level-from '^(?P<level>\\w+) ' keeps its first word."""
    _, endpoint = start_collector(collectors, logdir)
    result = run_cli(
        ["ship", "--connect", endpoint, "--app", "sys", "--level-from", r"^(?P<level>\w+) "],
        stdin=b"ERROR disk failed\nWARNING disk slow\n",
    )
    assert result.returncode == 0, result.stderr
    wait_for(logdir / "sys.log", ["ERROR disk failed", "WARNING disk slow"])
