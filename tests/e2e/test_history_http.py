"""/search and /context against a real collector: yesterday's error from app2, found in its rotated file."""

from __future__ import annotations

import datetime
import http.client
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CollectorProcess, StockSender, read_lines, short_ipc_endpoint, wait_until
from zlogcollect.formatting import text_formatter
from zlogcollect.testing.process import free_port
from zlogcollect.wire import Record

pytestmark = pytest.mark.e2e

TRACE = 'payment failed: timeout talking to the bank\nTraceback (most recent call last):\n  File "pay.py", line 9\nTimeoutError'


def get(address: str, path: str) -> tuple[int, str, str]:
    """``GET path``: (status, content type, body)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def ndjson(address: str, path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    status, kind, body = get(address, path)
    assert status == 200, body
    assert kind == "application/x-ndjson"
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[-1]["done"] is True and lines[-1]["count"] == len(lines) - 1
    return lines[:-1], lines[-1]


def write_yesterday(logdir: Path) -> tuple[str, float]:
    """Yesterday's rotated files in the collector's own (default, local time) format: app2's
    error with its traceback, app1's own timeout, and errors.log's copy of app2's error."""
    yesterday = datetime.date.today() - datetime.timedelta(days=1)
    ten = datetime.datetime.combine(yesterday, datetime.time(10)).timestamp()
    render = text_formatter()

    def rec(source: str, level: str, number: int, message: str, at: float) -> Record:
        return Record(source, level, number, "pay", message, at, at, {"host": "web01", "pid": 4242})

    error = rec("app2", "ERROR", 40, TRACE, ten + 60)
    files = {
        "app2.log": [
            rec("app2", "INFO", 20, "warming up", ten),
            error,
            rec("app2", "INFO", 20, "retrying", ten + 61),
        ],
        "app1.log": [rec("app1", "ERROR", 40, "timeout in app1", ten + 30)],
        "errors.log": [rec("app1", "ERROR", 40, "timeout in app1", ten + 30), error],
    }
    stamp = yesterday.isoformat()
    for name, records in files.items():
        path = logdir / f"{name}.{stamp}"
        path.write_text("".join(render(one) for one in records))
        os.utime(path, (ten + 3600, ten + 3600))
    return f"app2.log.{stamp}", ten


def test_yesterdays_error_from_app2_is_found_with_its_file_and_line_and_context(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    rotated, ten = write_yesterday(logdir)
    endpoint = short_ipc_endpoint()
    address = f"127.0.0.1:{free_port()}"
    proc = CollectorProcess(["--bind", endpoint, "--dir", str(logdir), "--http", address])
    collectors.append(proc)
    proc.wait_ready()
    sender = StockSender(endpoint, "app2")
    try:
        sender.wait_connected(logdir)
        sender.logger.error("timeout again today")
        sender.logger.info("all fine")
        wait_until(lambda: len(read_lines(logdir / "app2.log")) == 2, what="today's records written")
    finally:
        sender.close()

    found, done = ndjson(address, "/search?q=timeout&source=app2")
    assert [(one["file"], one["line"], one["source"], one["levelname"]) for one in found] == [
        (rotated, 2, "app2", "ERROR"),
        ("app2.log", 1, "app2", "ERROR"),
    ]
    assert found[0]["message"] == TRACE and found[0]["host"] == "web01" and found[0]["pid"] == 4242
    assert found[0]["created"] == ten + 60 and found[1]["message"] == "timeout again today"
    assert done == {"done": True, "count": 2, "truncated": False, "reason": None}

    # Yesterday only, errors only, every source: app1's and app2's errors, each once.
    today = datetime.date.today().isoformat()
    found, _ = ndjson(address, f"/search?level=ERROR&since={ten - 3600:.0f}&until={today}")
    assert [(one["source"], one["file"]) for one in found] == [
        ("app1", rotated.replace("app2", "app1")),
        ("app2", rotated),
    ]

    # The page's "open in context": the records around that line, the traceback one record.
    around, done = ndjson(address, f"/context?file={rotated}&line=2&before=5&after=5")
    assert [one["message"] for one in around] == ["warming up", TRACE, "retrying"]
    assert [one["line"] for one in around] == [1, 2, 6] and done["count"] == 3

    status, kind, body = get(address, "/search?since=yesterday")
    assert status == 400 and kind.startswith("text/plain") and body.count("\n") == 1
    assert "not a time" in body
    status, _, body = get(address, "/search?level=LOUD")
    assert status == 400 and "level" in body
    for bad_query in ("/context?file=app2.log&line=abc", "/search?limit=99999", "/search?q=%2F%28%2F"):
        status, _, body = get(address, bad_query)
        assert status == 400 and body.count("\n") == 1, bad_query
    found, done = ndjson(address, "/search?q=%ff%fe%00%1b[31m&source=%ff&since=0")  # garbage, but a query
    assert found == [] and done["reason"] is None
    for bad in ("../logs/app2.log", "%2Fetc%2Fpasswd", "_publishers.json", "nothere.log"):
        status, _, body = get(address, f"/context?file={bad}&line=1")
        assert status == 404, bad
    assert proc.stop() == 0
    assert "Traceback" not in proc.stderr


def test_search_answers_while_records_keep_arriving(collectors: list[CollectorProcess], logdir: Path) -> None:
    """A search over a busy file is answered, and the collector keeps receiving meanwhile."""
    endpoint = short_ipc_endpoint()
    address = f"127.0.0.1:{free_port()}"
    proc = CollectorProcess(["--bind", endpoint, "--dir", str(logdir), "--http", address])
    collectors.append(proc)
    proc.wait_ready()
    sender = StockSender(endpoint, "busy")
    try:
        sender.wait_connected(logdir)
        for i in range(20_000):
            sender.logger.info("line %d", i)
        wait_until(lambda: len(read_lines(logdir / "busy.log")) >= 1000, what="the first records")
        found, done = ndjson(address, "/search?source=busy&limit=10000")
        assert done["count"] == len(found) > 0
        numbers = [int(one["message"].split()[1]) for one in found]
        assert numbers == sorted(numbers)  # oldest first
        sender.logger.info("after the search")
        wait_until(
            lambda: ndjson(address, "/search?q=after%20the%20search")[1]["count"] == 1,
            timeout=20,
            what="a record sent after the search is found",
        )
    finally:
        sender.close()
    assert proc.stop() == 0
