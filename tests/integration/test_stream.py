"""``/events`` served by gevent's real WSGI server in this process: the keepalive comment lines.

The collector sends ``: keepalive`` after 15 s without anything to send; here
:class:`~zlogcollect.stream.LiveStream` is given a shorter heartbeat (its
constructor argument) so the test sees several, read from a real TCP socket.
"""

from __future__ import annotations

import time

import gevent
import gevent.socket
import pytest
from gevent.pywsgi import WSGIServer

from zlogcollect.stats import Stats
from zlogcollect.stream import HEARTBEAT, LiveStream
from zlogcollect.window import Window
from zlogcollect.wire import parse_frames

pytestmark = pytest.mark.integration

BEAT = 0.2


class Reader:
    """An ``/events`` response read from a gevent socket, a line at a time."""

    def __init__(self, port: int) -> None:
        self.sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
        self.buffer = b""

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            assert data, "the stream ended"
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r")

    def until(self, wanted: bytes) -> list[bytes]:
        """The lines read up to and including the first that is *wanted*."""
        lines = [self.line()]
        while lines[-1] != wanted:
            lines.append(self.line())
        return lines


def _serve(live: LiveStream) -> WSGIServer:
    server = WSGIServer(("127.0.0.1", 0), live.events, log=None)
    server.start()
    return server


def test_a_quiet_stream_gets_a_keepalive_comment_each_heartbeat_and_records_in_between() -> None:
    window = Window(100)
    live = LiveStream(window, Stats(), heartbeat=BEAT)
    server = _serve(live)
    try:
        reader = Reader(server.server_port)

        def read() -> None:
            head = reader.until(b": keepalive")
            assert head[0] == b"HTTP/1.1 200 OK"
            assert b"Content-Type: text/event-stream; charset=utf-8" in head
            assert b"retry: 1000" in head
            assert b"event: backlog-end" in head  # then nothing to send: a keepalive
            assert reader.until(b": keepalive")[-1] == b": keepalive"  # and again, while quiet
            window.add(parse_frames([b"app1.INFO.db", b"quiet no more\n"], time.time()))
            live.after_drain()  # as the receive loop does at the end of a drain
            got = reader.until(b": keepalive")
            assert b"event: records" in got
            assert any(line.startswith(b"data: [") and b"quiet no more" in line for line in got)
            assert got.index(b"event: records") < got.index(b": keepalive")

        try:
            gevent.spawn(read).get(timeout=30)
        finally:
            reader.sock.close()
    finally:
        live.close()
        server.stop(timeout=5)


def test_the_heartbeat_defaults_to_15_seconds_and_must_be_positive() -> None:
    assert HEARTBEAT == 15.0
    assert LiveStream(Window(10), Stats())._heartbeat == HEARTBEAT  # noqa: SLF001 - the default given
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="heartbeat"):
            LiveStream(Window(10), Stats(), heartbeat=bad)
