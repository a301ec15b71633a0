"""``--http``: /metrics and /healthz served by gevent's WSGI server on the collector's own hub.

The server runs in greenlets beside the receive loop (never a thread: that would
compete for the GIL and run outside the hub). The receive loop yields after every
full batch, so a scrape is answered while a backlog drains; a scrape only reads
counters, so it never holds the loop up for long.
"""

from __future__ import annotations

import json
import logging
import socket
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.pool
from gevent.pywsgi import WSGIHandler, WSGIServer
from prometheus_client import make_wsgi_app

from zlogcollect import web
from zlogcollect.health import Health
from zlogcollect.helpers import Throttle
from zlogcollect.history import History, respond
from zlogcollect.metrics import registry
from zlogcollect.stats import Stats
from zlogcollect.stream import MAX_STREAMS, SOCKET_KEY, LiveStream
from zlogcollect.webauth import Auth
from zlogcollect.wire import escape_text

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
"""HTTP connections served at once besides the live streams; more wait in the listen backlog."""
POOL_SIZE = MAX_CONNECTIONS + MAX_STREAMS
"""Greenlets serving connections: up to 32 ``/events`` streams (stream.MAX_STREAMS) plus 32 others."""
OPEN_PATHS = ("/metrics", "/healthz")
"""What ``--http-open-metrics`` lets through without credentials."""
IDLE_TIMEOUT = 10.0
"""Seconds a connection may take to send its request (a slow or silent client is cut off)."""

StartResponse = Callable[..., Any]


class HttpBindError(Exception):
    """The address cannot be served; *config* is True when the address itself is wrong (exit 78)."""

    def __init__(self, message: str, config: bool) -> None:
        super().__init__(message)
        self.config = config


class _Handler(WSGIHandler):  # type: ignore[misc]
    """pywsgi's handler with a deadline on every read, so idle connections do not pile up."""

    def handle(self) -> None:
        self.socket.settimeout(IDLE_TIMEOUT)
        super().handle()

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[SOCKET_KEY] = self.socket  # /events sets its send buffer and write deadline
        return environ

    def _handle_client_error(self, ex: Exception) -> Any:
        # pywsgi prints a traceback to stderr for a bad request that is not a ValueError
        # (e.g. more than 100 headers): a client must not write to the collector's stderr.
        if not isinstance(ex, (ValueError, OSError)):
            ex = ValueError(f"{type(ex).__name__}: {ex}")
        return super()._handle_client_error(ex)

    def handle_error(self, t: Any, v: Any, _tb: Any) -> None:
        # An unexpected error inside pywsgi (the application catches its own): one escaped
        # line instead of the hub's traceback, and a 500 if the response has not started.
        self.server.error_log.write(f"internal error: {t.__name__}: {v}")
        self._send_error_response_if_possible(500)


class _ErrorLog:
    """Where pywsgi reports bad requests: counted, and logged (escaped, at most every 10 s) at debug level."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._throttle = Throttle(1, 10.0)

    def write(self, message: str) -> None:
        self._stats.errors["http_bad_request"] += 1
        if self._throttle.allow("http"):
            log.debug("HTTP: %s", escape_text(message.strip(), 300))

    def flush(self) -> None:
        pass


class HttpServer:
    """The ``--http`` endpoint: the web viewer (``/``), ``/metrics`` (Prometheus text), ``/healthz`` (JSON, 200 or 503)."""

    def __init__(
        self,
        address: tuple[str, int],
        stats: Stats,
        health: Health,
        files: bool,
        live: LiveStream | None = None,
        auth: Auth | None = None,
        open_metrics: bool = False,
        history: History | None = None,
    ) -> None:
        """*live*: ``/events`` and ``/sources``; *auth*: the credentials every request needs (None: off),
        but for /metrics and /healthz when *open_metrics*; *history*: ``/search`` and ``/context``."""
        self._stats = stats
        self.live = live
        self._auth = auth
        self._open_metrics = open_metrics
        self._history = history
        self._health = health
        self.registry = registry(stats, health, files)
        self._metrics = make_wsgi_app(self.registry)
        self._complaints = Throttle(1, 10.0)
        self._server = WSGIServer(
            address,
            self.app,
            spawn=gevent.pool.Pool(POOL_SIZE),
            handler_class=_Handler,
            log=None,
            error_log=_ErrorLog(stats),
        )
        self._requested = address

    @property
    def auth_kinds(self) -> str:
        """What credentials a request needs (``token``, ``basic``, ``token or basic``; '' = none)."""
        return self._auth.kinds if self._auth is not None else ""

    @property
    def address(self) -> str:
        """``HOST:PORT`` as bound (the real port when 0 was asked for)."""
        host, port = self._server.address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        """Bind and start serving; :class:`HttpBindError` with a one-line reason if it cannot."""
        host, port = self._requested
        where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        try:
            self._server.start()
        except socket.gaierror as exc:
            raise HttpBindError(f"http = {where!r}: cannot resolve {host!r}: {exc.strerror}", True) from None
        except OSError as exc:
            raise HttpBindError(f"cannot serve HTTP on {where}: {exc.strerror or exc}", False) from None

    def stop(self) -> None:
        """Stop listening and close the connections being served (the live streams end first)."""
        if self.live is not None:
            self.live.close()
        self._server.stop(timeout=1.0)

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application: checks the credentials, then routes by path: the page (``/``,
        ``/static/NAME``), /events, /sources, /search, /context, /metrics, /healthz; anything else is 404."""
        path = environ.get("PATH_INFO", "")
        try:
            auth = self._auth
            if (
                auth is not None
                and not (self._open_metrics and path in OPEN_PATHS)
                and not auth.allows(environ.get("HTTP_AUTHORIZATION"))
            ):
                return self._unauthorized(environ, start_response, auth)
            live = self.live
            if live is not None and path in ("/events", "/sources"):
                if environ.get("REQUEST_METHOD") != "GET":
                    return _text(start_response, "405 Method Not Allowed", "use GET\n", [("Allow", "GET")])
                return (
                    live.events(environ, start_response)
                    if path == "/events"
                    else live.sources(environ, start_response)
                )
            if path == "/metrics":
                result: Iterable[bytes] = self._metrics(environ, start_response)
                return result
            if path in ("/search", "/context") and self._history is not None:
                return self._search(path, environ, start_response)
            page = web.asset(path)
            if path != "/healthz" and page is None:
                return _text(start_response, "404 Not Found", "not found: try /, /metrics or /healthz\n")
            if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
                return _text(start_response, "405 Method Not Allowed", "use GET\n", [("Allow", "GET, HEAD")])
            if page is not None:
                content, content_type = page
                start_response("200 OK", [*web.headers(content_type), ("Content-Length", str(len(content)))])
                return [content]
            healthy, body = self._health.report()
            status = "200 OK" if healthy else "503 Service Unavailable"
            data = (json.dumps(body) + "\n").encode()
            start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [data]
        except Exception:  # noqa: BLE001 - a bug here must not stop the server or reach the client
            self._stats.errors["http"] += 1
            if self._complaints.allow("http"):
                log.error(
                    "HTTP: answering %s failed (more within 10 s are only counted): %s",
                    escape_text(path, 100),
                    escape_text(traceback.format_exc(), 4000),
                )
            return _text(start_response, "500 Internal Server Error", "internal error\n")

    def _search(self, path: str, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """/search and /context (zlogcollect.history): ndjson streamed, the hub yielded to as it reads."""
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", "use GET\n", [("Allow", "GET, HEAD")])
        assert self._history is not None

        def failed() -> None:
            self._stats.errors["http"] += 1
            if self._complaints.allow("http"):
                log.error("HTTP: %s failed: %s", path, escape_text(traceback.format_exc(), 4000))

        return respond(
            self._history, path, environ.get("QUERY_STRING", ""), start_response, gevent.sleep, failed
        )

    def _unauthorized(
        self, environ: dict[str, Any], start_response: StartResponse, auth: Auth
    ) -> list[bytes]:
        """401 with the challenges; counted, and said (never with what was sent) at most every 10 s."""
        self._stats.errors["http_unauthorized"] += 1
        if self._complaints.allow("unauthorized"):
            log.warning(
                "HTTP: refused a request for %s from %s without valid credentials (more within 10 s are"
                " only counted)",
                escape_text(environ.get("PATH_INFO", ""), 100),
                escape_text(str(environ.get("REMOTE_ADDR", "?")), 60),
            )
        return _text(
            start_response, "401 Unauthorized", f"credentials needed: {auth.kinds}\n", auth.challenges()
        )


def _text(
    start_response: StartResponse, status: str, text: str, headers: list[tuple[str, str]] | None = None
) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])])
    return [text.encode()]
