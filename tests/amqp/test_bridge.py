"""The AMQP bridge against a real RabbitMQ node: content, topology, outages, shutdown, failures."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.helpers import ROOT, CollectorProcess, StockSender, read_lines, short_ipc_endpoint, wait_until
from zlogcollect.testing.rabbitmq import RabbitNode

Message = tuple[str, Any, dict[str, Any]]


@contextmanager
def channel(url: str) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def declare(url: str, queue: str, *bindings: str) -> None:
    """A fresh durable queue bound to amq.topic."""
    with channel(url) as ch:
        ch.queue_delete(queue)
        ch.queue_declare(queue, durable=True)
        for binding in bindings:
            ch.queue_bind(queue, "amq.topic", binding)


def drain(url: str, queue: str) -> list[Message]:
    """Every message in *queue*, acknowledged, as (routing key, properties, JSON body)."""
    messages: list[Message] = []
    with channel(url) as ch:
        while True:
            method, properties, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((method.routing_key, properties, json.loads(body)))


def queue_length(url: str, queue: str) -> int:
    with channel(url) as ch:
        return int(ch.queue_declare(queue, passive=True).method.message_count)


def launch(collectors: list[CollectorProcess], command: str, *args: str) -> CollectorProcess:
    """Start *command* and wait for its ready line; a bridge gets a --stats-file to read counters from."""
    if command == "bridge" and "--stats-file" not in args:
        where = tempfile.mkdtemp(prefix="zlstats-")
        atexit.register(shutil.rmtree, where, True)
        args = (*args, "--stats-file", os.path.join(where, "stats.json"))
    proc = CollectorProcess([*args], command=command)
    collectors.append(proc)
    proc.wait_ready()
    return proc


def connect_sender(endpoint: str, root: str, url: str) -> StockSender:
    """A stock sender whose records are known to reach the broker (probed through a queue)."""
    sender = StockSender(endpoint, root)
    declare(url, "probe", "zlprobe.#")
    probe = sender.handler
    saved = probe.root_topic
    probe.root_topic = "zlprobe"

    def seen() -> bool:
        sender.logger.info("probe")
        time.sleep(0.05)
        return queue_length(url, "probe") > 0

    try:
        wait_until(seen, 20, what="a probe record in RabbitMQ")
    finally:
        probe.root_topic = saved
    with channel(url) as ch:
        ch.queue_delete("probe")
    return sender


class SteadySender(threading.Thread):
    """Sends n records at a steady rate from its own thread, numbered from 0."""

    def __init__(self, sender: StockSender, n: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.sender, self.n, self.rate = sender, n, rate
        self.sent = 0

    def run(self) -> None:
        start = time.monotonic()
        for i in range(self.n):
            self.sender.logger.info("record %d", i)
            self.sent += 1
            ahead = (i + 1) / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


def amqp_counters(proc: CollectorProcess) -> dict[str, int]:
    """The bridge's counters (received, delivered, ...) from the JSON it last wrote."""
    amqp: dict[str, int] = proc.counters()["amqp"]
    return amqp


def numbers(messages: list[Message]) -> list[int]:
    return [int(body["msg"].split()[1]) for _, _, body in messages]


def test_records_reach_declared_queues_with_routing_keys_and_json(
    rabbit_url: str, collectors: list[CollectorProcess], logdir: Path
) -> None:
    """Declared queues get exactly the records their bindings match, as persistent JSON keyed SOURCE.LEVEL."""
    endpoint = short_ipc_endpoint()
    with channel(rabbit_url) as ch:
        for queue in ("app1-error", "app3-all"):
            ch.queue_delete(queue)
    proc = launch(
        collectors, "collect", "--bind", endpoint, "--dir", str(logdir), "--amqp-url", rabbit_url,
        "--declare-queue", "app1-error=app1.ERROR.#", "--declare-queue", "app3-all=app3.#",
    )  # fmt: skip
    app1 = connect_sender(endpoint, "app1", rabbit_url)
    app3 = StockSender(endpoint, "app3")
    try:
        app3.wait_connected(logdir)
        app1.logger.error("db.query::timeout after %d ms", 30)
        app1.logger.info("not an error")
        app3.logger.debug("cache::miss")
        app3.logger.error("boom")
        wait_until(lambda: queue_length(rabbit_url, "app3-all") >= 2, what="app3 records")
        wait_until(lambda: queue_length(rabbit_url, "app1-error") >= 1, what="app1's error")
    finally:
        app1.close()
        app3.close()
    assert proc.stop() == 0
    errors = drain(rabbit_url, "app1-error")
    assert len(errors) == 1
    key, props, body = errors[0]
    assert key == "app1.ERROR"
    assert props.headers == {"subtopic": "db.query", "source": "app1"}
    assert props.content_type == "application/json"
    assert props.delivery_mode == 2
    assert props.message_id
    assert body["msg"] == "timeout after 30 ms"
    assert (body["name"], body["levelname"], body["levelno"], body["source"], body["subtopic"]) == (
        "app1", "ERROR", 40, "app1", "db.query",
    )  # fmt: skip
    for field in (
        "args",
        "pathname",
        "lineno",
        "created",
        "msecs",
        "process",
        "threadName",
        "host",
        "exc_info",
    ):
        assert field in body
    app3_keys = [key for key, _, _ in drain(rabbit_url, "app3-all")]
    assert app3_keys[-2:] == ["app3.DEBUG", "app3.ERROR"]
    amqp = amqp_counters(proc)
    assert amqp["delivered"] + amqp.get("unroutable", 0) == amqp["received"]


def test_routing_key_template_and_only(rabbit_url: str, collectors: list[CollectorProcess]) -> None:
    """--routing-key '{topic}' keeps the whole topic as key and --only forwards matching topics only."""
    endpoint = short_ipc_endpoint()
    declare(rabbit_url, "everything", "#")
    proc = launch(
        collectors, "bridge", "--bind", endpoint, "--amqp-url", rabbit_url,
        "--routing-key", "{topic}", "--only", "#.ERROR.#", "--only", "zlprobe.#",
    )  # fmt: skip
    sender = connect_sender(endpoint, "app2", rabbit_url)
    try:
        sender.logger.info("skipped")
        sender.logger.error("db::kept")
        wait_until(lambda: queue_length(rabbit_url, "everything") >= 1, what="the error")
    finally:
        sender.close()
    assert proc.stop() == 0
    messages = [m for m in drain(rabbit_url, "everything") if m[2]["source"] == "app2"]
    assert [(key, body["msg"]) for key, _, body in messages] == [("app2.ERROR.db", "kept")]
    summary = proc.summary()
    assert "skipped:1" in summary


def test_error_consumer_example_gets_only_app1_errors(
    rabbit_url: str, collectors: list[CollectorProcess]
) -> None:
    """examples/consume_errors.py reads app1's errors, and nothing else, from the app1-error queue."""
    endpoint = short_ipc_endpoint()
    with channel(rabbit_url) as ch:
        ch.queue_delete("app1-error")
    proc = launch(
        collectors,
        "bridge",
        "--bind",
        endpoint,
        "--amqp-url",
        rabbit_url,
        "--declare-queue",
        "app1-error=app1.ERROR.#",
    )
    app1 = connect_sender(endpoint, "app1", rabbit_url)
    app2 = StockSender(endpoint, "app2")
    try:
        time.sleep(0.2)  # app2 is only a distractor; its records may or may not arrive
        for i in range(3):
            app1.logger.error("db::failure %d", i)
            app1.logger.warning("not this %d", i)
            app2.logger.error("nor this %d", i)
        wait_until(lambda: queue_length(rabbit_url, "app1-error") >= 3, what="app1's errors")
    finally:
        app1.close()
        app2.close()
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "consume_errors.py"), "--url", rabbit_url, "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"app1.ERROR ERROR app1:db failure {i}" for i in range(3)]
    assert proc.stop() == 0


@pytest.mark.parametrize("outage", ["stop", "crash"])
def test_broker_outage_loses_nothing(
    rabbit: RabbitNode, rabbit_url: str, collectors: list[CollectorProcess], outage: str
) -> None:
    """Through a 5 s broker stop or SIGKILL, every record arrives in order; duplicates are re-sends only."""
    endpoint = short_ipc_endpoint()
    declare(rabbit_url, "outage", "steady.#")
    proc = launch(collectors, "bridge", "--bind", endpoint, "--amqp-url", rabbit_url)
    sender = connect_sender(endpoint, "steady", rabbit_url)
    n = 8000
    steady = SteadySender(sender, n, rate=1000)
    try:
        steady.start()
        wait_until(lambda: steady.sent > 2000, what="the stream to be flowing")
        rabbit.stop() if outage == "stop" else rabbit.crash()
        time.sleep(5)
        rabbit.restart(keep_data=True)
        steady.join(60)
        wait_until(
            lambda: queue_length(rabbit.url, "outage") >= n, timeout=60, what="every record in the queue"
        )
    finally:
        sender.close()
    assert proc.stop() == 0
    messages = drain(rabbit.url, "outage")
    ids = [props.message_id for _, props, _ in messages]
    got = numbers(messages)
    first_seen: dict[str, int] = {}
    for message_id, number in zip(ids, got, strict=True):
        assert first_seen.setdefault(message_id, number) == number  # a message_id always names one record
    unique = list(dict.fromkeys(got))
    assert unique == list(range(n))
    duplicates = len(got) - len(unique)
    summary = proc.summary()
    amqp = amqp_counters(proc)
    assert duplicates <= amqp.get("resent", 0)
    assert amqp["delivered"] == amqp["received"]  # the probe records included
    assert "dropped" not in summary


def test_full_buffer_drops_oldest_and_counts(
    rabbit: RabbitNode, rabbit_url: str, collectors: list[CollectorProcess]
) -> None:
    """With the broker down and --buffer 100, 500 records keep the newest 100 and count 400 dropped."""
    endpoint = short_ipc_endpoint()
    declare(rabbit_url, "small", "tiny.#")
    proc = launch(collectors, "bridge", "--bind", endpoint, "--amqp-url", rabbit_url, "--buffer", "100")
    sender = connect_sender(endpoint, "tiny", rabbit_url)
    try:
        rabbit.stop()
        for i in range(500):
            sender.logger.info("record %d", i)
        proc.send(signal.SIGUSR1)
        wait_until(
            lambda: "received:500" in proc.stderr or "received:501" in proc.stderr,
            what="500 records received",
        )
        rabbit.restart(keep_data=True)
        wait_until(lambda: queue_length(rabbit.url, "small") >= 100, timeout=30, what="the buffered records")
    finally:
        sender.close()
    assert proc.stop() == 0
    assert numbers(drain(rabbit.url, "small")) == list(range(400, 500))
    summary = proc.summary()
    assert "amqp_buffer_full:400" in summary


def test_files_stay_complete_while_the_broker_is_down(
    rabbit: RabbitNode, rabbit_url: str, collectors: list[CollectorProcess], logdir: Path
) -> None:
    """The bridge inside the collector never holds up the files, down broker or not."""
    endpoint = short_ipc_endpoint()
    proc = launch(collectors, "collect", "--bind", endpoint, "--dir", str(logdir), "--amqp-url", rabbit_url)
    sender = StockSender(endpoint, "files")
    try:
        sender.wait_connected(logdir)
        rabbit.stop()
        for i in range(2000):
            sender.logger.info("record %d", i)
        wait_until(lambda: len(read_lines(logdir / "files.log")) == 2000, what="every line on disk")
    finally:
        sender.close()
    assert proc.stop() == 0
    assert "amqp_unconfirmed_at_exit" in proc.summary()  # reported, not silently gone
    rabbit.restart(keep_data=True)


@pytest.mark.perf
def test_a_blocked_broker_does_not_stall_the_collector(
    rabbit: RabbitNode, rabbit_url: str, collectors: list[CollectorProcess], logdir: Path
) -> None:
    """While RabbitMQ blocks publishers (memory alarm) files keep being written; afterwards AMQP catches up."""
    endpoint = short_ipc_endpoint()
    declare(rabbit_url, "blocked", "slow.#")
    proc = launch(collectors, "collect", "--bind", endpoint, "--dir", str(logdir), "--amqp-url", rabbit_url)
    sender = StockSender(endpoint, "slow")
    try:
        sender.wait_connected(logdir)
        rabbit.ctl("set_vm_memory_high_watermark", "0.000001")
        try:
            start = time.monotonic()
            for i in range(3000):
                sender.logger.info("record %d", i)
            # RabbitMQ blocks a connection when it next publishes during the alarm.
            wait_until(lambda: "blocked publishing" in proc.stderr, timeout=20, what="the broker to block us")
            wait_until(
                lambda: len(read_lines(logdir / "slow.log")) == 3000, timeout=15, what="files while blocked"
            )
            assert time.monotonic() - start < 15
            assert queue_length(rabbit_url, "blocked") < 3000
        finally:
            rabbit.ctl("set_vm_memory_high_watermark", "0.4")
        wait_until(lambda: queue_length(rabbit_url, "blocked") >= 3000, timeout=30, what="AMQP to catch up")
    finally:
        sender.close()
    assert proc.stop() == 0
    assert numbers(drain(rabbit_url, "blocked")) == list(range(3000))


def test_sigterm_waits_for_confirms_and_a_restart_is_clean(
    rabbit_url: str, collectors: list[CollectorProcess]
) -> None:
    """SIGTERM right after a burst still confirms every record; a second bridge picks up where it left off."""
    endpoint = short_ipc_endpoint()
    declare(rabbit_url, "burst", "burst.#")
    for round_ in range(2):
        proc = launch(collectors, "bridge", "--bind", endpoint, "--amqp-url", rabbit_url)
        sender = connect_sender(endpoint, "burst", rabbit_url)
        try:
            for i in range(5000):
                sender.logger.info("record %d", round_ * 5000 + i)
            proc.send(signal.SIGTERM)
            assert proc.stop() == 0
        finally:
            sender.close()
        amqp = amqp_counters(proc)
        assert amqp["delivered"] == amqp["received"] >= 5000
        assert "unconfirmed" not in proc.summary()
    assert numbers(drain(rabbit_url, "burst")) == list(range(10_000))


def test_unroutable_records_are_counted(rabbit_url: str, collectors: list[CollectorProcess]) -> None:
    """A record no queue is bound for is counted as unroutable, not as delivered."""
    endpoint = short_ipc_endpoint()
    # A fresh exchange of our own: queues other tests bound to amq.topic would take the records.
    proc = launch(
        collectors,
        "bridge",
        "--bind",
        endpoint,
        "--amqp-url",
        rabbit_url,
        "--exchange",
        "zl-unroutable",
        "--declare-exchange",
    )
    sender = StockSender(endpoint, "nowhere")
    try:
        wait_until(
            lambda: (sender.logger.info("probe"), "counted as unroutable" in proc.stderr)[1],
            what="the first unroutable",
        )
        for i in range(3):
            sender.logger.info("record %d", i)
        wait_until(lambda: "unroutable" in proc.stderr, what="the unroutable warning")
    finally:
        sender.close()
    assert proc.stop() == 0
    amqp = amqp_counters(proc)
    assert amqp["unroutable"] == amqp["received"] >= 3
    assert "delivered" not in amqp
    assert "amqp_unroutable:" in proc.summary()


@pytest.mark.parametrize("queue_type", ["quorum", "stream"])
def test_queue_types_and_arguments(
    rabbit_url: str, collectors: list[CollectorProcess], queue_type: str
) -> None:
    """--queue-type and the x-arguments reach the declared queue."""
    endpoint = short_ipc_endpoint()
    name = f"typed-{queue_type}"
    with channel(rabbit_url) as ch:
        ch.queue_delete(name)
    # Streams take none of the classic x-arguments (the broker refuses x-max-length for them).
    args = (
        []
        if queue_type == "stream"
        else ["--message-ttl", "60000", "--dead-letter-exchange", "dlx", "--max-length", "9"]
    )
    proc = launch(
        collectors, "bridge", "--bind", endpoint, "--amqp-url", rabbit_url,
        "--declare-queue", f"{name}=typed.#", "--queue-type", queue_type, *args,
    )  # fmt: skip
    assert proc.stop() == 0
    with (
        channel(rabbit_url) as ch,
        pytest.raises(pika.exceptions.ChannelClosedByBroker, match="PRECONDITION_FAILED"),
    ):
        ch.queue_declare(name, durable=True)  # differs from how the bridge declared it
    with channel(rabbit_url) as ch:
        ch.queue_delete(name)


@pytest.mark.perf
def test_bad_url_and_credentials_fail_fast(rabbit_url: str) -> None:
    """A wrong password or a missing exchange is one line, exit 78, within seconds, and never shows the password."""
    from tests.helpers import run_collector

    bad_password = rabbit_url.replace("guest:guest", "guest:s3cret")
    cases = [
        (["--amqp-url", bad_password], "refused the credentials"),
        (["--amqp-url", rabbit_url, "--exchange", "no-such-exchange"], "no-such-exchange"),
        (["--amqp-url", "amqp://guest:s3cret@127.0.0.1:notaport/"], "amqp_url"),
        (["--amqp-url", "http://example/"], "amqp_url"),
        (["--amqp-url", "amqp://guest:s3cret/x@127.0.0.1/"], "percent-encode"),
        (["--amqp-url", rabbit_url.replace("guest:guest", "guest:s3cret") + "?heartbeat=abc"], "amqp_url"),
    ]
    for args, needle in cases:
        start = time.monotonic()
        result = run_collector(["bridge", "--bind", short_ipc_endpoint(), *args])
        assert result.returncode == 78, result.stderr
        assert time.monotonic() - start < 15
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert needle in lines[0]
        assert "s3cret" not in result.stderr


def test_bridge_needs_a_url() -> None:
    """`zlogcollect bridge` without --amqp-url is a configuration error."""
    from tests.helpers import run_collector

    result = run_collector(["bridge"])
    assert result.returncode == 78
    assert "--amqp-url" in result.stderr


def test_refresh_reconnects_without_loss(rabbit_url: str, collectors: list[CollectorProcess]) -> None:
    """--refresh closes and reopens the connection periodically and loses or duplicates nothing."""
    endpoint = short_ipc_endpoint()
    declare(rabbit_url, "refreshed", "fresh.#")
    proc = launch(collectors, "bridge", "--bind", endpoint, "--amqp-url", rabbit_url, "--refresh", "0.5")
    sender = connect_sender(endpoint, "fresh", rabbit_url)
    steady = SteadySender(sender, 2000, rate=1000)
    try:
        steady.start()
        steady.join(30)
        wait_until(lambda: queue_length(rabbit_url, "refreshed") >= 2000, what="every record")
    finally:
        sender.close()
    assert proc.stop() == 0
    assert numbers(drain(rabbit_url, "refreshed")) == list(range(2000))
    assert amqp_counters(proc)["refreshes"] >= 2
