"""The web viewer's files over a real collector's --http: only /, /static/app.js and /static/app.css, with their headers."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from tests.helpers import CollectorProcess, short_ipc_endpoint
from zlogcollect.testing.process import free_port

pytestmark = pytest.mark.e2e


def request(address: str, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_the_page_and_its_files_and_nothing_else(collectors: list[CollectorProcess], logdir: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    proc = CollectorProcess(["--bind", short_ipc_endpoint(), "--dir", str(logdir), "--http", address])
    collectors.append(proc)
    proc.wait_ready()

    for path, kind in (
        ("/", "text/html; charset=utf-8"),
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/app.css", "text/css; charset=utf-8"),
    ):
        status, headers, body = request(address, "GET", path)
        assert status == 200, path
        assert headers["content-type"] == kind
        assert headers["cache-control"] == "no-cache"
        assert headers["content-security-policy"].startswith("default-src 'self';")
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert int(headers["content-length"]) == len(body) > 0
        status, headers, head = request(address, "HEAD", path)
        assert status == 200 and head == b""

    for path in (
        "/static/",
        "/static/index.html",
        "/static/__init__.py",
        "/static/../__init__.py",
        "/static/%2e%2e/__init__.py",
        "/static/app.js/x",
        "/index.html",
        "/static/app.js%00",
    ):
        status, _, body = request(address, "GET", path)
        assert status == 404, (path, body)
        assert b"import" not in body

    status, headers, _ = request(address, "POST", "/")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert proc.alive()
