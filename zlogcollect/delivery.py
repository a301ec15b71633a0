"""One publisher's delivery: record numbers, holding until a collector subscribes, sending, counting drops.

Between the handler (which formats and numbers records on the hot path) and
the :class:`~zlogcollect.publisher.Publisher` (the socket). Its :class:`State`
names where the handler is in its life; only ``SENDING`` lets ``emit`` send
straight to the socket, every other state goes through :meth:`Delivery.emit_slow`.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

import zmq

from zlogcollect.encode import Encoder
from zlogcollect.helpers import Backoff
from zlogcollect.hold import HoldBuffer
from zlogcollect.publisher import Publisher
from zlogcollect.replay import ReplayWindow

__all__ = ["LIVE", "RECHECK_EVERY", "Delivery", "State"]

RECHECK_EVERY: Final = (
    256  # records between looks for unsubscriptions (only bind mode sees them); a power of 2
)
_NOBLOCK: Final = zmq.NOBLOCK
_MORE: Final = zmq.SNDMORE | zmq.NOBLOCK
_CHUNK: Final = 500  # held records flushed per lock hold, so emit() in other threads waits little

_Held = tuple[bytes, bytes, "dict[str, Any] | None"]  # topic, text, extension fields (None: unstructured)


class State(enum.Enum):
    """Where a handler is in its life.

    Transitions::

        HOLDING --subscription--> FLUSHING --held records sent--> SENDING
        HOLDING --subscription, nothing held--> SENDING
        FLUSHING, SENDING --last unsubscription (bind mode)--> HOLDING
        REOPEN --first record opens the child's own socket--> HOLDING (then as above)
        HOLDING, FLUSHING, SENDING --fork--> REOPEN, or ORPHANED for a socket the app gave
        any --close()--> CLOSED

    A socket that cannot hear subscriptions (a PUB handed in) starts in SENDING.
    """

    HOLDING = "holding"  # no collector subscribed yet: records are held
    FLUSHING = "flushing"  # a collector subscribed, records still held: those go out first
    SENDING = "sending"  # subscribed, nothing held: emit sends straight to the socket
    REOPEN = "reopen"  # a fork child: opens its own socket at its first record
    ORPHANED = "orphaned"  # a fork child of a handler given a socket: its records are dropped
    CLOSED = "closed"  # close() ran (or the socket never opened): records are dropped


LIVE: Final = frozenset({State.HOLDING, State.FLUSHING, State.SENDING})
"""The states in which the socket may be used."""


class Delivery:
    """Numbering, holding and sending for one handler, under the handler's *lock*.

    ``seq``, ``dropped`` (since the last record that got out: it travels with
    the next one), ``state``, ``socket``, ``send_frame`` and ``window`` are
    plain attributes because ``emit``'s hot path reads and writes them inline.
    *opened* is called whenever the publisher's socket is (re)opened.

    *replay* bounds the replay window (records, seconds, bytes; a first bound of 0
    disables it): every structured record sent is kept as sent, and each time the
    publisher hears a collector subscribe again the window goes out again, in order,
    before anything newer (:meth:`sync`).
    """

    def __init__(
        self,
        publisher: Publisher,
        encoder: Encoder,
        lock: threading.RLock,
        hold: int,
        hold_timeout: float,
        opened: Callable[[], None] = lambda: None,
        replay: tuple[int, float, int] = (0, 0.0, 0),
    ) -> None:
        self.publisher = publisher
        self.encoder = encoder
        self.lock = lock
        self._hold_bounds = (max(int(hold), 0), float(hold_timeout))
        self._replay_bounds = replay
        self.joins = 0  # the publisher's joins already answered (with a replay, after the first)
        self._on_open = opened
        self.state = State.CLOSED  # until opened() runs
        self.restart()

    def restart(self) -> None:
        """A new publisher sequence: new ``pub``, seq 0, nothing held or dropped (start, fork child)."""
        self.seq = 0
        self.dropped = 0
        self.dropped_total = 0
        self.held: HoldBuffer[_Held] = HoldBuffer(*self._hold_bounds)
        self.flusher: threading.Thread | None = None
        # No window for a socket that cannot hear subscriptions: it could never replay.
        enabled = self._replay_bounds[0] > 0 and self.publisher.detects
        self.window: ReplayWindow | None = ReplayWindow(*self._replay_bounds) if enabled else None
        self.replays = 0  # times the window went out again
        self.replayed = 0  # records sent again
        self.replay_cut = 0  # records a full queue kept from going out again (not new records: not drops)
        self.encoder.restart(os.urandom(8).hex())

    def opened(self) -> None:
        """The publisher's socket is (re)opened: take it for the hot path and tell the handler."""
        publisher = self.publisher
        self.socket, self.send_frame = publisher.socket, publisher.send_frame
        self.joins = publisher.joins
        self._on_open()
        self.sync()

    def sync(self) -> None:
        """HOLDING, FLUSHING or SENDING from the subscription and the hold buffer (live states only).

        A subscription heard since the last look first sends the replay window again
        (before held records and anything newer): nothing was sent before the first
        one, so only a collector that comes back gets records again.
        """
        if self.publisher.joins != self.joins:
            self.joins = self.publisher.joins
            if self.publisher.subscribed:
                self.replay()
        if not self.publisher.subscribed:
            self.state = State.HOLDING
        else:
            self.state = State.FLUSHING if self.held else State.SENDING

    def poll(self) -> None:
        """Look for (un)subscriptions on a live XPUB and update the state."""
        if self.state in LIVE and self.publisher.detects:
            self.publisher.poll()
            self.sync()

    def after_fork(self) -> None:
        """In a fork child: drop the parent's socket and pending records, start afresh."""
        if self.state is State.CLOSED:
            return
        self.restart()
        self.state = State.REOPEN if self.publisher.after_fork() else State.ORPHANED

    def replay(self) -> None:
        """Send the window again, oldest first; a full queue (or a socket error) stops it, counted.

        The records were sent once already, so what does not go out again is not a
        drop: it is counted in ``replay_cut``.
        """
        records = [] if self.window is None else self.window.frames()
        if not records:
            return
        self.replays += 1
        send = self.send_frame
        sock = self.socket
        sent = 0
        try:
            for topic, body, extension in records:
                send(sock, topic, _MORE)  # with XPUB_NODROP only this first frame can be refused
                send(sock, body, _MORE)
                send(sock, extension, _NOBLOCK)
                sent += 1
        except zmq.ZMQError:  # zmq.Again: the queue is full; the newest records wait for no replay
            pass
        finally:
            self.replayed += sent
            self.replay_cut += len(records) - sent

    @property
    def stats(self) -> dict[str, int]:
        """Records attempted, dropped, held now and replayed, since this publisher sequence started."""
        return {
            "seq": self.seq,
            "dropped": self.dropped_total,
            "held": len(self.held),
            "joins": self.joins,
            "window": 0 if self.window is None else len(self.window),
            "replays": self.replays,
            "replayed": self.replayed,
            "replay_cut": self.replay_cut,
        }

    def count_drops(self, count: int) -> None:
        """Count records dropped (they travel as ``dropped`` with the next record that gets out)."""
        self.dropped += count
        self.dropped_total += count

    def emit_slow(
        self, record: logging.LogRecord, seq: int, topic: bytes, body: bytes, structured: bool
    ) -> None:
        """The rare paths of ``emit``: not subscribed yet, records held, after fork, after close."""
        state = self.state
        if state is State.CLOSED or state is State.ORPHANED:
            self.count_drops(1)
            if state is State.ORPHANED and self.dropped_total == 1 and sys.stderr:
                sys.stderr.write(
                    f"zlogcollect: pid {os.getpid()} drops its records: a socket given to ZLogHandler "
                    "cannot be used after fork (give it an endpoint instead)\n"
                )
            return
        if state is State.REOPEN:
            self.publisher.open()  # stays REOPEN if this fails: the parent's socket is never used
            self.opened()
        self.poll()
        fields = self.encoder.fields(record, seq) if structured else None
        if self.state is State.HOLDING:
            self._hold(topic, body, fields)
            return
        if self.state is State.FLUSHING:
            # Subscribed now: send what is held first, right here (the caller holds the
            # lock). Left to the flusher thread, a logging burst outpaces it, every new
            # record joins the queue behind it and the hold limit overflows.
            self.flush_some(None)
        self.send(topic, body, fields)

    def send(self, topic: bytes, body: bytes, fields: dict[str, Any] | None) -> None:
        """Send one record now (its extension built from *fields*, if any); a full queue counts a drop."""
        self.send_built(topic, body, None if fields is None else self.encoder.extension(fields, self.dropped))

    def send_built(self, topic: bytes, body: bytes, extension: bytes | None) -> None:
        """Send one record's frames now (*extension* carrying this delivery's ``dropped``); a full queue counts a drop."""
        send = self.send_frame
        sock = self.socket
        try:
            # With XPUB_NODROP, a full queue refuses the first frame; the later frames
            # of a message that started always go in (libzmq counts whole messages).
            send(sock, topic, _MORE)
            if extension is None:
                send(sock, body, _NOBLOCK)
            else:
                send(sock, body, _MORE)
                send(sock, extension, _NOBLOCK)
        except zmq.Again:
            self.count_drops(1)
            return
        if extension is not None:
            self.dropped = 0  # the count just travelled with this record
            if self.window is not None:
                self.window.add(topic, body, extension)

    def _hold(self, topic: bytes, body: bytes, fields: dict[str, Any] | None) -> None:
        self.count_drops(self.held.add((topic, body, fields), len(topic) + len(body)))
        if self.flusher is None and self.held:
            flusher = threading.Thread(
                target=_flush_held, args=(weakref.ref(self),), name="zlogcollect-hold", daemon=True
            )
            try:
                flusher.start()
            except RuntimeError:  # interpreter shutting down: close() flushes instead
                return
            self.flusher = flusher

    def flush_some(self, limit: int | None) -> None:
        """Send held records in order, at most *limit* of them; the caller holds the lock."""
        records, expired = self.held.take(limit)
        self.count_drops(expired)
        sent = 0
        try:
            for topic, body, fields in records:
                self.send(topic, body, fields)
                sent += 1
        finally:
            self.count_drops(len(records) - sent)  # an error midway: the rest is dropped, counted
            self.sync()

    def flush(self) -> None:
        """Send held records if a collector is subscribed; never waits for one."""
        if self.state in LIVE and self.held:
            self.poll()
            if self.state is State.FLUSHING:
                self.flush_some(None)

    def send_held(self, deadline: float) -> None:
        """Wait until the monotonic *deadline* for a collector if records are held, then send them."""
        if self.held and self.publisher.wait(deadline):
            self.sync()  # a collector that came back gets the window before the held records
            self.flush_some(None)

    def drain(self, deadline: float, floor: float | None) -> bool:
        """Send what is held by *deadline*, drop the rest, close the socket with what time is left.

        *floor* is a least linger for the socket (at exit, for records logged after
        the joint wait). Returns True when ZeroMQ may have discarded queued records.
        """
        self.poll()  # a collector heard coming back gets the window before the socket closes
        self.send_held(deadline)
        self.count_drops(self.held.clear())
        remaining = deadline - time.monotonic()
        if floor is not None:
            remaining = max(remaining, floor)
        return self.publisher.close(max(remaining, 0.0))


def _flush_held(ref: weakref.ref[Delivery]) -> None:
    """Thread body: wait for the collector's subscription, then send held records.

    Runs only while records are held; polls under the handler's lock because zmq
    sockets must not be used from two threads at once.
    """
    backoff = Backoff(0.001, 0.05)
    while True:
        delivery = ref()
        if delivery is None:
            return
        with delivery.lock:
            if delivery.state is State.CLOSED or delivery.flusher is not threading.current_thread():
                return
            if not delivery.held:
                delivery.flusher = None
                return
            delivery.poll()
            if delivery.state is State.FLUSHING:
                delivery.flush_some(_CHUNK)
                backoff.reset()
                delay = 0.0
            else:
                delivery.count_drops(delivery.held.expire())
                delay = backoff.next()
        del delivery
        time.sleep(delay)
