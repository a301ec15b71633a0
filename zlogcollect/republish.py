"""``--publish``: every accepted record re-sent on an XPUB socket, for `zlogcollect tail` and other readers.

The frames are the project's own wire format (docs/WIRE.md), so anything that
reads a ``ZLogHandler`` reads this stream too. A record that arrived with the
structured extension goes out exactly as it came in (no encoding at all); a
stock two-frame record goes out as its canonical topic, its cleaned text and a
minimal extension carrying the collector's receive time, so a reader shows the
same time and text as the files.

It never waits and never raises into the receive loop: the socket has
``XPUB_NODROP`` and a bounded send queue per subscriber, and every send is
``NOBLOCK``; a record that does not fit is dropped and counted
(``published["dropped"]``; the files have it all the same). With NODROP,
libzmq refuses a record while *any* subscriber's queue is full, so while one
subscriber stalls, every subscriber misses those records; that is the price of
counting drops (a plain PUB drops for the slow one alone, and silently).

The receive loop's dispatch queues each accepted record (:meth:`Republisher.send`);
the collector sends the queue at the end of every drain (:meth:`Republisher.flush`:
at most 1,000 records, received without a wait, and before they are written to
the files), and the daemon reads the subscriptions between batches
(:meth:`Republisher.poll`), never per record. Sending a
batch in one tight loop keeps libzmq's I/O thread awake for all of it; sending
each record from inside dispatch woke it once per record and cost the
collector twice as much. The daemon hands the collector :meth:`Republisher.send`
only while someone is subscribed, so with nobody listening the receive loop pays
one ``is None`` check per record. Plain zmq: only ``NOBLOCK`` calls, never a wait.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

import zmq

from zlogcollect.endpoints import BindError, bind_all
from zlogcollect.wire import STANDARD_LEVELS, Record, encode_extension

__all__ = ["Reframer", "RepublishBindError", "Republisher"]

_MORE: Final = zmq.SNDMORE | zmq.NOBLOCK
_NOBLOCK: Final = zmq.NOBLOCK
_send: Final = zmq.backend.Socket.send  # the socket is a plain zmq.Socket (never zmq.green)


FLUSH_AT: Final = 1000
"""Records queued before they are sent even in the middle of a batch (the collector's batch is 1,000)."""


class RepublishBindError(Exception):
    """A ``--publish`` endpoint that cannot be bound; the message is one line for stderr."""


class Reframer:
    """The frames to republish for an accepted record, given the frames it arrived as.

    Three frames (the extension) go out as received. Two frames (a stock
    ``PUBHandler``) become the topic as received (a reader's parser reads it as
    the collector's did: ``WARN`` is ``WARNING`` there too), the text as the
    collector cleaned it (a reader's parser keeps text that has an extension
    as it is) and ``{"v":1,"created":RECEIVED}``; a custom level also names
    itself (``levelname``, ``levelno``), so a reader needs no ``--level`` for it.

    ``created`` is the receive time to the millisecond (the middle of it, so
    it shows as the same millisecond as in the files): the extension is built
    once per millisecond, not once per record.
    """

    __slots__ = ("_extension", "_millisecond")

    def __init__(self) -> None:
        self._millisecond = -1
        self._extension = b""

    def __call__(self, frames: Sequence[bytes], record: Record) -> Sequence[bytes]:
        if len(frames) == 3:
            return frames
        text = record.message
        if text.endswith("\n"):
            text += "\n"  # the reader's parser removes one trailing newline again
        received = record.received
        seconds = int(received)
        millis = int((received - seconds) * 1000)  # as formatting.format_time rounds it
        millisecond = seconds * 1000 + millis
        if record.levelname not in STANDARD_LEVELS:
            extension = encode_extension(
                {
                    "created": float(b"%d.%03d5" % (seconds, millis)),
                    "levelname": record.levelname,
                    "levelno": record.levelno,
                }
            )
        elif millisecond == self._millisecond:
            extension = self._extension
        else:
            extension = self._extension = b'{"v":1,"created":%d.%03d5}' % (seconds, millis)
            self._millisecond = millisecond
        return (frames[0], text.encode(), extension)


class Republisher:
    """One XPUB socket bound to every ``--publish`` endpoint, counting into *published*.

    *published* is ``Stats.published``: ``sent`` and ``dropped`` records.
    """

    def __init__(self, published: Counter[str], hwm: int = 10_000) -> None:
        self.published = published
        self._hwm = hwm
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self.subscriptions: set[bytes] = set()
        self.endpoints: list[str] = []
        self._reframe = Reframer()
        self._queue: list[Sequence[bytes]] = []

    def bind(
        self,
        endpoints: Sequence[str],
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        guard: Callable[[zmq.Socket[bytes]], None] | None = None,
    ) -> None:
        """Create the XPUB socket and bind it; :class:`RepublishBindError` if any bind fails.

        *context*: the collector's (its ZAP handler then answers for this socket too; it is
        not terminated here); *guard*: called with the socket before it binds (CURVE).
        """
        if context is None:
            context = self._context = zmq.Context()
        sock = self._socket = context.socket(zmq.XPUB)
        if guard is not None:
            guard(sock)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        # Beyond the HWM a send fails with EAGAIN instead of dropping in silence: that is the count.
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.LINGER, 0)
        # Subscribers send only subscriptions: anything big is not one.
        sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
        try:
            self.endpoints += bind_all(sock, endpoints, "publish")
        except BindError as exc:
            self.close()
            raise RepublishBindError(str(exc)) from None

    def poll(self) -> bool:
        """Read the subscription messages waiting (between batches); return whether anyone subscribes."""
        sock = self._socket
        if sock is None:
            return False
        subscriptions = self.subscriptions
        for _ in range(10_000):  # a bound per call: a peer flooding subscriptions must not hold the loop
            try:
                event = sock.recv(_NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError:
                break
            # Without XPUB_VERBOSE libzmq reports the first subscription to a prefix and the
            # last unsubscription from it, so the set mirrors what is subscribed.
            if event[:1] == b"\x01":
                subscriptions.add(event[1:])
            elif event[:1] == b"\x00":
                subscriptions.discard(event[1:])
        return bool(subscriptions)

    def send(self, frames: Sequence[bytes], record: Record) -> None:
        """Queue one accepted record for :meth:`flush` at the end of this batch; never blocks, never raises."""
        queue = self._queue
        queue.append(frames if len(frames) == 3 else self._reframe(frames, record))
        if len(queue) >= FLUSH_AT:  # never more than one batch, whoever forgets to flush
            self.flush()

    def flush(self) -> None:
        """Send what this batch accepted, each record at once or counted dropped; never blocks, never raises."""
        queue = self._queue
        sock = self._socket
        if not queue or sock is None:
            queue.clear()
            return
        send = _send  # the backend's send: the pyzmq wrapper costs about 1 µs per frame
        sent = dropped = 0
        for frames in queue:
            try:
                # libzmq checks the high-water mark on a message's first frame only: once it
                # is taken, the rest of the message is too.
                send(sock, frames[0], _MORE)
            except zmq.ZMQError:  # zmq.Again: a subscriber's queue is full
                dropped += 1
                continue
            try:
                send(sock, frames[1], _MORE)
                send(sock, frames[2], _NOBLOCK)
            except zmq.ZMQError:  # pragma: no cover - libzmq takes the rest of a started message
                dropped += 1
                continue
            sent += 1
        queue.clear()
        published = self.published
        if sent:
            published["sent"] += sent
        if dropped:
            published["dropped"] += dropped

    def close(self) -> None:
        """Close the socket (queued records are discarded: readers are live views) and its own context."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None
