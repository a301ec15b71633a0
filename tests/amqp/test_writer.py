"""The writer, `collect --from-amqp`, against the private RabbitMQ node: its files, kills, poison, start-up errors, outages."""

from __future__ import annotations

import signal
import time
from functools import partial
from pathlib import Path

import pika
import pytest

from tests.amqp.test_bridge import channel, launch, queue_length
from tests.helpers import (
    CollectorProcess,
    StockSender,
    http_get,
    one_error_line,
    run_cli,
    short_ipc_endpoint,
    wait_until,
)
from tests.helpers_handler import private_logger
from zlogcollect.handler import ZLogHandler
from zlogcollect.sinks.amqp_message import MessageFormat
from zlogcollect.testing.process import free_port
from zlogcollect.testing.rabbitmq import RabbitNode
from zlogcollect.wire import Record


def fresh_queue(url: str, queue: str) -> None:
    with channel(url) as ch:
        ch.queue_delete(queue)
        ch.queue_declare(queue, durable=True)


def publish(url: str, queue: str, numbers: range, source: str = "app1", pub: str = "p1") -> None:
    """Records "n N" of *source* as the bridge publishes them (body, message id, properties), into *queue*."""
    fmt = MessageFormat()
    with channel(url) as ch:
        ch.confirm_delivery()
        for n in numbers:
            meta = {"pub": pub, "seq": n, "host": "web01", "pid": 42}
            message = fmt(Record(source, "INFO", 20, "", f"n {n}", 1795000000.0 + n / 1000, None, meta))
            ch.basic_publish("", queue, message.body, pika.BasicProperties(**message.properties()))


def numbers_in(path: Path) -> list[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [int(line.rsplit(" n ", 1)[1]) for line in text.splitlines() if " n " in line]


def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def reached(path: Path, lines: int) -> bool:
    return line_count(path) >= lines


def writer(collectors: list[CollectorProcess], url: str, directory: Path, *args: str) -> CollectorProcess:
    proc = CollectorProcess(["--from-amqp", url, "--dir", str(directory), *args])
    collectors.append(proc)
    proc.wait_ready(30)
    return proc


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every log file under *directory* (not the collector's own state files), by name."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith("_")
    }


@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["text", "json"])
def test_the_writer_writes_byte_for_byte_what_the_zeromq_collector_writes(
    rabbit_url: str, collectors: list[CollectorProcess], tmp_path: Path, fmt: list[str]
) -> None:
    """One collector writes its files and forwards the same stream; a writer on that queue writes the
    same files, byte for byte: extension records (extra fields, tracebacks, several lines, non-ASCII,
    every level) and stock PUBHandler records."""
    queue = f"writer-same-{len(fmt)}"
    fresh_queue(rabbit_url, queue)
    direct, written = tmp_path / "direct", tmp_path / "written"
    endpoint = short_ipc_endpoint()
    launch(
        collectors, "collect", "--bind", endpoint, "--dir", str(direct), "--amqp-url", rabbit_url,
        "--declare-queue", f"{queue}=#", *fmt,
    )  # fmt: skip
    writer(collectors, rabbit_url, written, "--queue", queue, *fmt)
    stock = StockSender(endpoint, "stock")
    handler = ZLogHandler(endpoint, app="app1")
    try:
        stock.wait_connected(direct)
        logger = private_logger("app1.orders", handler)
        logger.debug("debug détail")
        logger.info("n %d", 1, extra={"order": 7, "tags": ["a", "b"]})
        logger.warning("two\nlines")
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("lookup failed")
        logger.critical("tab\there \x1b[31m")
        stock.logger.error("stock error")
        stock.logger.info("stock info ü")
    finally:
        handler.close()
        stock.close()
    wait_until(
        lambda: (a := snapshot(direct)) == snapshot(written) and len(a) >= 4 and "app1.log" in a,
        30,
        what="the writer's files to equal the collector's",
    )
    files = snapshot(direct)
    assert files == snapshot(written)
    assert b"lookup failed" in files["errors.log"] and b"stock error" in files["errors.log"]


def test_killed_twice_mid_stream_then_restarted_each_record_is_written_once(
    rabbit_url: str, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    """kill -9 at two moments of a 20,000-message queue, then a restart on the same --dir: every
    record once, in order; what the dead ones had not acked came again and was dropped as a repeat."""
    queue, total = "writer-kills", 20_000
    fresh_queue(rabbit_url, queue)
    publish(rabbit_url, queue, range(total))
    logs = tmp_path / "logs"
    log_file = logs / "app1.log"
    for at in (3_000, 9_000):
        proc = writer(collectors, rabbit_url, logs, "--queue", queue, "--prefetch", "200")
        wait_until(partial(reached, log_file, at), 60, what=f"{at} lines", interval=0.02)
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait(10)
    last = writer(collectors, rabbit_url, logs, "--queue", queue, "--prefetch", "200")
    wait_until(lambda: line_count(log_file) >= total, 60, what="every line", interval=0.05)
    assert last.stop() == 0
    assert numbers_in(log_file) == list(range(total))
    assert queue_length(rabbit_url, queue) == 0


def test_a_repeated_message_id_is_written_once_also_after_a_restart(
    rabbit_url: str, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    """The bridge's re-sends (the same message_id again) are dropped and counted, across a restart."""
    queue = "writer-repeats"
    fresh_queue(rabbit_url, queue)
    logs = tmp_path / "logs"
    publish(rabbit_url, queue, range(5))
    publish(rabbit_url, queue, range(3, 5))
    proc = writer(collectors, rabbit_url, logs, "--queue", queue)
    wait_until(lambda: proc.ask_counters()["amqp"].get("consumed") == 7, 30, what="7 messages consumed")
    assert proc.stop() == 0
    assert proc.counters()["amqp"]["duplicates"] == 2
    publish(rabbit_url, queue, range(4, 7))  # 4 was written by the first run
    again = writer(collectors, rabbit_url, logs, "--queue", queue, "--http", "127.0.0.1:0")
    wait_until(lambda: again.ask_counters()["amqp"].get("consumed") == 3, 30, what="3 messages consumed")
    address = again.stderr.split("metrics on http://", 1)[1].split("/metrics", 1)[0]
    status, metrics = http_get(address, "/metrics")
    assert status == 200
    assert b"zlogcollect_amqp_duplicates_total 1.0" in metrics
    assert b"zlogcollect_amqp_connected 1.0" in metrics
    assert again.stop() == 0
    assert "duplicates:1" in again.summary()
    assert numbers_in(logs / "app1.log") == list(range(7))


def test_a_message_not_from_a_bridge_is_quarantined_and_acked(
    rabbit_url: str, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    """Not JSON, JSON without the zlog key: each goes to _malformed.log with its reason and is acked, the
    records around them are written; nothing is left in the queue to come back forever."""
    queue = "writer-poison"
    fresh_queue(rabbit_url, queue)
    publish(rabbit_url, queue, range(2))
    with channel(rabbit_url) as ch:
        ch.basic_publish("", queue, b"\xff\x00 not json", pika.BasicProperties(message_id="poison-1"))
        ch.basic_publish("", queue, b'{"msg": "from python-logging-rabbitmq", "name": "x"}')
    publish(rabbit_url, queue, range(2, 4))
    logs = tmp_path / "logs"
    proc = writer(collectors, rabbit_url, logs, "--queue", queue)
    wait_until(lambda: len(numbers_in(logs / "app1.log")) == 4, 30, what="the 4 good records")
    wait_until(lambda: line_count(logs / "_malformed.log") == 2, 30, what="2 quarantined messages")
    assert proc.stop() == 0
    quarantined = (logs / "_malformed.log").read_text().splitlines()
    assert "| amqp_bad_message | the body is not JSON (message_id poison-1) |" in quarantined[0]
    assert "\\xff\\x00 not json" in quarantined[0]
    assert "no 'zlog' object" in quarantined[1]
    assert numbers_in(logs / "app1.log") == [0, 1, 2, 3]
    assert proc.counters()["malformed_by"] == {"amqp_bad_message": 2}
    assert queue_length(rabbit_url, queue) == 0


def _url(rabbit: RabbitNode, user: str = "guest", password: str = "guest", vhost: str = "%2F") -> str:
    return rabbit.url.replace("guest:guest@", f"{user}:{password}@").rsplit("/", 1)[0] + f"/{vhost}"


@pytest.mark.parametrize(
    ("case", "status", "says"),
    [
        ("missing queue", 78, "queue 'no-such-queue' does not exist"),
        ("wrong vhost", 78, "access denied to the virtual host"),
        ("bad credentials", 78, "refused the credentials"),
        ("broker not running", 69, "cannot reach the broker"),
    ],
)
def test_start_up_errors_are_one_line_and_an_exit_status(
    rabbit: RabbitNode, rabbit_url: str, tmp_path: Path, case: str, status: int, says: str
) -> None:
    url = {
        "missing queue": _url(rabbit),
        "wrong vhost": _url(rabbit, vhost="nowhere"),
        "bad credentials": _url(rabbit, password="s3cret-wrong"),
        "broker not running": f"amqp://guest:s3cret-wrong@127.0.0.1:{free_port()}/%2F",
    }[case]
    queue = "no-such-queue" if case == "missing queue" else "writer-startup"
    if case != "missing queue":
        fresh_queue(rabbit_url, queue)
    result = run_cli(
        ["collect", "--from-amqp", url, "--queue", queue, "--dir", str(tmp_path / "logs")], timeout=60
    )
    assert result.returncode == status, result.stderr
    line = one_error_line(result.stderr)
    assert says in line
    assert "s3cret-wrong" not in result.stderr


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["--prefetch", "0"], 78, "prefetch = 0"),
        ([], 78, "from_amqp: give the queue(s) to consume with --queue NAME"),
        (
            ["--queue", "q", "--amqp-url", "amqp://guest:guest@127.0.0.1/%2F"],
            78,
            "give either from_amqp or amqp_url",
        ),
    ],
)
def test_bad_writer_options_are_one_line(tmp_path: Path, args: list[str], status: int, says: str) -> None:
    result = run_cli(
        ["collect", "--from-amqp", "amqp://guest:guest@127.0.0.1:1/%2F", *args, "--dir", str(tmp_path)]
    )
    assert result.returncode == status, result.stderr
    assert says in one_error_line(result.stderr, ("zlogcollect: error: ", "Error: "))


def test_a_broker_stop_and_start_the_writer_reconnects_and_resumes(
    rabbit: RabbitNode, rabbit_url: str, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    """The broker stops under the writer and comes back (durable queue, persistent messages): the writer
    reconnects with backoff and writes the rest; each record once."""
    queue = "writer-outage"
    fresh_queue(rabbit_url, queue)
    publish(rabbit_url, queue, range(1000))
    logs = tmp_path / "logs"
    proc = writer(collectors, rabbit_url, logs, "--queue", queue)
    wait_until(lambda: line_count(logs / "app1.log") >= 1000, 30, what="the first 1,000 lines")
    rabbit.stop()
    time.sleep(2)
    rabbit.restart(keep_data=True)
    publish(rabbit.url, queue, range(1000, 2000))
    wait_until(lambda: line_count(logs / "app1.log") >= 2000, 90, what="the lines after the outage")
    assert proc.stop() == 0
    assert numbers_in(logs / "app1.log") == list(range(2000))
    assert proc.counters()["amqp"]["reconnects"] >= 1


def test_sighup_reopens_the_files(
    rabbit_url: str, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    """logrotate moved the file away: after SIGHUP the writer writes a new one."""
    queue = "writer-hup"
    fresh_queue(rabbit_url, queue)
    logs = tmp_path / "logs"
    proc = writer(collectors, rabbit_url, logs, "--queue", queue)
    publish(rabbit_url, queue, range(3))
    wait_until(lambda: line_count(logs / "app1.log") == 3, 30, what="3 lines")
    (logs / "app1.log").rename(logs / "app1.log.1")
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_stderr("SIGHUP: reopening files")
    publish(rabbit_url, queue, range(3, 5))
    wait_until(lambda: line_count(logs / "app1.log") == 2, 30, what="a new app1.log")
    assert proc.stop() == 0
    assert numbers_in(logs / "app1.log.1") + numbers_in(logs / "app1.log") == list(range(5))


def test_the_journal_survives_a_cut_last_line_and_compacts_to_the_window(tmp_path: Path) -> None:
    """A kill mid-append leaves a line without its newline: it is not an id (it may be the start of a
    longer one) and is cut off the file; at twice the window the file is rewritten with the window alone."""
    from zlogcollect.seen import SeenWindow
    from zlogcollect.writer import Journal

    path = tmp_path / "_seen.journal"
    path.write_text("p1:1\np1:2\np1:3")  # "p1:3" cut short by a kill
    window = SeenWindow(4)
    journal = Journal(str(path), window)
    assert journal.load() == 2
    assert list(window) == ["p1:1", "p1:2"]
    window.add("p1:4")
    journal.append(["p1:4"])
    assert path.read_text() == "p1:1\np1:2\np1:4\n"
    for n in range(5, 12):
        window.add(f"p1:{n}")
        journal.append([f"p1:{n}"])
    journal.close()
    again = SeenWindow(4)
    Journal(str(path), again).load()
    assert list(again) == ["p1:8", "p1:9", "p1:10", "p1:11"]
    assert len(path.read_text().splitlines()) < 2 * 4 + 3  # compacted once on the way


def test_a_kill_between_the_write_and_the_ids_journal_line_is_told_by_the_files(tmp_path: Path) -> None:
    """The write-ahead entry (ids and the files' sizes before) counts only if the files show the writes."""
    from zlogcollect.seen import SeenWindow
    from zlogcollect.writer import Journal

    path = tmp_path / "_seen.journal"
    app = tmp_path / "app1.log"
    app.write_text("old\n")
    journal = Journal(str(path), SeenWindow(100))
    journal.load()
    journal.append(["p1:1"])
    journal.intend(["p1:2", "p1:3"], [("app1.log", 4, 10)])
    app.write_text("old\nline 2\nl3\n")  # the writes; then the kill, before the ids' journal line
    journal.close()
    window = SeenWindow(100)
    assert Journal(str(path), window).load() == 3
    assert list(window) == ["p1:1", "p1:2", "p1:3"]
    assert path.read_text() == "p1:1\np1:2\np1:3\n"  # journalled now

    # The ids' journal line after the write makes the entry stale, even with the files as it says:
    # nothing is added again, and nothing is called interrupted when the files have moved on since.
    journal = Journal(str(path), SeenWindow(100))
    journal.load()
    journal.intend(["p1:x"], [("app1.log", 14, 3)])
    journal.append(["p1:x"])
    journal.close()
    again = Journal(str(path), SeenWindow(100))
    assert again.load() == 4 and not again.interrupted
    again.close()
    assert path.read_text() == "p1:1\np1:2\np1:3\np1:x\n"

    journal = Journal(str(path), SeenWindow(100))
    journal.load()
    journal.intend(["p1:4"], [("app1.log", 14, 3)])  # a kill before the write: the entry is void
    journal.close()
    window = SeenWindow(100)
    again = Journal(str(path), window)
    assert again.load() == 4 and "p1:4" not in window and not again.interrupted
    again.close()

    (tmp_path / "_seen.intent").write_bytes(b'{"files": [["app1.log", 14, 3]], "ids": ["p1:4"')  # cut
    window = SeenWindow(100)
    assert Journal(str(path), window).load() == 4 and "p1:4" not in window

    journal = Journal(str(path), SeenWindow(100))
    journal.load()
    (tmp_path / "errors.log").write_text("")
    journal.intend(["p1:5"], [("app1.log", 14, 3), ("errors.log", 0, 3)])
    with app.open("a") as handle:
        handle.write("l5\n")  # one file of two written, and no runs to say which records: counted
    journal.close()
    window = SeenWindow(100)
    again = Journal(str(path), window)
    assert again.load() == 4 and "p1:5" not in window and again.interrupted
    again.close()

    # A write cut short with the runs of its lines: the ids (the bridge's pub:seq) of whole lines count.
    journal = Journal(str(path), SeenWindow(100))
    journal.load()
    ids = ["p1:6", "p1:7", "foreign-id", "p1:8"]
    runs: list[list[object]] = [["p1", 6, 2, 1], [None, None, 1, 1], ["p1", 8, 1, 1]]
    journal.intend(ids, [("app1.log", 17, 12, runs)])
    with app.open("a") as handle:
        handle.write("l6\nl7\nfo")  # cut in the third line
    journal.close()
    window = SeenWindow(100)
    again = Journal(str(path), window)
    assert again.load() == 6 and list(window)[-2:] == ["p1:6", "p1:7"] and not again.interrupted
    again.close()


def test_a_link_planted_as_the_write_ahead_entry_is_never_read_through(tmp_path: Path) -> None:
    """A valid entry behind a symbolic link at _seen.intent is not taken (nor is a directory there):
    the start goes on with the journal alone and removes the link."""
    import json
    import zlib

    from zlogcollect.seen import SeenWindow
    from zlogcollect.writer import Journal

    (tmp_path / "app1.log").write_text("l1\n")
    body = json.dumps({"journal": 0, "files": [["app1.log", 0, 3]], "ids": ["p1:1"]}).encode()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"%08x %s\n" % (zlib.crc32(body), body))
    (tmp_path / "_seen.intent").symlink_to(target)
    window = SeenWindow(10)
    journal = Journal(str(tmp_path / "_seen.journal"), window)
    assert journal.load() == 0 and "p1:1" not in window
    assert not (tmp_path / "_seen.intent").is_symlink() and target.exists()
    journal.close()
    (tmp_path / "_seen.intent").mkdir()
    again = Journal(str(tmp_path / "_seen.journal"), SeenWindow(10))
    assert again.load() == 0
    again.close()
