"""One pika connection to the broker, opened step by step: connect, channel, confirms, topology, publish, close."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import pika
import pika.exceptions
import pika.spec
from pika.adapters.gevent_connection import GeventConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from zlogcollect.config import redact
from zlogcollect.sinks.amqp_message import Message

log = logging.getLogger("zlogcollect.sinks.amqp")


class AmqpSetupError(Exception):
    """The broker refused something only the operator can fix (credentials, a missing exchange)."""


class LinkClosed(Exception):
    """The connection or channel went away while a step waited for the broker's reply."""


@dataclass(frozen=True)
class QueueSpec:
    """A queue to declare and bind, from ``--declare-queue NAME=BINDING[,BINDING...]``."""

    name: str
    bindings: tuple[str, ...]


@dataclass(frozen=True)
class AmqpSettings:
    """Everything the bridge needs, already validated."""

    url: str
    nodes: tuple[str, ...] = ()
    """Other nodes of the cluster (HOST:PORT), tried in turn after *url* when a node fails."""
    exchange: str = "amq.topic"
    exchange_type: str = "topic"
    declare_exchange: bool = False
    routing_key: str | None = None
    only: tuple[str, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    queue_type: str = "classic"
    queue_arguments: dict[str, Any] = field(default_factory=dict)
    buffer: int = 100_000
    overflow: str = "drop-oldest"
    refresh: float = 0.0
    heartbeat: int = 30
    mandatory: bool = True
    connect_timeout: float = 10.0
    close_timeout: float = 10.0


def connection_parameters(settings: AmqpSettings, url: str | None = None) -> pika.URLParameters:
    """pika parameters from the URL (*url*, one of the nodes', else the settings'), with our
    heartbeat unless the URL sets one."""
    url = url or settings.url
    params = pika.URLParameters(url)
    if "heartbeat" not in (urlsplit(url).query or ""):
        params.heartbeat = settings.heartbeat
    params.connection_attempts = 1
    params.socket_timeout = settings.connect_timeout
    params.blocked_connection_timeout = None
    params.client_properties = {"connection_name": f"zlogcollect {socket.gethostname()} pid {os.getpid()}"}
    return params


CONNECT_ERRORS = (AmqpSetupError, LinkClosed, OSError, pika.exceptions.AMQPError, gevent.Timeout)
"""What :meth:`Link.open` raises when the broker cannot be used now."""


class Link:
    """One pika ``GeventConnection`` and its channel in confirm mode.

    :meth:`open` goes through the steps in order (connect, open a channel,
    turn on confirms, declare the topology), each waiting for its broker reply
    until one deadline; then :meth:`publish` sends on the channel. The owner
    hears of the broker through three callbacks: ``on_confirm(tag, multiple,
    ok)`` (``ok`` false for a nack), ``on_return(message_id, routing_key)``
    and ``on_lost(reason)`` when the link can no longer publish (``reason``
    None when there is nothing more to report). A link is used once: after
    :meth:`close` its late events are ignored and the owner opens a new one.
    """

    def __init__(
        self,
        settings: AmqpSettings,
        params: pika.URLParameters,
        on_confirm: Callable[[int, bool, bool], None],
        on_return: Callable[[str | None, str], None],
        on_lost: Callable[[BaseException | None], None],
        url: str | None = None,
    ) -> None:
        self._settings = settings
        self._url = url or settings.url
        self._params = params
        self._on_confirm = on_confirm
        self._on_return = on_return
        self._on_lost = on_lost
        self._connection: GeventConnection | None = None
        self.channel: Any = None
        """The channel once :meth:`open` finished, until the link is lost or closed."""
        self._reply: gevent.event.AsyncResult | None = None
        """The broker reply the current step waits for; failed if the link closes meanwhile."""
        self._closed = False

    @property
    def is_open(self) -> bool:
        return self._connection is not None and self._connection.is_open

    # -- the steps ----------------------------------------------------------------------

    def open(self, timeout: float) -> None:
        """Connect and set up the channel within *timeout* s; raises one of :data:`CONNECT_ERRORS`."""
        deadline = time.monotonic() + timeout
        connection = self._connect(deadline)
        channel = self._await(deadline, lambda done: connection.channel(on_open_callback=done))
        channel.add_on_close_callback(self._channel_closed)
        channel.add_on_return_callback(self._returned)
        self._await(deadline, lambda done: channel.confirm_delivery(self._confirmed, callback=done))
        try:
            self._declare(channel, deadline)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise AmqpSetupError(f"the broker refused the topology: {exc.reply_text}") from exc
        self.channel = channel

    def _connect(self, deadline: float) -> GeventConnection:
        url = redact(self._url)
        reply = self._reply = gevent.event.AsyncResult()
        self._connection = GeventConnection(
            self._params,
            on_open_callback=lambda conn: self._opened(reply, conn),
            on_open_error_callback=lambda _conn, exc: reply.set_exception(_as_exception(exc)),
            on_close_callback=self._connection_closed,
        )
        try:
            connection: GeventConnection = self._wait(reply, deadline)
        except pika.exceptions.ProbableAuthenticationError as exc:
            raise AmqpSetupError(f"the broker refused the credentials for {url}") from exc
        except pika.exceptions.ProbableAccessDeniedError as exc:
            raise AmqpSetupError(f"access denied to the virtual host of {url}") from exc
        except (pika.exceptions.AMQPConnectionError, AMQPConnectorException, ssl.SSLError) as exc:
            if _is_auth_failure(exc):
                raise AmqpSetupError(f"the broker refused the credentials for {url}") from exc
            tls = _find_cause(exc, (ssl.SSLError, ssl.CertificateError))
            if tls is not None:
                # Retrying cannot fix a TLS mismatch (amqps:// to a plain port, or a bad
                # certificate): it is configuration, like wrong credentials.
                raise AmqpSetupError(
                    f"TLS with {url} failed: {describe(tls)}"
                    " (amqps:// needs the broker's TLS port, usually 5671; amqp:// the plain one, 5672)"
                ) from exc
            if isinstance(exc, AMQPConnectorException):
                # pika hands some connection-workflow failures over unwrapped; they
                # are outages like any AMQPConnectionError, not crashes.
                raise LinkClosed(describe(exc)) from exc
            raise
        connection.add_on_connection_blocked_callback(
            lambda *_: log.warning("AMQP: the broker blocked publishing (low on memory or disk)")
        )
        connection.add_on_connection_unblocked_callback(
            lambda *_: log.info("AMQP: the broker unblocked publishing")
        )
        return connection

    def _declare(self, channel: Any, deadline: float) -> None:
        """The exchange (declared, or checked unless it is a built-in ``amq.*``), queues and bindings."""
        settings = self._settings
        if settings.declare_exchange:
            self._call(
                deadline,
                channel.exchange_declare,
                exchange=settings.exchange,
                exchange_type=settings.exchange_type,
                durable=True,
            )
        elif not settings.exchange.startswith("amq."):
            self._call(deadline, channel.exchange_declare, exchange=settings.exchange, passive=True)
        arguments = dict(settings.queue_arguments)
        if settings.queue_type != "classic":
            arguments["x-queue-type"] = settings.queue_type
        for queue in settings.queues:
            self._call(
                deadline, channel.queue_declare, queue=queue.name, durable=True, arguments=arguments or None
            )
            for binding in queue.bindings:
                self._call(
                    deadline,
                    channel.queue_bind,
                    queue=queue.name,
                    exchange=settings.exchange,
                    routing_key=binding,
                )

    def publish(self, message: Message) -> None:
        """Send *message* on the channel (its confirm comes later, through ``on_confirm``)."""
        self.channel.basic_publish(
            self._settings.exchange,
            message.routing_key,
            message.body,
            pika.BasicProperties(**message.properties()),
            mandatory=self._settings.mandatory,
        )

    def close(self, graceful: bool = False) -> None:
        """Close the connection (waiting up to 2 s for the broker's close-ok if *graceful*); ignore it from now on."""
        self._closed = True
        self.channel = None
        connection = self._connection
        if connection is None or connection.is_closed or connection.is_closing:
            return
        if not connection.is_open:
            # Still opening (e.g. a port that never answers): pika's close() here reports
            # its abort as a class instead of an instance and fails an assertion inside a
            # hub callback (a traceback on stderr). Leave it: pika's own stack timeout
            # closes the half-open socket a few seconds later (and _opened closes it
            # should it open after all).
            return
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass
        if graceful:
            deadline = time.monotonic() + 2.0
            while not connection.is_closed and time.monotonic() < deadline:
                gevent.sleep(0.01)

    def abort(self, exc: BaseException) -> None:
        """Make the step waiting now fail with *exc* (a stop arrived while connecting)."""
        if self._reply is not None and not self._reply.ready():
            self._reply.set_exception(exc)

    # -- waiting for replies ------------------------------------------------------------

    def _call(self, deadline: float, method: Callable[..., Any], **kwargs: Any) -> Any:
        """Call a pika channel *method* that replies through ``callback=`` and wait for the reply."""
        return self._await(deadline, lambda done: method(callback=done, **kwargs))

    def _await(self, deadline: float, request: Callable[[Callable[[Any], None]], None]) -> Any:
        """Send *request* (given the callback for its reply) and wait for the reply until *deadline*."""
        reply = self._reply = gevent.event.AsyncResult()
        request(reply.set)
        return self._wait(reply, deadline)

    def _wait(self, reply: gevent.event.AsyncResult, deadline: float) -> Any:
        try:
            return reply.get(timeout=max(deadline - time.monotonic(), 0.01))
        finally:
            self._reply = None

    # -- pika's callbacks -----------------------------------------------------------------

    def _opened(self, reply: gevent.event.AsyncResult, connection: Any) -> None:
        if self._closed:
            # Given up while still opening (see close) and opened after all: close it
            # rather than leave an idle connection on the broker.
            connection.close()
        else:
            reply.set(connection)

    def _confirmed(self, frame: Any) -> None:
        if not self._closed:
            method = frame.method
            self._on_confirm(
                method.delivery_tag, method.multiple, not isinstance(method, pika.spec.Basic.Nack)
            )

    def _returned(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        if not self._closed:
            self._on_return(properties.message_id, method.routing_key)

    def _channel_closed(self, channel: Any, reason: BaseException) -> None:
        if self._closed:
            return
        self.abort(_as_exception(reason))
        if channel is self.channel:
            self.channel = None
            log.warning("AMQP: channel closed: %s", describe(reason))
            self._on_lost(None)
            if self._connection is not None and self._connection.is_open:
                self._connection.close()

    def _connection_closed(self, _connection: Any, reason: BaseException) -> None:
        if self._closed:
            return
        self.abort(_as_exception(reason))
        was_ready = self.channel is not None
        self.channel = None
        self._on_lost(_as_exception(reason) if was_ready else None)


def _as_exception(reason: object) -> BaseException:
    return reason if isinstance(reason, BaseException) else LinkClosed(str(reason))


def _find_cause(
    exc: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    """The first exception of *kinds* in pika's nesting (args, causes, workflow attempts), if any."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kinds):
            return item
        if isinstance(item, BaseException):
            stack.extend(item.args)
            stack.append(item.__cause__)
            stack.append(getattr(item, "exception", None))
            attempts = getattr(item, "exceptions", None)
            if isinstance(attempts, (list, tuple)):
                stack.extend(attempts)
    return None


def _is_auth_failure(exc: BaseException) -> bool:
    kinds = (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)
    return _find_cause(exc, kinds) is not None


def describe(exc: BaseException) -> str:
    """A short cause: pika wraps the interesting exception (connection refused, ...) several levels deep."""
    inner: BaseException = exc
    for _ in range(6):
        candidates: list[object] = [*inner.args, getattr(inner, "exception", None)]
        failures = getattr(inner, "exceptions", None)
        if isinstance(failures, (list, tuple)) and failures:
            candidates.insert(0, failures[-1])
        nested = next((c for c in candidates if isinstance(c, BaseException)), None)
        if nested is None:
            break
        inner = nested
    text = str(inner)
    return (
        f"{type(inner).__name__}: {text}" if text and text != type(inner).__name__ else type(inner).__name__
    )
