"""/events and /sources against a real collector: records as Server-Sent Events, filters, backlog,
Last-Event-ID resume, a slow client told what it missed, access control and hostile requests."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CollectorProcess, StockSender, read_lines, short_ipc_endpoint, wait_until
from zlogcollect.handler import ZLogHandler
from zlogcollect.stream import READ_LIMIT
from zlogcollect.testing.process import environ, free_port

pytestmark = pytest.mark.e2e

TOKEN = "tok-3f9a1c77e0"
USER, PASSWORD = "ops", "pass word:42"


@dataclass
class Event:
    name: str
    data: str
    id: str | None = None

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value

    @property
    def number(self) -> int:
        assert self.id is not None
        return int(self.id.rsplit("-", 1)[1])


@dataclass
class Stream:
    """An ``/events`` response read line by line with http.client, as EventSource reads it."""

    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse
    comments: list[str] = field(default_factory=list)
    retry: str | None = None
    batches: list[Event] = field(default_factory=list)
    """Every ``event: records`` read, as sent (a JSON array, the id of its last record)."""
    pending: list[Event] = field(default_factory=list)

    def next(self) -> Event:
        """The next event, a batch's records one by one: each ``event: records`` (a JSON array whose
        ``id`` is its last record's) is checked and given back as ``record`` events, one per record,
        with the record's own id, as the page handles them."""
        if not self.pending:
            event = self.wire()
            if event.name != "records":
                return event
            self.batches.append(event)
            batch = json.loads(event.data)
            assert isinstance(batch, list) and batch, event.data[:200]
            assert event.id == batch[-1]["id"], (event.id, batch[-1]["id"])
            self.pending = [Event("record", json.dumps(rec), rec["id"]) for rec in batch]
        return self.pending.pop(0)

    def wire(self) -> Event:
        """The next event as sent (comments and retry noted on the way); fails on the socket timeout."""
        name, event_id = "message", None
        data: list[str] = []
        while True:
            raw = self.response.readline()
            assert raw, "the stream ended"
            line = raw.decode("utf-8").rstrip("\n")
            if not line:
                if data:
                    return Event(name, "\n".join(data), event_id)
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "":
                self.comments.append(value)
            elif key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                event_id = value
            elif key == "retry":
                self.retry = value

    def until(self, predicate: Any, limit: int = 100_000) -> list[Event]:
        """Events up to and including the first that *predicate* accepts."""
        seen = []
        for _ in range(limit):
            seen.append(self.next())
            if predicate(seen[-1]):
                return seen
        raise AssertionError(f"no such event in {limit}")

    def close(self) -> None:
        self.response.close()  # the response holds the socket (the server says Connection: close)
        self.conn.close()


class SmallBufferConnection(http.client.HTTPConnection):
    """A client whose socket takes little before the server's writes wait: a slow reader."""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = sock


def request(
    address: str,
    path: str,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    conn_class: type[http.client.HTTPConnection] = http.client.HTTPConnection,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    host, port = address.rsplit(":", 1)
    conn = conn_class(host, int(port), timeout=timeout)
    conn.request("GET", path, headers=headers or {})
    return conn, conn.getresponse()


def get(
    address: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn, response = request(address, path, headers)
    try:
        return response.status, response.read(), response
    finally:
        conn.close()


def events(
    address: str, path: str = "/events", headers: dict[str, str] | None = None, **kwargs: Any
) -> Stream:
    conn, response = request(address, path, headers, **kwargs)
    assert response.status == 200, response.read()
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    return Stream(conn, response)


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        stream.close()


def start(
    collectors: list[CollectorProcess], logdir: Path, *args: str, env: dict[str, str | None] | None = None
) -> tuple[CollectorProcess, str, str]:
    """A collector with --http on a free port: (process, zmq endpoint, HOST:PORT)."""
    endpoint = short_ipc_endpoint()
    address = f"127.0.0.1:{free_port()}"
    proc = CollectorProcess(["--bind", endpoint, "--dir", str(logdir), "--http", address, *args], env=env)
    collectors.append(proc)
    proc.wait_ready()
    return proc, endpoint, address


class App:
    """An app logging through a ZLogHandler (a logger of its own, no global state)."""

    def __init__(self, endpoint: str, name: str) -> None:
        self.handler = ZLogHandler(endpoint, app=name)
        self.logger = logging.Logger(name, logging.DEBUG)
        self.logger.addHandler(self.handler)

    def close(self) -> None:
        self.handler.close()


@pytest.fixture
def apps() -> Iterator[list[App]]:
    made: list[App] = []
    yield made
    for app in made:
        app.close()


def records_in_window(address: str, count: int, query: str = "") -> list[dict[str, Any]]:
    """The backlog of a fresh stream: the last *count* records the window holds (that match)."""
    stream = events(address, f"/events?backlog={count}&{query}")
    try:
        seen = stream.until(lambda event: event.name == "backlog-end")
    finally:
        stream.close()
    assert seen[-1].json["count"] == len(seen) - 1
    return [event.json for event in seen[:-1]]


def test_a_record_logged_by_an_app_arrives_as_an_event(
    collectors: list[CollectorProcess], logdir: Path, apps: list[App], streams: list[Stream]
) -> None:
    _, endpoint, address = start(collectors, logdir)
    stream = events(address)
    streams.append(stream)
    first = stream.next()
    assert stream.retry == "1000"
    assert (first.name, first.json) == ("backlog-end", {"count": 0, "oldest": None})
    app = App(endpoint, "app1")
    apps.append(app)
    app.logger.error("db.query::timeout after %d s", 30)
    event = stream.next()
    assert event.name == "record" and event.id is not None
    data = event.json
    assert data["id"] == event.id and event.number == 1
    assert data["message"] == "timeout after 30 s" and data["source"] == "app1"
    assert data["levelname"] == "ERROR" and data["levelno"] == 40 and data["subtopic"] == "db.query"
    assert data["pid"] == os.getpid() and data["host"] and isinstance(data["created"], float)
    assert data["time"][:4].isdigit()
    status, body, _ = get(address, "/sources")
    assert status == 200 and json.loads(body) == {"sources": ["app1"]}


def test_filters_are_applied_on_the_server(
    collectors: list[CollectorProcess], logdir: Path, apps: list[App], streams: list[Stream]
) -> None:
    _, endpoint, address = start(collectors, logdir)
    app1, app2 = App(endpoint, "app1"), App(endpoint, "app2")
    apps += [app1, app2]
    live = events(address, "/events?level=ERROR&source=app2")
    streams.append(live)
    assert live.next().name == "backlog-end"
    app1.logger.info("web::started")
    app1.logger.error("db::Timeout in app1")
    app2.logger.info("db::a timeout that is only info")
    app2.logger.error("db::connection refused")
    app2.logger.error("db::TIMEOUT after 30 s")
    app1.logger.warning("end")
    wait_until(lambda: len(records_in_window(address, 100)) == 6, what="all six in the window")
    # Live: only app2's errors, in order.
    got = [live.next().json["message"] for _ in range(2)]
    assert got == ["connection refused", "TIMEOUT after 30 s"]

    def messages(query: str) -> list[str]:
        """The matching messages, sorted: two apps' records may arrive in either order."""
        query = query.replace(" ", "%20")
        return sorted(record["message"] for record in records_in_window(address, 100, query))

    assert messages("level=error") == sorted(["Timeout in app1", "connection refused", "TIMEOUT after 30 s"])
    assert messages("level=30&source=app1") == ["Timeout in app1", "end"]
    assert messages("source=app1,app2&q=timeout") == sorted(
        ["Timeout in app1", "a timeout that is only info", "TIMEOUT after 30 s"]
    )
    assert messages("source=app1&source=app2&q=!timeout") == sorted(["started", "connection refused", "end"])
    assert messages("q=/TIME.*30 s$/") == ["TIMEOUT after 30 s"]
    assert messages("q=/time.*after/i&level=ERROR") == ["TIMEOUT after 30 s"]
    assert messages("q=" + "%2Fconn%7Cstart%2F") == ["connection refused", "started"]


def test_backlog_and_backlog_end(
    collectors: list[CollectorProcess], logdir: Path, apps: list[App], streams: list[Stream]
) -> None:
    _, endpoint, address = start(collectors, logdir, "--http-window", "50")
    app = App(endpoint, "app1")
    apps.append(app)
    for i in range(80):
        app.logger.info("record %d", i)
    wait_until(lambda: len(records_in_window(address, 1000)) == 50, what="the window to fill")
    assert get(address, "/events?backlog=5001")[0] == 400
    stream = events(address, "/events?backlog=3")
    streams.append(stream)
    seen = stream.until(lambda event: event.name == "backlog-end")
    assert [event.json["message"] for event in seen[:-1]] == ["record 77", "record 78", "record 79"]
    assert [event.number for event in seen[:-1]] == [78, 79, 80]
    assert seen[-1].json == {"count": 3, "oldest": seen[0].json["created"]}
    # The backlog is one event, not three: a JSON array whose id is its last record's.
    assert [(len(json.loads(batch.data)), batch.number) for batch in stream.batches] == [(3, 80)]
    # Only 50 are kept: the backlog is what the window holds.
    everything = records_in_window(address, 5000)
    assert len(everything) == 50 and everything[0]["message"] == "record 30"
    app.logger.info("after")
    assert stream.next().json["message"] == "after"
    assert stream.batches[-1].number == 81


def test_a_flood_arrives_in_batches_of_at_most_a_read_and_resumes_after_a_batch(
    collectors: list[CollectorProcess], logdir: Path, apps: list[App], streams: list[Stream]
) -> None:
    """Records logged faster than a client reads arrive as few events (each up to READ_LIMIT records,
    2,500 in a backlog are three), and a resume from a batch's id goes on after that whole batch."""
    _, endpoint, address = start(collectors, logdir, "--http-window", "5000")
    app = App(endpoint, "app1")
    apps.append(app)
    for i in range(2500):
        app.logger.info("early %d", i)
    wait_until(lambda: len(records_in_window(address, 5000)) == 2500, what="the window to fill")
    stream = events(address, "/events?backlog=5000")
    streams.append(stream)
    seen = stream.until(lambda event: event.name == "backlog-end")
    assert [event.number for event in seen[:-1]] == list(range(1, 2501))
    assert [len(json.loads(batch.data)) for batch in stream.batches] == [READ_LIMIT, READ_LIMIT, 500]
    for i in range(3000):
        app.logger.info("flood %d", i)
    got = [stream.next() for _ in range(3000)]
    assert [event.number for event in got] == list(range(2501, 5501))
    live = stream.batches[3:]
    assert all(len(json.loads(batch.data)) <= READ_LIMIT for batch in live) and len(live) < 3000
    stream.close()
    # Resume from the id of the first live batch: the records after it, none of it again.
    resumed = events(address, "/events", {"Last-Event-ID": live[0].id or ""})
    streams.append(resumed)
    after = live[0].number
    assert [resumed.next().number for _ in range(5500 - after)] == list(range(after + 1, 5501))


def test_last_event_id_resumes_without_gap_or_repeat(
    collectors: list[CollectorProcess], logdir: Path, apps: list[App], streams: list[Stream]
) -> None:
    _, endpoint, address = start(collectors, logdir, "--http-window", "100")
    app = App(endpoint, "app1")
    apps.append(app)
    first = events(address)
    streams.append(first)
    assert first.next().name == "backlog-end"
    for i in range(10):
        app.logger.info("one %d", i)
    seen = [first.next() for _ in range(10)]
    last = seen[4].id
    assert last is not None
    first.close()
    for i in range(10):
        app.logger.info("two %d", i)
    wait_until(lambda: len(records_in_window(address, 1000)) == 20, what="the second ten")
    # Resume after the fifth: the rest of the first ten and the second ten, then live; no backlog-end.
    resumed = events(address, "/events?backlog=100", {"Last-Event-ID": last})
    streams.append(resumed)
    got = [resumed.next() for _ in range(15)]
    assert [event.number for event in got] == list(range(6, 21))
    assert all(event.name == "record" for event in got)
    app.logger.info("three")
    after = resumed.next()
    assert after.name == "record" and after.number == 21
    # An id of another run (a restarted collector) or garbage: as if new.
    for header in ("0123abcd-5", "garbage \x7f", "-" * 300, seen[0].id.split("-")[0] + "-99999"):  # type: ignore[union-attr]
        fresh = events(address, "/events?backlog=2", {"Last-Event-ID": header})
        streams.append(fresh)
        names = [event.name for event in fresh.until(lambda event: event.name == "backlog-end")]
        assert names == ["record", "record", "backlog-end"], header
    # Fallen out of the window: told how many, then as if new.
    for i in range(150):
        app.logger.info("four %d", i)
    wait_until(
        lambda: records_in_window(address, 1)[0]["message"] == "four 149", what="the window to move on"
    )
    late = events(address, "/events?backlog=1", {"Last-Event-ID": seen[9].id or ""})
    streams.append(late)
    missed = late.next()
    assert missed.name == "missed"
    total = 21 + 150
    oldest = total - 100 + 1
    assert missed.json == {"missed": oldest - 1 - 10}
    assert [event.name for event in late.until(lambda event: event.name == "backlog-end")] == [
        "record",
        "backlog-end",
    ]


def test_a_slow_client_is_skipped_ahead_and_the_files_have_everything(
    collectors: list[CollectorProcess], logdir: Path, streams: list[Stream]
) -> None:
    proc, endpoint, address = start(collectors, logdir, "--http-window", "500", "--rcvhwm", "0")
    sender = StockSender(endpoint, "app")
    total = 20_000
    try:
        sender.wait_connected(logdir)
        slow = events(address, "/events?source=app", conn_class=SmallBufferConnection, timeout=60)
        streams.append(slow)
        assert slow.next().name == "backlog-end"
        # The slow client reads nothing while the flood arrives.
        padding = "x" * 400
        for i in range(total):
            sender.socket.send_multipart([b"app.INFO", f"flood {i} {padding}".encode()])
        wait_until(lambda: len(read_lines(logdir / "app.log")) == total, timeout=60, what="the flood written")
        missed = 0
        numbers: list[int] = []
        while True:
            event = slow.next()
            if event.name == "missed":
                missed += event.json["missed"]
                continue
            numbers.append(event.number)
            if event.json["message"].startswith(f"flood {total - 1} "):
                break
    finally:
        sender.close()
    assert missed > 0, "the slow client was never skipped ahead"
    assert numbers == sorted(set(numbers)), "a record came twice or out of order"
    # Every flood record was either sent or counted as missed (the probes came before the stream).
    assert len(numbers) + missed == total, (len(numbers), missed)
    counters = proc.ask_counters()
    assert counters["files"]["app.log"] == total
    assert counters["errors"].get("http_stream_behind", 0) >= 1
    assert proc.stop() == 0


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_a_token_from_the_environment_guards_every_path(
    collectors: list[CollectorProcess], logdir: Path, streams: list[Stream]
) -> None:
    proc, _, address = start(collectors, logdir, env={"ZLOGCOLLECT_HTTP_TOKEN": TOKEN})
    assert "HTTP auth: token" in proc.stderr
    for path in ("/", "/events", "/sources", "/metrics", "/healthz", "/nothing"):
        status, _, response = get(address, path)
        assert status == 401, path
        assert response.getheader("WWW-Authenticate") == 'Bearer realm="zlogcollect"'
        assert get(address, path, {"Authorization": f"Bearer {TOKEN}x"})[0] == 401
    assert get(address, "/sources", BEARER)[0] == 200
    assert get(address, "/metrics", BEARER)[0] == 200
    stream = events(address, headers=BEARER)
    streams.append(stream)
    assert stream.next().name == "backlog-end"
    counters = proc.ask_counters()
    assert counters["errors"]["http_unauthorized"] == 12
    assert proc.stop() == 0
    assert TOKEN not in proc.stderr


def test_basic_auth_from_a_file_and_open_metrics(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path, streams: list[Stream]
) -> None:
    secrets_file = tmp_path / "http-auth"
    secrets_file.write_text(f"# the web viewer\nuser={USER}\npassword={PASSWORD}\n")
    secrets_file.chmod(0o600)
    proc, _, address = start(collectors, logdir, "--http-auth-file", str(secrets_file), "--http-open-metrics")
    status, _, response = get(address, "/events")
    assert status == 401
    assert response.getheader("WWW-Authenticate") == 'Basic realm="zlogcollect", charset="UTF-8"'
    assert get(address, "/sources", basic(USER, "wrong"))[0] == 401
    assert get(address, "/sources", basic(USER, PASSWORD))[0] == 200
    assert get(address, "/metrics")[0] == 200 and get(address, "/healthz")[0] == 200  # open
    stream = events(address, headers=basic(USER, PASSWORD))
    streams.append(stream)
    assert stream.next().name == "backlog-end"
    assert proc.stop() == 0
    assert PASSWORD not in proc.stderr and "can be read by every user" not in proc.stderr


def run_collect(
    logdir: Path, *args: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "zlogcollect",
            "collect",
            "--bind",
            short_ipc_endpoint(),
            "--dir",
            str(logdir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=environ(env or {}),
    )


@pytest.mark.parametrize(
    ("content", "env", "needle"),
    [
        (None, {}, "cannot read it: No such file or directory"),
        ("token=\n", {}, "token is empty"),
        ("user=ops\n", {}, "user is given without password"),
        ("SECRETVALUE\n", {}, "line 1: expected token="),
        ("token=SECRETVALUE\n", {"ZLOGCOLLECT_HTTP_TOKEN": "SECRETVALUE"}, "in one place"),
        ("", {}, "holds no token"),
    ],
)
def test_bad_credentials_are_one_line_and_exit_78(
    logdir: Path, tmp_path: Path, content: str | None, env: dict[str, str | None], needle: str
) -> None:
    path = tmp_path / "auth"
    if content is not None:
        path.write_text(content)
    result = run_collect(logdir, "--http", f"127.0.0.1:{free_port()}", "--http-auth-file", str(path), env=env)
    assert result.returncode == 78, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("zlogcollect: error: ") and needle in lines[0], (
        result.stderr
    )
    assert "SECRETVALUE" not in result.stderr and "Traceback" not in result.stderr


def test_an_empty_token_in_the_environment_is_exit_78(logdir: Path) -> None:
    result = run_collect(logdir, "--http", f"127.0.0.1:{free_port()}", env={"ZLOGCOLLECT_HTTP_TOKEN": ""})
    assert result.returncode == 78, result.stderr
    assert result.stderr.strip() == "zlogcollect: error: the environment: token is empty"


def test_an_auth_file_without_http_is_exit_78(logdir: Path, tmp_path: Path) -> None:
    result = run_collect(logdir, "--http-auth-file", str(tmp_path / "auth"))
    assert result.returncode == 78 and "http_auth_file needs http" in result.stderr


def test_hostile_queries_and_headers(
    collectors: list[CollectorProcess], logdir: Path, apps: list[App], streams: list[Stream]
) -> None:
    proc, endpoint, address = start(collectors, logdir)
    app = App(endpoint, "app1")
    apps.append(app)
    app.logger.info("<script>alert(1)</script> \x1b[2J \u2028 ünï")
    wait_until(lambda: len(records_in_window(address, 10)) == 1, what="the record")
    message = records_in_window(address, 10)[0]["message"]
    assert message.startswith("<script>alert(1)</script> ") and message.endswith(" ünï")
    assert "\x1b" not in message and "\u2028" not in message  # escaped by the collector, as in the files
    for query, status in (
        ("q=%2F(%2F", 400),  # /(/: not a regular expression
        ("q=" + "a" * 5000, 400),
        ("level=%ff%fe", 400),
        ("level=NOPE", 400),
        ("backlog=-1", 400),
        ("backlog=abc", 400),
        ("backlog=" + "9" * 50, 400),
        ("&".join(["source=x"] * 500), 400),
        ("source=" + ",".join(str(i) for i in range(200)), 400),
        ("q=%zz&%%%&&==&backlog=", 200),
        ("q=%00%ff%fe&source=%c3%28", 200),
    ):
        conn, response = request(address, f"/events?{query}")
        try:
            assert response.status == status, (query, response.read())
            if status == 400:
                body = response.read()
                assert body.count(b"\n") == 1 and b"Traceback" not in body
            else:
                assert Stream(conn, response).next().name == "backlog-end"
        finally:
            conn.close()
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        try:
            raw.sendall(b"GET /events?" + b"q" * 100_000 + b" HTTP/1.1\r\n\r\n")
            raw.shutdown(socket.SHUT_WR)
            while raw.recv(65536):
                pass
        except OSError:
            pass  # the server may close on us mid-send: that is an answer too
    for header in ("\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), "x" * 3000):
        stream = events(address, "/events?backlog=1", {"Last-Event-ID": header})
        streams.append(stream)
        assert [event.name for event in stream.until(lambda e: e.name == "backlog-end")] == [
            "record",
            "backlog-end",
        ]
    assert get(address, "/healthz")[0] == 200
    assert proc.alive()
    assert proc.stop() == 0
    assert "Traceback" not in proc.stderr


def test_32_streams_at_once_then_503_and_scrapes_still_answered(
    collectors: list[CollectorProcess], logdir: Path, apps: list[App], streams: list[Stream]
) -> None:
    """Up to 32 live streams, a 33rd is told to retry; /metrics is served beside them; a stop ends them."""
    proc, endpoint, address = start(collectors, logdir)
    for _ in range(32):
        stream = events(address)
        streams.append(stream)
        assert stream.next().name == "backlog-end"
    status, body, response = get(address, "/events")
    assert status == 503 and response.getheader("Retry-After") == "5" and b"32" in body
    assert get(address, "/metrics")[0] == 200 and get(address, "/sources")[0] == 200
    app = App(endpoint, "app1")
    apps.append(app)
    app.logger.info("to all")
    for stream in streams:
        assert stream.next().json["message"] == "to all"
    streams.pop().close()
    wait_until(lambda: get(address, "/events?backlog=x")[0] == 400, what="a request to be served")

    def a_slot_is_free() -> bool:
        conn, response = request(address, "/events")
        if response.status == 200:
            streams.append(Stream(conn, response))
            return True
        conn.close()
        return False

    wait_until(a_slot_is_free, what="the closed stream's slot to be free")  # seen at its next write
    assert proc.stop() == 0  # the open streams do not hold the stop up
    assert proc.counters()["errors"]["http_too_many_streams"] >= 1
