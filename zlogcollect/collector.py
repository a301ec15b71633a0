"""The SUB side: bind, receive frames, turn them into records and hand them to the sinks."""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

import gevent
import zmq
import zmq.green
from zmq.utils.monitor import parse_monitor_message

from zlogcollect.access import BAD_HANDSHAKE, NO_CURVE, PUBLISH_DOMAIN, RECEIVE_DOMAIN, Policy
from zlogcollect.endpoints import BindError, bind_all
from zlogcollect.helpers import Throttle
from zlogcollect.ledger import LossLedger, StateFile, Untracked
from zlogcollect.sinks import Sink
from zlogcollect.stats import Stats
from zlogcollect.wire import (
    DEFAULT_LEVELS,
    MAX_RECORD_BYTES,
    Levels,
    MalformedRecord,
    Parser,
    Record,
    UnknownLevel,
    escape_controls,
    escape_text,
    with_peer_source,
)
from zlogcollect.zap import ZapServer, guard

__all__ = ["BATCH", "Collector", "Sink", "StartupError"]

log = logging.getLogger(__name__)

BATCH = 1000
"""Records received in one go before other greenlets (signals, timers) get a turn."""

MONITOR_PASS = 0.25
"""Seconds between reads of the socket monitor (failed accepts)."""
MAX_WARNED_LEVELS = 100
"""Unknown level names warned about by name; later ones are only counted (a peer can invent many)."""


class StartupError(Exception):
    """Something that stops the collector from starting; the message is one line for stderr."""


class Collector:
    """One SUB socket bound to every endpoint, feeding records to the sinks.

    The socket is a plain pyzmq socket drained with ``NOBLOCK``; only the wait
    for new data goes through the gevent poller. A ``zmq.green`` receive costs
    about 4x a plain one, and polling keeps the handshakes of newly connecting
    publishers moving while the sinks work.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        stats: Stats,
        levels: Levels = DEFAULT_LEVELS,
        max_bytes: int = MAX_RECORD_BYTES,
        rcvhwm: int = 20_000,
        clock: Callable[[], float] = time.time,
        state_path: str | None = None,
        access: Policy | None = None,
        source_from_peer: bool = False,
    ) -> None:
        """*state_path*: where per-publisher sequence numbers are kept between runs (collect mode: in --dir).

        *access*: CURVE and/or ``--allow-ip`` on the receive socket (a ZAP handler on its context);
        with CURVE every record's ``peer`` is its certificate's name, and with
        *source_from_peer* that name is its source too.
        """
        self.sinks = list(sinks)
        self.stats = stats
        self._parse = Parser(levels, max_bytes).parse
        self._max_bytes = max_bytes
        self._rcvhwm = rcvhwm
        self._clock = clock
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._poller = zmq.green.Poller()
        self._registered = False
        self._complaints = Throttle(1, 10.0)
        self._unknown_levels = FirstSightings(MAX_WARNED_LEVELS)
        self._accept_watch: AcceptWatch | None = None
        self.access = access
        self._peers = access is not None and access.curve
        self._source_from_peer = source_from_peer
        self._zap: ZapServer | None = None
        self.ledger = LossLedger(stats)
        self._observe_meta = self.ledger.observe_meta
        self.state = StateFile(state_path, self.ledger, self._lines_pending) if state_path else None
        if self.state is None:
            self.ledger.touched = Untracked()  # no journal to write: remember nothing for it
        self._after_record = self.state.after_record if self.state is not None else _nothing
        self.endpoints: list[str] = []
        self.republish: Callable[[Sequence[bytes], Record], None] | None = None
        """Called with the frames and the record of every accepted record, after the sinks
        (``--publish``); the daemon sets it only while someone subscribes. It must not raise."""
        self.accepted: Callable[[Record], None] | None = None
        """Called with every accepted record, after the sinks (``--http``'s live window: one
        ``list.append``); None when ``--http`` is off. It must not raise."""
        self.after_drain: Callable[[], None] | None = None
        """Called at the end of every drain that received something, before the batch is written
        (``--publish`` sends what the batch queued). It must not raise."""

    def bind(self, endpoints: Sequence[str], subscriptions: Sequence[str] = ("",)) -> None:
        """Create the SUB socket, subscribe and bind; :class:`StartupError` if any bind fails."""
        self._context = zmq.Context()
        access = self.access
        if access is not None:
            # Before the socket binds: with no handler on its context libzmq admits every key.
            self._zap = ZapServer(self._context, {RECEIVE_DOMAIN: access.gate}, self._refused)
            self._zap.start()
        sock = self._socket = self._context.socket(zmq.SUB)
        if access is not None:
            guard(sock, RECEIVE_DOMAIN, access.secret)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        # A frame bigger than the whole record limit can never be a valid record:
        # libzmq refuses it (and disconnects the peer) before it is ever buffered.
        # The limit is per frame; libzmq has no cap on the frames of one message.
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_bytes)
        sock.setsockopt(zmq.LINGER, 0)
        for prefix in subscriptions or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        try:
            self.endpoints += bind_all(sock, endpoints)
        except BindError as exc:
            self.close_socket()
            raise StartupError(str(exc)) from None
        self._poller.register(sock, zmq.POLLIN)
        self._registered = True
        self._accept_watch = AcceptWatch(
            sock, self.stats.errors, self._handshake_failed if access is not None else None
        )

    @property
    def context(self) -> zmq.Context[zmq.Socket[bytes]] | None:
        """The receive socket's context (``--publish`` shares it, and so its ZAP handler)."""
        return self._context

    def guard_publish(self, sock: zmq.Socket[bytes], access: Policy) -> None:
        """Make *sock* (``--publish``'s XPUB, on :attr:`context`) ask this ZAP handler with *access*'s gate."""
        if self._zap is None:
            assert self._context is not None
            self._zap = ZapServer(self._context, {}, self._refused)
            self._zap.start()
        self._zap.gates[PUBLISH_DOMAIN] = access.gate
        guard(sock, PUBLISH_DOMAIN, access.secret)

    def _refused(self, domain: str, reason: str, address: str) -> None:
        counts = self.stats.publish_refused if domain == PUBLISH_DOMAIN else self.stats.refused
        counts[reason] += 1
        if self._complaints.allow(f"refused {domain} {reason}"):
            log.warning(
                "refused a connection%s from %s: %s (more within 10 s are only counted)",
                " to --publish" if domain == PUBLISH_DOMAIN else "",
                address or "a local peer",
                _REFUSALS.get(reason, reason),
            )

    def _handshake_failed(self, no_curve: bool) -> None:
        """A handshake that failed before the ZAP handler was asked (the monitor saw it)."""
        reason = NO_CURVE if no_curve else BAD_HANDSHAKE
        self.stats.refused[reason] += 1
        if self._complaints.allow(f"refused {reason}"):
            log.warning(
                "refused a connection: %s (more within 10 s are only counted)", _REFUSALS.get(reason, reason)
            )

    def dispatch(  # noqa: C901 - the per-record hot path, kept in one frame on purpose
        self, frames: Sequence[bytes], peer: str | None = None
    ) -> None:
        """Parse one frame set and give the record to every sink; never raises.

        *peer*: the CURVE certificate name the frames came from (None without CURVE).
        """
        stats = self.stats
        stats.received += 1
        try:
            record = self._parse(frames, self._clock())
        except MalformedRecord as bad:
            if bad.mark is not None and not self.ledger.observe(bad.mark, self._clock()):
                # Quarantined is not lost: its number must not show up as a gap. A replay of
                # one already quarantined is counted as a duplicate and not kept twice.
                return
            if isinstance(bad, UnknownLevel):
                self._warn_unknown_level(bad)
            detail = bad.detail if peer is None else f"{bad.detail} (peer {escape_text(peer, 100)})"
            self._quarantine(bad.reason, detail, frames)
            self._after_record()
            return
        except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the receive loop
            self._quarantine("parse_error", escape_text(f"{type(exc).__name__}: {exc}", 200), frames)
            self._complain("parse_error", "a record could not be parsed")
            return
        if peer is not None:
            if self._source_from_peer:
                with_peer_source(record, peer)
            else:
                record.peer = escape_controls(peer)
        meta = record.meta
        if meta:
            # The parser checked pub, seq, dropped, host and pid already (check_extension).
            publisher, seq = meta.get("pub"), meta.get("seq")
            # A seq already written for its publisher (a handler's replay after a restart of
            # this collector) is dropped before every sink, --publish and the live window.
            if (
                publisher is not None
                and seq is not None
                and not self._observe_meta(publisher, seq, meta, record.received)
            ):
                return
        for sink in self.sinks:
            try:
                sink.write(record)
            except Exception:  # noqa: BLE001 - a sink bug must not stop the receive loop
                stats.dropped["sink_error"] += 1
                self._complain(
                    "sink_error", f"a sink failed on a record from {escape_text(record.source or '-', 100)}"
                )
        accepted = self.accepted
        if accepted is not None:
            accepted(record)
        republish = self.republish
        if republish is not None:
            republish(frames, record)
        self._after_record()

    def _warn_unknown_level(self, bad: UnknownLevel) -> None:
        """Say once per level name, when it first happens, that a record was quarantined for it."""
        first = self._unknown_levels.first(bad.level)
        if first is None:
            self.stats.errors["unknown_levels_not_named"] += 1
        elif first:
            log.warning("quarantined a record in _malformed.log: %s", escape_text(bad.detail))

    def _quarantine(self, reason: str, detail: str, frames: Sequence[bytes]) -> None:
        self.stats.malformed[reason] += 1
        for sink in self.sinks:
            try:
                sink.quarantine(reason, detail, frames)
            except Exception:  # noqa: BLE001 - counted as malformed already; keep receiving
                self._complain("quarantine", "a sink failed to quarantine a record")

    def _complain(self, kind: str, message: str) -> None:
        """Log with the traceback at most once every 10 s per kind: a peer must not flood stderr.

        The traceback is escaped onto the one line: its last line may quote text from the wire.
        """
        if self._complaints.allow(kind):
            log.error(
                "%s (more within 10 s are only counted): %s",
                message,
                escape_text(traceback.format_exc(), 4000),
            )

    def drain(self, budget: int = BATCH) -> int:
        """Receive and dispatch up to *budget* frame sets already waiting; return how many."""
        sock = self._socket
        assert sock is not None
        received = 0
        dispatch = self.dispatch
        if self._peers:
            # CURVE: frames as zmq.Frame, to read each message's ZAP User-Id (the peer's name).
            recv_frames = sock.recv_multipart
            while received < budget:
                try:
                    parts = recv_frames(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                received += 1
                peer = parts[0].get("User-Id")  # the ZAP handler's answer: the certificate's name
                dispatch([part.bytes for part in parts], peer if peer.__class__ is str and peer else None)
        else:
            recv = sock.recv_multipart
            while received < budget:
                try:
                    frames = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received += 1
                dispatch(frames)
        if received and self.after_drain is not None:
            self.after_drain()
        return received

    def wait(self, timeout: float) -> None:
        """Wait (cooperatively) up to *timeout* seconds for something to receive."""
        self._poller.poll(max(math.ceil(timeout * 1000), 0))  # never wake early: no spin

    def serve(
        self,
        stop: Callable[[], bool],
        flush_interval: float = 1.0,
        between_batches: Callable[[], None] | None = None,
        flush_delay: float = 0.005,
    ) -> None:
        """Receive until *stop()* is true, writing what arrived whenever the socket runs dry.

        Group commit: records are batched while they keep coming; a drain that
        empties the socket hands the batch to the sinks, no sooner than
        *flush_delay* after the previous write: a trickle shares writes (at 5 ms,
        at most 200 a second per file) and a line waits about that long at most.
        *flush_interval* is the upper bound under continuous load. The file
        sink also writes early by itself once a batch passes its size limit.
        *between_batches* runs after every batch and wait (signal flags are acted on there).
        """
        now = time.monotonic()
        next_flush = now + flush_interval
        written_at = now - flush_delay
        unwritten = False
        state = self.state
        while not stop():
            got = self.drain()
            now = time.monotonic()
            unwritten = unwritten or got > 0
            if now >= next_flush or (unwritten and got < BATCH and now - written_at >= flush_delay):
                self.flush()
                written_at, next_flush, unwritten = now, now + flush_interval, False
            elif state is not None and state.owed and now >= state.next_save:
                # A batch was written while saving was paused: write the rest too, so the
                # state saved now covers exactly what is on disk.
                self.flush()
            if between_batches is not None:
                between_batches()
            if got == BATCH:
                # A backlog never yields by itself; idle() lets the signal and timer
                # greenlets run (sleep(0) left 0.7 s gaps here, idle() 28 ms).
                gevent.idle()
            else:
                due = min(written_at + flush_delay, next_flush) if unwritten else next_flush
                self.wait(min(due - now, 0.1))

    def drain_until_quiet(self, deadline: float, quiet: float = 0.2) -> None:
        """After a stop: take what is queued or still arriving, until *quiet* s pass or *deadline*."""
        while time.monotonic() < deadline:
            if self.drain() == BATCH:
                continue
            self.wait(min(quiet, max(deadline - time.monotonic(), 0.0)))
            if self.drain() == 0:
                return

    def flush(self) -> None:
        """Flush every sink, save (journal) the state, report publisher loss seen since the last flush."""
        self._each_sink("flush", "sink_error")
        self.save_state()  # first: the journal line right after the write, the window for a kill kept short
        self.ledger.report()

    def load_state(self) -> None:
        """Resume per-publisher sequence numbers saved by a previous run (see :meth:`StateFile.load`)."""
        if self.state is not None:
            self.state.load()

    def save_state(self) -> None:
        """Save per-publisher sequence numbers, never past a line not on disk (:meth:`StateFile.save`)."""
        if self.state is not None:
            self.state.save()

    def _lines_pending(self) -> bool:
        """True while a sink holds lines not yet on disk (a file being rotated or retried)."""
        return any(getattr(sink, "pending_lines", 0) for sink in self.sinks)

    def reopen(self) -> None:
        """Reopen every sink's files (SIGHUP, after logrotate moved them)."""
        self._each_sink("reopen", "reopen")

    def _each_sink(self, method: str, error: str) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)()
            except Exception:
                self.stats.errors[error] += 1
                log.exception("a sink failed to %s", method)

    def close_socket(self) -> None:
        """Stop receiving: close the socket and its context."""
        if self._accept_watch is not None:
            self._accept_watch.close()
            self._accept_watch = None
        if self._socket is not None:
            if self._registered:
                self._poller.unregister(self._socket)
                self._registered = False
            self._socket.close(linger=0)
            self._socket = None
        if self._zap is not None:
            self._zap.stop()
            self._zap = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def close(self) -> None:
        """Close the socket, then every sink (which flushes)."""
        self.close_socket()
        self._each_sink("close", "sink_error")
        self.ledger.report(final=True)
        if self.state is not None:
            self.state.save(force=True)
            self.state.close()


_HANDSHAKE_FAILED: Final = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL

_REFUSALS: Final = {
    "unknown_key": "its CURVE key is in no *.key file of --allow-keys",
    "no_curve": "it does not speak CURVE (a plain PUBHandler, or a handler without curve_server_key)",
    "ip_not_allowed": "its address is in no --allow-ip network",
    "bad_handshake": "the handshake failed or was cut short (a client with the wrong server key, a client"
    " without CURVE that hung up first, or not ZeroMQ)",
    "bad_mechanism": "it asked for a security mechanism this socket does not offer",
}


class FirstSightings:
    """Names seen so far, up to *limit*: says which sighting is the first, so each is named once."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def first(self, name: str) -> bool | None:
        """True the first time *name* is seen, False after; None once *limit* names are known."""
        if name in self._seen:
            return False
        if len(self._seen) >= self._limit:
            return None
        self._seen.add(name)
        return True


class AcceptWatch:
    """Counts failed accepts (EMFILE: out of descriptors) from a socket monitor, off the hot loop.

    With *handshake_failed* (CURVE or ``--allow-ip``) it also reports handshakes
    that failed before the ZAP handler was asked: a client without CURVE (the
    mechanism mismatch, ``True``) or with the wrong server key (``False``).
    The monitor only reports the events asked for, so it costs nothing per
    message; its greenlet runs while the receive loop waits or idles.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        errors: Counter[str],
        handshake_failed: Callable[[bool], None] | None = None,
    ) -> None:
        self._socket = sock
        self._errors = errors
        self._handshake_failed = handshake_failed
        self._throttle = Throttle(1, 10.0)  # one line per 10 s is enough for the same cause
        events = zmq.EVENT_ACCEPT_FAILED
        if handshake_failed is not None:
            events |= zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        self._monitor = sock.get_monitor_socket(events)
        self._greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        # Out of descriptors, libzmq retries accept() in a tight loop and the
        # monitor gets thousands of events a second: read them in passes with a
        # sleep between, so this greenlet never starves the receive loop (each
        # pass reads at most 100,000 events; the rest wait for the next one).
        monitor = self._monitor
        while True:
            gevent.sleep(MONITOR_PASS)
            failed = 0
            last: list[bytes] | None = None
            for _ in range(100_000):
                try:
                    message = monitor.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                # The first frame: the event (16 bits) and its value (32 bits), little-endian.
                event = int.from_bytes(message[0][:2], "little")
                if event & _HANDSHAKE_FAILED:
                    # PROTOCOL: the value says why (a mechanism mismatch is a client without CURVE);
                    # NO_DETAIL: the connection dropped mid-handshake (a client without CURVE that
                    # saw the mismatch first, a wrong server key, a scanner).
                    if self._handshake_failed is not None:
                        value = int.from_bytes(message[0][2:6], "little")
                        self._handshake_failed(
                            event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                            and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                        )
                    continue
                failed += 1
                last = message
            if not failed or last is None:
                continue
            self._errors["accept_failed"] += failed
            if self._throttle.allow("accept_failed"):
                error = int(parse_monitor_message(last)["value"])
                log.warning(
                    "cannot accept connections: %s (%d failed accepts so far; raise the limit on open "
                    "files, LimitNOFILE under systemd)",
                    os.strerror(error) if error else "unknown error",
                    self._errors["accept_failed"],
                )

    def close(self) -> None:
        """Stop reading and close the monitor (before its socket is closed)."""
        self._greenlet.kill()
        self._socket.disable_monitor()
        self._monitor.close(linger=0)


def _nothing() -> None:
    pass
