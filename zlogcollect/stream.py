"""``/events`` and ``/sources``: the live stream of accepted records as Server-Sent Events (issue 14).

The receive loop feeds a :class:`window.Window` (one append per accepted
record) and, at the end of every drain, calls :meth:`LiveStream.after_drain`:
that numbers the batch and, only if a client is connected, wakes the clients
(one :class:`gevent.event.Event`, set once per drain, never per record). Each
client is a greenlet of gevent's WSGI server (one per request): it reads the
window from its own cursor through its own filter and writes what it found as
one chunk. Its writes wait in that greenlet alone: the receive loop never waits
for a browser. A client that falls so far behind that records leave the window
before it reads them is skipped ahead to the oldest record kept and told
``event: missed`` with how many; the files have them all the same.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final
from urllib.parse import parse_qs

import gevent
import gevent.event
import gevent.socket

from zlogcollect.live import Filter, FilterError
from zlogcollect.stats import Stats
from zlogcollect.window import Window, parse_event_id, sources_in_names
from zlogcollect.wire import DEFAULT_LEVELS, Levels

log = logging.getLogger(__name__)

__all__ = ["MAX_BACKLOG", "MAX_STREAMS", "LiveStream"]

MAX_STREAMS: Final = 32
"""``/events`` clients served at once; one more is answered 503 (EventSource retries)."""
MAX_BACKLOG: Final = 5000
"""Most records ``backlog=N`` may ask for."""
HEARTBEAT: Final = 15.0
"""Seconds of silence after which a ``: keepalive`` comment line is sent (LiveStream's default)."""
COALESCE: Final = 0.02
"""Seconds a woken client waits for more drains to land before it reads (at most 50 reads a second)."""
READ_LIMIT: Final = 1000
"""Records one read takes at most; the client yields to the hub between reads."""
SEND_BUFFER: Final = 64 * 1024
"""SO_SNDBUF of a stream's socket: little kernel memory per slow client, and slowness seen soon."""
SEND_TIMEOUT: Final = 30.0
"""Seconds a write to a client may make no progress before the connection is closed."""
MAX_QUERY_FIELDS: Final = 200

StartResponse = Callable[..., Any]
SOCKET_KEY: Final = "zlogcollect.socket"
"""Where httpd puts the connection's socket in the WSGI environ."""


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _records(events: Sequence[tuple[int, str]], run: str) -> bytes:
    """*events* as ``event: records`` of at most :data:`READ_LIMIT` records each: ``data`` a JSON
    array, ``id`` the last record's (a resume goes on after the whole batch). One event per read,
    not per record: a page at 20,000 records/s handles tens of events a second, not 20,000."""
    return b"".join(
        f"id: {run}-{part[-1][0]}\nevent: records\ndata: [{','.join(text for _, text in part)}]\n\n".encode(
            "utf-8", "backslashreplace"
        )
        for part in (events[start : start + READ_LIMIT] for start in range(0, len(events), READ_LIMIT))
    )


class BadRequest(ValueError):
    """A query an ``/events`` request cannot be served with: one line for a 400."""


def parse_backlog(params: dict[str, list[str]]) -> int:
    """``backlog=N``: 0 (default) to :data:`MAX_BACKLOG`."""
    value = (params.get("backlog") or ["0"])[-1].strip() or "0"
    if not value.isdigit() or len(value) > 9 or int(value) > MAX_BACKLOG:
        raise BadRequest(f"backlog: expected a number from 0 to {MAX_BACKLOG}")
    return int(value)


class LiveStream:
    """The window and its clients: ``/events`` (SSE) and ``/sources`` (JSON)."""

    def __init__(
        self,
        window: Window,
        stats: Stats,
        levels: Levels = DEFAULT_LEVELS,
        directory: str | None = None,
        errors_file: str = "",
        heartbeat: float = HEARTBEAT,
    ) -> None:
        """*directory*: --dir, whose ``SOURCE.log`` files name sources of earlier runs too (None: the
        bridge, or routes that do not name files by source). *heartbeat*: seconds without anything
        to send before a stream gets a ``: keepalive`` comment line (:data:`HEARTBEAT`; tests use
        less)."""
        if not heartbeat > 0:
            raise ValueError("heartbeat: expected a positive number of seconds")
        self.window = window
        self._stats = stats
        self._levels = levels
        self._directory = directory
        self._errors_file = errors_file
        self._heartbeat = float(heartbeat)
        self._wake = gevent.event.Event()
        self.clients = 0
        self.closing = False

    def after_drain(self) -> None:
        """The end of a drain: number what it accepted; wake the clients, if any, once."""
        if self.window.commit() and self.clients:
            wake, self._wake = self._wake, gevent.event.Event()
            wake.set()

    def close(self) -> None:
        """End every stream (the collector stops)."""
        self.closing = True
        self._wake.set()

    def sources(self, _environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """``{"sources": [...]}``: this run's sources and those the files in --dir are named after."""
        found = self.window.sources()
        if self._directory is not None:
            try:
                with os.scandir(self._directory) as entries:
                    found |= sources_in_names((entry.name for entry in entries), self._errors_file)
            except OSError:
                pass  # the live ones still count
        body = json.dumps({"sources": sorted(found)}, ensure_ascii=False) + "\n"
        start_response("200 OK", [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        return [body.encode("utf-8", "backslashreplace")]

    def events(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """``GET /events?level=&source=&q=&backlog=N``, honouring ``Last-Event-ID``."""
        try:
            params = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=MAX_QUERY_FIELDS)
            flt = Filter.from_query(params, self._levels)
            backlog = parse_backlog(params)
        except (FilterError, BadRequest) as exc:
            return _plain(start_response, "400 Bad Request", f"{exc}\n")
        except ValueError:  # parse_qs: too many fields
            return _plain(start_response, "400 Bad Request", f"at most {MAX_QUERY_FIELDS} query parameters\n")
        if self.clients >= MAX_STREAMS:
            self._stats.errors["http_too_many_streams"] += 1
            return _plain(
                start_response,
                "503 Service Unavailable",
                f"at most {MAX_STREAMS} live streams at once\n",
                [("Retry-After", "5")],
            )
        sock = environ.get(SOCKET_KEY)
        if not isinstance(sock, gevent.socket.socket):
            sock = None
        else:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                sock.settimeout(SEND_TIMEOUT)
            except OSError:
                pass
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-store"),
                ("X-Accel-Buffering", "no"),
                ("Connection", "close"),  # its socket was read by the watcher: no second request on it
            ],
        )
        return self._stream(flt, backlog, str(environ.get("HTTP_LAST_EVENT_ID", ""))[:200], sock)

    def _start(self, flt: Filter, backlog: int, last_id: str) -> tuple[bytes, int]:
        """The stream's first chunk (retry, missed, backlog, backlog-end) and the cursor after it."""
        window = self.window
        out = [b"retry: 1000\n\n"]
        last = parse_event_id(last_id) if last_id else None
        if last is not None and last[0] == window.run and last[1] <= window.total:
            if last[1] >= window.oldest - 1:
                return out[0], last[1]  # resume: no gap, no repeat, no backlog
            out.append(_event("missed", {"missed": window.oldest - 1 - last[1]}))
        found = window.backlog(backlog, flt)
        out.append(_records(found, window.run))
        oldest = window.created_of(found[0][0]) if found else None
        out.append(_event("backlog-end", {"count": len(found), "oldest": oldest}))
        return b"".join(out), window.total

    def _stream(
        self, flt: Filter, backlog: int, last_id: str, sock: gevent.socket.socket | None = None
    ) -> Iterator[bytes]:
        self.clients += 1
        gone = gevent.event.Event()
        watcher = gevent.spawn(_watch, sock, gone) if sock is not None else None
        try:
            first, cursor = self._start(flt, backlog, last_id)
            yield first
            window = self.window
            beat = time.monotonic() + self._heartbeat
            while not (self.closing or gone.is_set()):
                found = window.read(cursor, flt, READ_LIMIT)
                cursor = found.cursor
                chunk = _records(found.events, window.run)
                if found.missed:
                    self._stats.errors["http_stream_behind"] += 1
                    chunk = _event("missed", {"missed": found.missed}) + chunk
                if chunk:
                    yield chunk
                    beat = time.monotonic() + self._heartbeat
                if cursor < window.total:
                    gevent.idle()  # more to read: let the receive loop and the other clients go first
                    continue
                wait = beat - time.monotonic()
                if wait <= 0:
                    yield b": keepalive\n\n"
                    beat = time.monotonic() + self._heartbeat
                else:
                    woken = gevent.wait([self._wake, gone], timeout=wait, count=1)
                    if woken and not gone.is_set():
                        gevent.sleep(COALESCE)
        finally:
            self.clients -= 1
            if watcher is not None:
                watcher.kill()  # before pywsgi touches the socket again


def _watch(sock: gevent.socket.socket, gone: gevent.event.Event) -> None:
    """Read the stream's socket until the client hangs up, then set *gone*: a closed tab frees its
    slot at once, not at the next write. Whatever a client sends meanwhile is read and ignored."""
    try:
        while True:
            try:
                if not sock.recv(4096):
                    break
            except TimeoutError:
                continue
    except OSError:
        pass
    gone.set()


def _plain(
    start_response: StartResponse, status: str, text: str, headers: list[tuple[str, str]] | None = None
) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])])
    return [text.encode()]
