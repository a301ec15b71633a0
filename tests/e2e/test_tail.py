"""`zlogcollect collect --publish` and `zlogcollect tail` as real subprocesses."""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from zmq.log.handlers import PUBHandler

from tests.helpers import (
    CollectorProcess,
    RawSender,
    read_lines,
    run_collector,
    short_ipc_endpoint,
    wait_until,
)
from zlogcollect import ZLogHandler
from zlogcollect.testing.process import Child, free_tcp_endpoint
from zlogcollect.wire import encode_extension

pytestmark = pytest.mark.e2e

ZLOGCOLLECT = [sys.executable, "-m", "zlogcollect"]


def start_collector(
    collectors: list[CollectorProcess], logdir: Path, *args: str
) -> tuple[CollectorProcess, str, str]:
    """A collector on fresh ipc endpoints with --publish; returns it, its --bind and its --publish."""
    bind, publish = short_ipc_endpoint(), short_ipc_endpoint("p.sock")
    proc = CollectorProcess(
        ["--bind", bind, "--publish", publish, "--dir", str(logdir), "--flush-interval", "0.05", *args]
    )
    collectors.append(proc)
    proc.wait_ready()
    assert f"publishing on {publish}" in proc.stderr
    return proc, bind, publish


def start_tail(children: list[Child], publish: str, *args: str) -> Child:
    child = Child([*ZLOGCOLLECT, "tail", "--connect", publish, *args], "zlogcollect tail")
    children.append(child)
    return child


def probe_until_shown(send: RawSender, *children: Child, topic: bytes = b"probe.ERROR") -> None:
    """Send probe records until every tail printed one: each is subscribed and the collector knows it."""

    def shown() -> bool:
        send.send(topic, b"probe")
        time.sleep(0.05)
        return all(any("probe" in line for line in child.stdout_lines) for child in children)

    wait_until(shown, 30, "the tails to show a probe")


def wait_line(child: Child, needle: str, timeout: float = 20) -> str:
    found: list[str] = []

    def seen() -> bool:
        found.extend(line for line in child.stdout_lines if needle in line)
        return bool(found)

    wait_until(seen, timeout, f"{needle!r} on {child.name}'s stdout")
    return found[0]


def not_probes(lines: list[str]) -> list[str]:
    return [line for line in lines if "probe" not in line]


def test_a_record_logged_by_an_app_appears_in_tail_as_in_the_file(
    collectors: list[CollectorProcess], logdir: Path, children: list[Child]
) -> None:
    """ZLogHandler -> collector -> tail: the line on tail's stdout is the file's line.

    The time from the log call to the line is printed, not asserted (speed lives in
    benchmarks/latency.py: "log call -> tail stdout").
    """
    _, bind, publish = start_collector(collectors, logdir)
    tail = start_tail(children, publish)
    handler = ZLogHandler(bind, app="shop")
    log = logging.Logger("shop.web", logging.DEBUG)
    log.addHandler(handler)
    try:

        def shown() -> bool:
            log.info("probe")
            time.sleep(0.05)
            return any("probe" in line for line in tail.stdout_lines)

        wait_until(shown, 30, "a probe on tail's stdout")
        started = time.perf_counter()
        log.error("checkout::payment declined for order %d", 42)
        arrived = wait_until(
            lambda: any("declined" in line for line in tail.stdout_lines), 10, "the record on tail's stdout"
        )
    finally:
        handler.close()
    print(f"log call -> tail stdout: {(arrived - started) * 1000:.1f} ms")
    line = wait_line(tail, "declined")
    fields = line.split(" | ")
    assert fields[1:3] == ["ERROR", "shop"] and fields[4:] == ["checkout", "payment declined for order 42"]
    wait_until(lambda: line in read_lines(logdir / "shop.log"), 10, "the line in shop.log")
    assert line in read_lines(logdir / "errors.log")
    assert tail.stop(signal.SIGINT) == 0
    assert tail.stderr == ""


def test_patterns_select_and_json_shows_every_field(
    collectors: list[CollectorProcess], logdir: Path, children: list[Child]
) -> None:
    """AMQP-style patterns select exactly the matching topics, in order; --json shows every record."""
    proc, bind, publish = start_collector(collectors, logdir)
    picky = start_tail(children, publish, "*.ERROR.#", "app3.#", "--format", "%(topic)s %(message)s")
    everything = start_tail(children, publish, "--json")
    sender = RawSender(bind)
    try:
        probe_until_shown(sender, picky, everything)
        sent = [
            (b"app1.INFO", b"app1 info"),
            (b"app1.ERROR.db", b"app1 error"),
            (b"app2.WARNING", b"app2 warning"),
            (b"app2.ERROR", b"app2 error"),
            (b"shop.web.ERROR", b"two-word root: not *.ERROR"),
            (b"app3.DEBUG.cache", b"app3 debug"),
            (b"app3.INFO", b"app3 info"),
            (b"app3x.ERROR", b"app3x error"),
            (b"app3x.INFO", b"app3x info: not app3.#"),
            (b"end.ERROR", b"end"),
        ]
        for frames in sent:
            sender.send(*frames)
        wait_line(picky, "end.ERROR end")
        wait_line(everything, '"message": "end"')
    finally:
        sender.close()
    assert not_probes(picky.stdout_lines) == [
        "app1.ERROR.db app1 error",
        "app2.ERROR app2 error",
        "app3.DEBUG.cache app3 debug",
        "app3.INFO app3 info",
        "app3x.ERROR app3x error",
        "end.ERROR end",
    ]
    records = [json.loads(line) for line in not_probes(everything.stdout_lines)]
    assert [(r["topic"].encode(), r["message"].encode()) for r in records] == sent
    assert records[1]["source"] == "app1" and records[1]["subtopic"] == "db"
    assert all(r["received"] >= r["created"] for r in records)  # stock records: the collector's time
    counters = proc.ask_counters()
    assert counters["published"]["sent"] >= len(sent)  # records, each to every subscriber
    assert counters["published"].get("dropped", 0) == 0


def test_count_exits_0_after_exactly_n_matching_records(
    collectors: list[CollectorProcess], logdir: Path, children: list[Child]
) -> None:
    """--count 3 with a pattern prints three consecutive matching records and exits 0."""
    _, bind, publish = start_collector(collectors, logdir)
    tail = start_tail(children, publish, "--count", "3", "--format", "%(message)s", "counted.#")
    sender = RawSender(bind)
    try:
        i = 0
        while tail.alive():
            sender.send(b"other.INFO", b"never shown")
            sender.send(b"counted.INFO", f"record {i}".encode())
            i += 1
            time.sleep(0.02)
            assert i < 3000, "tail --count 3 did not exit"
        assert tail.stop() == 0
    finally:
        sender.close()
    first = int(tail.stdout_lines[0].split()[1])
    assert tail.stdout_lines == [f"record {n}" for n in range(first, first + 3)]
    assert tail.stderr == ""


def test_stock_pubhandler_records_show_the_cleaned_text(
    collectors: list[CollectorProcess], logdir: Path, children: list[Child]
) -> None:
    """The stock formatters' 'WARNING ' prefix and ' - None' are gone in tail, as in the file."""
    _, bind, publish = start_collector(collectors, logdir)
    tail = start_tail(children, publish, "stock.#")
    context = zmq.Context()
    sock = context.socket(zmq.PUB)
    sock.connect(bind)
    handler = PUBHandler(sock)  # its own default formatters, warts and all
    handler.root_topic = "stock"
    log = logging.Logger("stock", logging.DEBUG)
    log.addHandler(handler)
    try:

        def shown() -> bool:
            log.info("probe")
            time.sleep(0.05)
            return any("probe" in line for line in tail.stdout_lines)

        wait_until(shown, 30, "a stock probe on tail's stdout")
        log.warning("db.query::slow reply")
        log.error("disk full")
        error = wait_line(tail, "disk full")
    finally:
        sock.close(linger=2000)
        context.term()
    warning = wait_line(tail, "slow reply")
    assert " | WARNING | stock | - | db.query | " in warning
    assert " WARNING " not in warning.split(" | ")[-1] and "WARNING test_tail.py" not in warning
    assert error.endswith(" - disk full"), error  # the stock ERROR format: "file:line - message"
    assert not error.endswith(" - None")
    wait_until(lambda: error in read_lines(logdir / "stock.log"), 10, "the same line in stock.log")
    assert warning in read_lines(logdir / "stock.log")


def test_hostile_frames_are_quarantined_and_never_reach_tail(
    collectors: list[CollectorProcess], logdir: Path, children: list[Child]
) -> None:
    proc, bind, publish = start_collector(collectors, logdir)
    tail = start_tail(children, publish, "--format", "%(topic)s %(message)s")
    sender = RawSender(bind)
    hostile = [
        (b"only one frame",),
        (b"a.INFO", b"b", b"{}", b"four"),
        (b"a.INFO", b"\xff\xfe invalid utf-8"),
        (b"a.INFO", b"nul \x00 byte"),
        (b"no.level.here", b"text"),
        (b"a.INFO", b"bad extension", b"{not json"),
        (b"a.INFO", b"nested", b'{"v":1,"x":' + b"[" * 40 + b"]" * 40 + b"}"),
        (b"\xc0.INFO", b"bad topic"),
        (b"", b"empty topic"),
    ]
    try:
        probe_until_shown(sender, tail)
        for frames in hostile:
            sender.send(*frames)
        sender.send(b"end.INFO", b"after the garbage")
        wait_line(tail, "after the garbage")
    finally:
        sender.close()
    assert not_probes(tail.stdout_lines) == ["end.INFO after the garbage"]
    assert proc.ask_counters()["malformed"] == len(hostile)
    assert tail.stop() == 0
    assert tail.stderr == ""


def test_tail_skips_what_does_not_parse_from_a_peer_that_is_no_collector(children: list[Child]) -> None:
    """Garbage straight from a hostile publisher: skipped, counted in one note on stderr; tail goes on."""
    context = zmq.Context()
    pub = context.socket(zmq.XPUB)
    endpoint = short_ipc_endpoint("evil.sock")
    pub.bind(endpoint)
    tail = start_tail(children, endpoint, "--format", "%(message)s")
    try:
        wait_until(lambda: pub.poll(100, zmq.POLLIN), 20, "tail's subscription")
        pub.recv()
        for frames in (
            [b"x"],
            [b"a.INFO", b"\xff"],
            [b"a.INFO", b"b", b"[1]"],
            [b"a.INFO", b"c", b"d", b"e"],
        ):
            pub.send_multipart(frames)
        pub.send_multipart([b"a.INFO", b"still here", encode_extension({})])
        wait_line(tail, "still here")
    finally:
        pub.close(0)
        context.term()
    assert tail.stdout_lines == ["still here"]
    assert tail.stop() == 0
    notes = [line for line in tail.stderr_lines if line.strip()]
    assert len(notes) == 1 and "skipped 1 malformed record" in notes[0], tail.stderr
    assert "Traceback" not in tail.stderr


def test_a_stopped_tail_makes_the_collector_drop_and_count_while_the_files_get_everything(
    collectors: list[CollectorProcess], logdir: Path, children: list[Child]
) -> None:
    proc, bind, publish = start_collector(
        collectors, logdir, "--publish-hwm", "100", "--format", "%(message)s"
    )
    tail = start_tail(children, publish, "bulk.#", "probe.#", "--format", "%(message)s")
    sender = RawSender(bind)
    n = 20_000
    padding = "x" * 300
    try:
        probe_until_shown(sender, tail)
        before = proc.ask_counters()
        tail.send(signal.SIGSTOP)
        for i in range(n):
            sender.send(b"bulk.INFO", f"{i} {padding}".encode())
        sender.send(b"bulk.INFO", b"last")
        wait_until(lambda: len(read_lines(logdir / "bulk.log")) == n + 1, 60, "every record in bulk.log")
    finally:
        sender.close()
    assert read_lines(logdir / "bulk.log") == [f"{i} {padding}" for i in range(n)] + ["last"]
    after = proc.ask_counters()
    sent = after["published"]["sent"] - before["published"]["sent"]
    dropped = after["published"].get("dropped", 0) - before["published"].get("dropped", 0)
    assert dropped > 0
    assert sent + dropped == after["received"] - before["received"]
    tail.send(signal.SIGCONT)
    # What was sent reaches tail once it runs again: the drops happened at the collector, counted.
    wait_until(lambda: len(not_probes(tail.stdout_lines)) >= n + 1 - dropped, 60, "tail to catch up")
    assert tail.stop() == 0
    shown = not_probes(tail.stdout_lines)
    assert len(shown) == n + 1 - dropped
    assert shown == sorted(shown, key=lambda line: int(line.split()[0]) if line != "last" else n)


def test_ctrl_c_sigterm_and_a_closed_stdout_exit_0_quietly(
    collectors: list[CollectorProcess], logdir: Path, children: list[Child]
) -> None:
    _, bind, publish = start_collector(collectors, logdir)
    for signum in (signal.SIGINT, signal.SIGTERM):
        tail = start_tail(children, publish)
        sender = RawSender(bind)
        try:
            probe_until_shown(sender, tail)
        finally:
            sender.close()
        assert tail.stop(signum) == 0
        assert tail.stderr == ""
    # tail | head -1: the reader goes away, the next write finds the pipe closed.
    reader = subprocess.Popen(
        [*ZLOGCOLLECT, "tail", "--connect", publish],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    sender = RawSender(bind)
    try:
        assert reader.stdout is not None
        stdout = reader.stdout

        def shown() -> bool:
            sender.send(b"probe.INFO", b"probe")
            return bool(select.select([stdout], [], [], 0.05)[0]) and bool(stdout.readline())

        wait_until(shown, 30, "a probe from tail")
        reader.stdout.close()
        wait_until(
            lambda: sender.send(b"more.INFO", b"more") or reader.poll() is not None, 20, "tail to exit"
        )
    finally:
        sender.close()
        if reader.poll() is None:
            reader.kill()
            reader.wait(5)
    assert reader.wait(5) == 0
    assert reader.stderr is not None
    with reader.stderr:
        assert reader.stderr.read() == b""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["tail", "--connect", "localhost:5559"], "connect 'localhost:5559'"),
        (["tail", "--connect", "tcp://127.0.0.1:99999"], "out of range"),
        (["tail", "app..x"], "'app..x' is not a dotted topic pattern"),
        (["tail", "ok.#", "a*"], "'a*' is not a dotted topic pattern"),
        (["tail", "--format", "%(message"], "format:"),
        (["tail", "--level", "A.B=5"], "level:"),
        (["collect", "--publish", "tcp://nonsense"], "publish = 'tcp://nonsense'"),
        (["collect", "--publish", "tcp://127.0.0.1:70000"], "out of range"),
    ],
)
def test_bad_input_is_one_line_and_exit_78(args: list[str], needle: str, tmp_path: Path) -> None:
    result = run_collector([*args, *(["--dir", str(tmp_path / "logs")] if args[0] == "collect" else [])])
    assert result.returncode == 78, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("zlogcollect: error: "), result.stderr
    assert needle in lines[0]
    assert result.stdout == ""


def test_publish_port_in_use_is_one_line_and_exit_69(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_collector(
            [
                "collect",
                "--bind",
                free_tcp_endpoint(),
                "--publish",
                f"tcp://127.0.0.1:{port}",
                "--dir",
                str(tmp_path / "logs"),
            ]
        )
    assert result.returncode == 69, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"zlogcollect: error: cannot bind tcp://127.0.0.1:{port} (publish): Address already in use"
    ), lines[0]
