"""--http against a real collector: /metrics counts what happened, /healthz flips with the disk, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import (
    CollectorProcess,
    StockSender,
    fill,
    http_get,
    one_error_line,
    read_lines,
    run_collector,
    short_ipc_endpoint,
    small_tmpfs,
    wait_until,
)
from zlogcollect.testing.process import free_port

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: str, timeout: float = 10.0) -> Samples:
    """Every sample of ``/metrics``, parsed by prometheus_client's own parser, by (name, labels)."""
    status, body = http_get(address, "/metrics", timeout)
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def health(address: str) -> tuple[int, dict[str, Any]]:
    status, body = http_get(address, "/healthz")
    data: dict[str, Any] = json.loads(body)
    return status, data


def start(
    collectors: list[CollectorProcess], logdir: Path, *args: str, command: str = "collect", **env: str
) -> tuple[CollectorProcess, str, str]:
    """A collector with --http on a free port: (process, zmq endpoint, HOST:PORT)."""
    endpoint = short_ipc_endpoint()
    address = f"127.0.0.1:{free_port()}"
    files = ["--dir", str(logdir)] if command == "collect" else []
    proc = CollectorProcess(
        ["--bind", endpoint, *files, "--http", address, *args], command=command, env=env or None
    )
    collectors.append(proc)
    proc.wait_ready()
    return proc, endpoint, address


def extension(seq: int) -> bytes:
    return json.dumps({"v": 1, "pub": "p0", "seq": seq, "created": 1.0, "host": "h", "pid": 1}).encode()


def test_a_scrape_counts_what_was_sent_written_and_quarantined(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """Counters from /metrics equal the records sent, the lines in each file and the quarantined frames."""
    proc, endpoint, address = start(collectors, logdir)
    sender = StockSender(endpoint, "app")
    infos, errors, malformed = 300, 40, 25
    try:
        sender.wait_connected(logdir)
        for i in range(infos):
            sender.logger.info("info %d", i)
        for i in range(errors):
            sender.logger.error("error %d", i)
        for i in range(malformed):
            sender.socket.send_multipart([b"app.INFO", b"a", b"b", str(i).encode()])  # 4 frames
        # One zlogcollect publisher that skipped 4 sequence numbers.
        sender.socket.send_multipart([b"zl.INFO", b"first", extension(0)])
        sender.socket.send_multipart([b"zl.INFO", b"sixth", extension(5)])

        def sent() -> int:
            return infos + errors + malformed + 2 + len(read_lines(logdir / "zlprobe.log"))

        def settled() -> bool:
            samples = scrape(address)
            written = samples.get(("zlogcollect_records_written_total", (("file", "_malformed.log"),)), 0)
            return samples[("zlogcollect_records_received_total", ())] == sent() and written == malformed

        wait_until(settled, timeout=20, what="every record counted")
        wait_until(lambda: len(read_lines(logdir / "zl.log")) == 2, what="the zl records written")
    finally:
        sender.close()
    samples = scrape(address)

    def written(name: str) -> float:
        return samples[("zlogcollect_records_written_total", (("file", name),))]

    assert written("app.log") == infos + errors == len(read_lines(logdir / "app.log"))
    assert written("errors.log") == errors == len(read_lines(logdir / "errors.log"))
    assert written("_malformed.log") == malformed == len(read_lines(logdir / "_malformed.log"))
    assert written("zlprobe.log") == len(read_lines(logdir / "zlprobe.log"))
    assert written("zl.log") == 2
    assert samples[("zlogcollect_records_malformed_total", (("reason", "frame_count"),))] == malformed
    assert samples[("zlogcollect_records_lost_total", ())] == 4
    assert samples[("zlogcollect_publishers", ())] == 1
    assert samples[("zlogcollect_publish_dropped_total", ())] == 0
    assert samples[("zlogcollect_healthy", ())] == 1
    assert samples[("process_open_fds", ())] > 0
    assert time.time() - samples[("zlogcollect_last_record_timestamp_seconds", ())] < 60
    # The same counters as the collector's own JSON.
    counters = proc.ask_counters()
    assert counters["received"] == samples[("zlogcollect_records_received_total", ())]
    assert counters["files"]["app.log"] == written("app.log")
    status, body = health(address)
    assert status == 200 and body["status"] == "ok" and body["received"] == counters["received"]
    assert body["last_record"].endswith("Z") and body["problems"] == []
    assert proc.stop() == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1m tmpfs of our own, unmounted afterwards."""
    with small_tmpfs(tmp_path, "1m") as mnt:
        yield mnt


def test_healthz_is_503_while_the_disk_is_full_and_200_once_it_is_not(
    collectors: list[CollectorProcess], small_disk: Path
) -> None:
    """A full tmpfs as --dir: /healthz says 503 with the reason while writes fail, 200 once they work again."""
    logdir = small_disk / "logs"
    logdir.mkdir()
    proc, endpoint, address = start(collectors, logdir, "--flush-interval", "0.1")
    sender = StockSender(endpoint, "app")
    try:
        sender.wait_connected(logdir)
        assert health(address)[0] == 200
        fill(small_disk / "filler")
        for i in range(200):
            sender.logger.info("record %d %s", i, "x" * 100)
        wait_until(lambda: health(address)[0] == 503, timeout=20, what="/healthz to fail")
        body = health(address)[1]
        assert body["status"] == "failing"
        assert "disk errors" in body["problems"][0], body
        assert scrape(address)[("zlogcollect_healthy", ())] == 0
        assert proc.alive()
        (small_disk / "filler").unlink()
        wait_until(lambda: health(address)[0] == 200, timeout=30, what="/healthz to recover")
        assert health(address)[1]["status"] == "ok"
        wait_until(lambda: len(read_lines(logdir / "app.log")) == 200, what="every kept line written")
    finally:
        sender.close()
    assert proc.stop() == 0


@pytest.mark.perf
def test_a_scrape_is_answered_while_a_backlog_drains(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """Records pile up while the collector is stopped (SIGSTOP); scrapes during the drain are answered."""
    proc, endpoint, address = start(collectors, logdir, "--rcvhwm", "0")
    sender = StockSender(endpoint, "app")
    total = 100_000
    try:
        sender.wait_connected(logdir)
        base = scrape(address)[("zlogcollect_records_received_total", ())]
        proc.send(signal.SIGSTOP)
        try:
            for i in range(total):
                sender.socket.send_multipart([b"app.INFO", b"backlog %d" % i])
        finally:
            proc.send(signal.SIGCONT)
        seen: list[float] = []
        while not seen or seen[-1] < base + total:
            # Each scrape must be answered well within its timeout, drain or not.
            seen.append(scrape(address, timeout=5.0)[("zlogcollect_records_received_total", ())])
            assert proc.alive()
    finally:
        sender.close()
    during = [value for value in seen if base < value < base + total]
    assert during, f"no scrape landed during the drain: {seen}"
    assert proc.stop() == 0


def test_hostile_http_clients_do_not_hurt_it(collectors: list[CollectorProcess], logdir: Path) -> None:
    """Garbage bytes, a huge request line, invalid UTF-8, many headers, a silent client: it keeps answering."""
    proc, _, address = start(collectors, logdir)
    host, port = address.rsplit(":", 1)
    silent = socket.create_connection((host, int(port)))  # says nothing and stays connected
    try:
        for payload in (
            os.urandom(4096),
            b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
            b"GET /\xff\xfe\x00\x1b[2J HTTP/1.1\r\nHost: \xff\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n",
            b"\r\n\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        ):
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                try:
                    conn.sendall(payload)
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass  # the server may close on us mid-send: that is an answer too
        assert http_get(address, "/healthz")[0] == 200
        assert http_get(address, "/nothing-here")[0] == 404
        assert scrape(address)[("zlogcollect_records_received_total", ())] == 0
    finally:
        silent.close()
    assert proc.stop() == 0
    assert "Traceback" not in proc.stderr
    assert "\x1b" not in proc.stderr


def test_a_port_in_use_is_one_line_and_exit_69(logdir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_collector(
            ["collect", "--bind", short_ipc_endpoint(), "--dir", str(logdir), "--http", f"127.0.0.1:{port}"]
        )
    assert result.returncode == 69, result.stderr
    line = one_error_line(result.stderr)
    assert f"127.0.0.1:{port}" in line and "in use" in line


@pytest.mark.parametrize(
    ("address", "status", "needle"),
    [
        ("9559", 78, "expected HOST:PORT"),
        ("localhost:99999", 78, "port '99999'"),
        ("http://localhost:9559", 78, "without a scheme"),
        (
            "192.0.2.1:9559",
            69,
            "cannot serve HTTP on 192.0.2.1:9559",
        ),  # TEST-NET: not an address of this host
    ],
)
def test_a_bad_http_address_is_one_line(logdir: Path, address: str, status: int, needle: str) -> None:
    # --allow-root: as root, an address other hosts could reach is refused (77) before it is tried.
    result = run_collector(
        ["collect", "--bind", short_ipc_endpoint(), "--dir", str(logdir), "--http", address, "--allow-root"]
    )
    assert result.returncode == status, result.stderr
    assert needle in one_error_line(result.stderr)


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="zlsd", dir="/tmp")
        self.path = os.path.join(self.directory, "notify")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.path)
        self.socket.settimeout(15)

    def next(self) -> str:
        return self.socket.recv(4096).decode()

    def close(self) -> None:
        self.socket.close()
        os.unlink(self.path)
        os.rmdir(self.directory)


@pytest.mark.parametrize("command", ["collect", "bridge"])
def test_systemd_hears_ready_reloading_and_stopping(
    collectors: list[CollectorProcess], logdir: Path, command: str
) -> None:
    """With NOTIFY_SOCKET set: READY=1 once bound, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 at SIGTERM."""
    systemd = NotifySocket()
    args = ["--amqp-url", f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"] if command == "bridge" else []
    try:
        proc, _, address = start(collectors, logdir, *args, command=command, NOTIFY_SOCKET=systemd.path)
        assert systemd.next() == "READY=1"
        assert any("ready:" in line for line in proc.stderr_lines)  # after the ready line, so bound
        assert http_get(address, "/healthz")[0] in (200, 503)  # and the HTTP server listens already
        proc.send(signal.SIGHUP)
        reloading = systemd.next().split("\n")
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert systemd.next() == "READY=1"
        proc.send(signal.SIGTERM)
        assert systemd.next() == "STOPPING=1"
        assert proc.stop() == 0
    finally:
        systemd.close()


def test_bridge_healthz_fails_while_the_broker_is_away_and_the_buffer_fills(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """No broker and a buffer over 80 % full: 503 naming AMQP; the gauges show the buffer and the drops."""
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"  # nothing listens there
    proc, endpoint, address = start(collectors, logdir, "--amqp-url", url, "--buffer", "10", command="bridge")
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.connect(endpoint)
    try:
        status, body = health(address)
        assert status == 200 and body["amqp"] == {"connected": False, "buffered": 0, "buffer": 10}

        def some_received() -> bool:
            pub.send_multipart([b"app.INFO", b"probe"])
            return scrape(address)[("zlogcollect_records_received_total", ())] > 0

        wait_until(some_received, what="the bridge to receive")
        for i in range(20):
            pub.send_multipart([b"app.INFO", b"record %d" % i])
        wait_until(lambda: health(address)[0] == 503, what="/healthz to fail")
        status, body = health(address)
        assert body["status"] == "failing" and "AMQP" in body["problems"][0]
        samples = scrape(address)
        received = samples[("zlogcollect_records_received_total", ())]
        assert samples[("zlogcollect_amqp_buffered", ())] == 10
        assert samples[("zlogcollect_amqp_buffer_limit", ())] == 10
        assert samples[("zlogcollect_amqp_connected", ())] == 0
        assert samples[("zlogcollect_amqp_dropped_total", ())] == received - 10
        assert samples[("zlogcollect_amqp_published_total", ())] == 0
        assert not any(name.startswith("zlogcollect_records_written") for name, _ in samples)
    finally:
        pub.close(linger=0)
        context.term()
    assert proc.stop() == 0
