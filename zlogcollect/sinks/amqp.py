"""The AMQP bridge: records into an :class:`Outbox`, and one greenlet that publishes them over a :class:`Link`."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import gevent
import gevent.event
import pika.exceptions

from zlogcollect.config import node_urls, redact
from zlogcollect.helpers import Backoff
from zlogcollect.routing import match_topic
from zlogcollect.sinks.amqp_link import (
    CONNECT_ERRORS,
    AmqpSettings,
    AmqpSetupError,
    Link,
    LinkClosed,
    QueueSpec,
    connection_parameters,
    describe,
)
from zlogcollect.sinks.amqp_message import BodyError, MessageFormat
from zlogcollect.sinks.outbox import WINDOW, Outbox
from zlogcollect.stats import Stats
from zlogcollect.wire import Record

__all__ = ["WINDOW", "AmqpSettings", "AmqpSetupError", "AmqpSink", "QueueSpec", "connection_parameters"]

log = logging.getLogger(__name__)

YIELD_EVERY = 32
"""Publishes between short real sleeps: GeventConnection needs one to let the hub write its buffer."""


class AmqpSink:
    """Forwards records to an exchange with publisher confirms, through broker outages.

    ``write`` only formats and appends to a bounded :class:`Outbox`, so the
    receive loop never waits on the broker. One greenlet owns the connection
    (a :class:`Link`): it publishes from the head of the outbox with up to
    :data:`WINDOW` unconfirmed messages, and when the link is lost it puts the
    unconfirmed ones back at the head, in order, and reconnects with backoff.
    A record counts as delivered only once the broker confirmed it.
    """

    def __init__(self, settings: AmqpSettings, stats: Stats) -> None:
        self.settings = settings
        self._stats = stats
        # The cluster's nodes in order: after a failed or lost connection the next one is tried.
        self._urls = node_urls(settings.url, settings.nodes)
        self._params = [connection_parameters(settings, url) for url in self._urls]
        self._node = 0
        self._tried = False
        self._format = MessageFormat(settings.routing_key)
        self._outbox = Outbox(stats, settings.buffer, settings.overflow)
        self._link: Link | None = None
        self._wake = gevent.event.Event()
        self._backoff = Backoff(0.1, 5.0, jitter=0.2)
        self._closing = False
        self._aborted = False
        self._close_deadline = 0.0
        self._pause_until = 0.0
        self._greenlet: gevent.Greenlet | None = None

    # -- the receive loop's side -------------------------------------------------

    def write(self, record: Record) -> None:
        """Queue *record* for the broker; never blocks. A full buffer drops and counts."""
        stats = self._stats.amqp
        stats["received"] += 1
        only = self.settings.only
        if only and not any(match_topic(p, record.topic) for p in only):
            stats["skipped"] += 1
            return
        try:
            message = self._format(record)
        except BodyError:
            self._outbox.drop(1, "amqp_bad_record")
            return
        self._outbox.put(message)
        self._wake.set()

    def quarantine(self, reason: str, detail: str, frames: Sequence[bytes]) -> None:
        """Malformed frames are not forwarded; the collector already counted them."""

    def flush(self) -> None:
        """Nothing to do: the publisher greenlet sends continuously."""

    def reopen(self) -> None:
        """Nothing to reopen for a network sink."""

    @property
    def connected(self) -> bool:
        """True while a connection to the broker is open (for /healthz and the metrics)."""
        link = self._link
        return link is not None and link.is_open and link.channel is not None

    @property
    def url(self) -> str:
        """The node connected to (or tried) now."""
        return self._urls[self._node]

    @property
    def pending(self) -> int:
        """Records buffered or awaiting a confirm."""
        return self._outbox.pending

    # -- lifecycle ------------------------------------------------------------------

    def start(self, wait: float | None = None) -> None:
        """Start the publisher greenlet; with *wait*, try the first connection now.

        Raises :class:`AmqpSetupError` when the broker refuses the credentials or
        the exchange is missing: that is configuration, not an outage. A broker
        that cannot be reached is not an error here: records wait in the buffer.
        """
        if wait is not None:
            try:
                self._connect(wait)
            except AmqpSetupError:
                self._disconnect()
                raise
            except CONNECT_ERRORS as exc:
                self._disconnect()
                if self._aborted:
                    return
                log.warning(
                    "AMQP broker %s not reachable yet (%s); buffering",
                    redact(self.url),
                    describe(exc),
                )
        self._greenlet = gevent.spawn(self._run)

    def abort_start(self) -> None:
        """Give up the first connection attempt of :meth:`start` (a stop arrived during start-up)."""
        self._aborted = True
        if self._link is not None:
            self._link.abort(LinkClosed("stopped during start-up"))

    def close(self, deadline: float | None = None) -> None:
        """Publish what is buffered and wait for its confirms, until *deadline* (monotonic)."""
        self._closing = True
        self._close_deadline = (
            deadline if deadline is not None else time.monotonic() + self.settings.close_timeout
        )
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(max(self._close_deadline - time.monotonic(), 0) + 2.0)
            self._greenlet.kill(block=True, timeout=2)
        self._disconnect()
        left = self._outbox.drop_all("amqp_unconfirmed_at_exit")
        if left:
            log.error("AMQP: %d records could not be confirmed by the broker before the deadline", left)

    # -- the publisher greenlet -----------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self._publish_loop()
                return
            except Exception:
                self._stats.errors["amqp_publisher"] += 1
                log.exception("AMQP: the publisher failed; restarting it in 1 s")
                try:
                    self._disconnect()
                except Exception:  # noqa: BLE001 - already failing; the next loop starts clean
                    self._link = None
                gevent.sleep(1.0)

    def _publish_loop(self) -> None:
        self._backoff.reset()
        refresh_at = self._refresh_time()
        while not (self._closing and (not self.pending or time.monotonic() >= self._close_deadline)):
            link = self._link
            if link is None or not link.is_open:
                try:
                    link = self._connect(self.settings.connect_timeout)
                except CONNECT_ERRORS as exc:
                    if not self._wait_to_reconnect(exc):
                        return
                    continue
                self._backoff.reset()
                refresh_at = self._refresh_time()
                log.info("AMQP: connected to %s, %d records to send", redact(self.url), self.pending)
            if refresh_at is not None and time.monotonic() >= refresh_at and not self._closing:
                self._refresh()
                refresh_at = self._refresh_time()
                continue
            if self._pause_until > time.monotonic():
                gevent.sleep(min(self._pause_until - time.monotonic(), 0.25))
                continue
            self._publish_some(link)
            self._wake.clear()
            if self._outbox.ready and link.channel is not None:
                continue
            self._wake.wait(0.25)

    def _wait_to_reconnect(self, exc: BaseException) -> bool:
        """Count a failed connection, warn (first, then at every retry once backed off to the cap), sleep.

        False if the sink is closing and the next try would come after its deadline.
        """
        self._stats.amqp["connect_failures"] += 1
        self._disconnect()
        if self._stats.amqp["connect_failures"] == 1 or self._backoff.current >= self._backoff.cap:
            log.warning(
                "AMQP: cannot connect to %s: %s; %d records buffered, retrying",
                redact(self.url),
                describe(exc),
                self.pending,
            )
        delay = self._backoff.next()
        if self._closing and time.monotonic() + delay >= self._close_deadline:
            return False
        gevent.sleep(delay)
        return True

    def _refresh_time(self) -> float | None:
        return time.monotonic() + self.settings.refresh if self.settings.refresh > 0 else None

    def _refresh(self) -> None:
        """Close and reopen the connection for load balancers that cut long sessions."""
        self._wait_for_confirms(5.0)
        log.debug("AMQP: refreshing the connection")
        self._stats.amqp["refreshes"] += 1
        self._disconnect(graceful=True)

    def _wait_for_confirms(self, timeout: float) -> None:
        """Wait up to *timeout* s for the broker to confirm what is in flight (or the link to go)."""
        deadline = time.monotonic() + timeout
        while self._outbox.in_flight and time.monotonic() < deadline and self._link is not None:
            self._wake.clear()
            self._wake.wait(0.05)

    def _publish_some(self, link: Link) -> None:
        """Publish from the head of the outbox while the window has room and the link lasts."""
        outbox = self._outbox
        sent = 0
        while outbox.ready and link.channel is not None:
            message = outbox.take()
            try:
                link.publish(message)
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("AMQP: publish failed: %s", describe(exc))
                self._disconnect()
                return
            sent += 1
            if sent % YIELD_EVERY == 0:
                # gevent.sleep(0) does not let the hub write pika's buffer; a real sleep does.
                gevent.sleep(0.0005)
        if sent:
            gevent.sleep(0)

    # -- the link: opened, its events, closed ---------------------------------------------

    def _connect(self, timeout: float) -> Link:
        # A lost link may still be closing: what it left unconfirmed goes back to the
        # outbox now, and its late events are ignored.
        self._disconnect()
        if self._tried and len(self._urls) > 1:
            # Every reconnection goes to the next node: the one that failed may be down for long.
            self._node = (self._node + 1) % len(self._urls)
            self._stats.amqp["node_switches"] += 1
        self._tried = True
        link = self._link = Link(
            self.settings,
            self._params[self._node],
            self._on_confirm,
            self._on_return,
            self._lost,
            url=self._urls[self._node],
        )
        link.open(timeout)
        return link

    def _on_confirm(self, tag: int, multiple: bool, ok: bool) -> None:
        if ok:
            self._outbox.ack(tag, multiple)
        elif self._outbox.nack(tag, multiple):
            # The broker could not take them: they are back ahead of newer records; pause
            # first so a queue that rejects publishes (x-overflow) is not hammered.
            self._pause_until = time.monotonic() + 1.0
        self._wake.set()

    def _on_return(self, message_id: str | None, routing_key: str) -> None:
        if message_id:
            self._outbox.returned(message_id)
        if self._stats.amqp["unroutable"] == 0:
            log.warning(
                "AMQP: a record with routing key %r matched no queue on %s; such records are counted as unroutable",
                routing_key,
                self.settings.exchange,
            )

    def _lost(self, reason: BaseException | None = None) -> None:
        """Put every unconfirmed message back at the head of the outbox, oldest first."""
        if reason is not None:
            log.warning("AMQP: connection lost: %s; %d records to re-send", describe(reason), self.pending)
        self._outbox.requeue()
        self._wake.set()

    def _disconnect(self, graceful: bool = False) -> None:
        link, self._link = self._link, None
        self._lost()
        if link is not None:
            link.close(graceful)
