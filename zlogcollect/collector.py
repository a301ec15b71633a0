"""The SUB side: bind, receive frames, turn them into records and hand them to the sinks."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import gevent
import zmq
import zmq.green

from zlogcollect.stats import Stats
from zlogcollect.wire import DEFAULT_LEVELS, MAX_RECORD_BYTES, Levels, MalformedRecord, Parser, Record

log = logging.getLogger(__name__)

BATCH = 1000
"""Records received in one go before other greenlets (signals, timers) get a turn."""


class Sink(Protocol):
    """What the collector needs from a sink; the file sink is the first of them."""

    def write(self, record: Record) -> None: ...
    def quarantine(self, reason: str, detail: str, frames: Sequence[bytes]) -> None: ...
    def flush(self) -> None: ...
    def reopen(self) -> None: ...
    def close(self) -> None: ...


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
    ) -> None:
        self.sinks = list(sinks)
        self.stats = stats
        self._parse = Parser(levels, max_bytes).parse
        self._max_bytes = max_bytes
        self._rcvhwm = rcvhwm
        self._clock = clock
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._poller = zmq.green.Poller()
        self._unreported_loss: dict[str, int] = {}
        self._registered = False
        self._complaints: dict[str, float] = {}
        self._state_dirty = False
        self.state_path: str | None = None
        """Where per-publisher sequence numbers are kept between runs (collect mode: in --dir)."""
        self.endpoints: list[str] = []

    def bind(self, endpoints: Sequence[str], subscriptions: Sequence[str] = ("",)) -> None:
        """Create the SUB socket, subscribe and bind; :class:`StartupError` if any bind fails."""
        self._context = zmq.Context()
        sock = self._socket = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        # A hard cap well above --max-record-bytes: records between the two are
        # received and quarantined (counted); only absurd frames are refused by
        # libzmq itself (it disconnects the peer), so memory stays bounded.
        sock.setsockopt(zmq.MAXMSGSIZE, max(16 * 1024 * 1024, 4 * self._max_bytes))
        sock.setsockopt(zmq.LINGER, 0)
        for prefix in subscriptions or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        for endpoint in endpoints:
            if endpoint.startswith("ipc://") and _ipc_in_use(endpoint[len("ipc://") :]):
                self.close_socket()
                raise StartupError(
                    f"cannot bind {endpoint}: Address already in use (another process listens there)"
                )
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                self.close_socket()
                raise StartupError(f"cannot bind {endpoint}: {exc.strerror}") from None
            self.endpoints.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        self._poller.register(sock, zmq.POLLIN)
        self._registered = True

    def dispatch(self, frames: Sequence[bytes]) -> None:
        """Parse one frame set and give the record to every sink; never raises."""
        stats = self.stats
        stats.received += 1
        try:
            record = self._parse(frames, self._clock())
        except MalformedRecord as bad:
            self._quarantine(bad.reason, bad.detail, frames)
            return
        except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the receive loop
            self._quarantine("parse_error", f"{type(exc).__name__}: {exc}"[:200], frames)
            self._complain("parse_error", "a record could not be parsed")
            return
        stats.accepted += 1
        if record.meta:
            self._observe(record)
        for sink in self.sinks:
            try:
                sink.write(record)
            except Exception:  # noqa: BLE001 - a sink bug must not stop the receive loop
                stats.dropped["sink_error"] += 1
                self._complain("sink_error", f"a sink failed on a record from {record.source or '-'}")

    def _quarantine(self, reason: str, detail: str, frames: Sequence[bytes]) -> None:
        self.stats.malformed[reason] += 1
        for sink in self.sinks:
            try:
                sink.quarantine(reason, detail, frames)
            except Exception:  # noqa: BLE001 - counted as malformed already; keep receiving
                self._complain("quarantine", "a sink failed to quarantine a record")

    def _complain(self, kind: str, message: str) -> None:
        """Log with the traceback at most once every 10 s per kind: a peer must not flood stderr."""
        now = time.monotonic()
        if now - self._complaints.get(kind, -1e9) >= 10.0:
            self._complaints[kind] = now
            log.exception("%s (more within 10 s are only counted)", message)

    def _observe(self, record: Record) -> None:
        meta = record.meta
        publisher, seq = meta.get("pub"), meta.get("seq")
        if not isinstance(publisher, str) or not isinstance(seq, int):
            return
        dropped = meta.get("dropped", 0)
        missing = self.stats.observe_sequence(
            publisher,
            str(meta.get("host", "?")),
            meta.get("pid", "?"),
            seq,
            dropped if isinstance(dropped, int) and dropped > 0 else 0,
            record.received,
        )
        self._state_dirty = True
        if missing:
            self._unreported_loss[publisher] = self._unreported_loss.get(publisher, 0) + missing

    def report_loss(self) -> None:
        """One warning per publisher that lost records since the last report."""
        for publisher, count in self._unreported_loss.items():
            loss = self.stats.publishers[publisher]
            log.warning(
                "lost %d records from host %s pid %s (publisher %s), %d in all, %d of them dropped by the sender",
                count,
                loss.host,
                loss.pid,
                publisher,
                loss.gaps,
                loss.announced,
            )
        self._unreported_loss.clear()

    def drain(self, budget: int = BATCH) -> int:
        """Receive and dispatch up to *budget* frame sets already waiting; return how many."""
        sock = self._socket
        assert sock is not None
        received = 0
        recv = sock.recv_multipart
        dispatch = self.dispatch
        while received < budget:
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            received += 1
            dispatch(frames)
        return received

    def wait(self, timeout: float) -> None:
        """Wait (cooperatively) up to *timeout* seconds for something to receive."""
        self._poller.poll(max(int(timeout * 1000), 0))

    def serve(
        self,
        stop: Callable[[], bool],
        flush_interval: float = 1.0,
        between_batches: Callable[[], None] | None = None,
    ) -> None:
        """Receive until *stop()* is true, flushing sinks at least every *flush_interval*.

        *between_batches* runs after every batch and wait (signal flags are acted on there).
        """
        next_flush = time.monotonic() + flush_interval
        while not stop():
            got = self.drain()
            now = time.monotonic()
            if now >= next_flush:
                self.flush()
                next_flush = now + flush_interval
            if between_batches is not None:
                between_batches()
            if got == BATCH:
                # A backlog never yields by itself; idle() lets the signal and timer
                # greenlets run (sleep(0) left 0.7 s gaps here, idle() 28 ms).
                gevent.idle()
            else:
                self.wait(min(next_flush - now, 0.1))

    def drain_until_quiet(self, deadline: float, quiet: float = 0.2) -> None:
        """After a stop: take what is queued or still arriving, until *quiet* s pass or *deadline*."""
        while time.monotonic() < deadline:
            if self.drain() == BATCH:
                continue
            self.wait(min(quiet, max(deadline - time.monotonic(), 0.0)))
            if self.drain() == 0:
                return

    def flush(self) -> None:
        """Flush every sink and report publisher loss seen since the last flush."""
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception:
                self.stats.errors["sink_error"] += 1
                log.exception("a sink failed to flush")
        if self._unreported_loss:
            self.report_loss()
        self.save_state()

    def load_state(self) -> None:
        """Resume per-publisher sequence numbers saved by a previous run in the same directory.

        Without them a restarted collector could not tell records a previous run
        wrote from records nobody received; with them, the gap it sees is exactly
        what was in flight or not yet written when the previous run died.
        """
        if self.state_path is None:
            return
        try:
            with open(self.state_path, encoding="utf-8") as handle:
                state = json.load(handle)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.state_path, exc)
            return
        if isinstance(state, dict):
            count = self.stats.restore_publishers(state.get("publishers", {}), time.time())
            log.info("resumed the sequence numbers of %d publishers from %s", count, self.state_path)

    def save_state(self) -> None:
        """Write the publishers' last sequence numbers (after the lines they cover were flushed)."""
        if self.state_path is None or not self._state_dirty:
            return
        tmp = self.state_path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump({"version": 1, "publishers": self.stats.publisher_state()}, handle, default=str)
            os.replace(tmp, self.state_path)
        except OSError as exc:
            self.stats.errors["state_file"] += 1
            self._complain("state_file", f"cannot save {self.state_path}: {exc}")
            return
        self._state_dirty = False

    def reopen(self) -> None:
        """Reopen every sink's files (SIGHUP, after logrotate moved them)."""
        for sink in self.sinks:
            try:
                sink.reopen()
            except Exception:
                self.stats.errors["reopen"] += 1
                log.exception("a sink failed to reopen")

    def close_socket(self) -> None:
        """Stop receiving: close the socket and its context."""
        if self._socket is not None:
            if self._registered:
                self._poller.unregister(self._socket)
                self._registered = False
            self._socket.close(linger=0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def close(self) -> None:
        """Close the socket, then every sink (which flushes)."""
        self.close_socket()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                self.stats.errors["sink_error"] += 1
                log.exception("a sink failed to close")
        if self._unreported_loss:
            self.report_loss()
        self.save_state()


def _ipc_in_use(path: str) -> bool:
    """True if something accepts connections on a Unix socket path.

    libzmq unlinks an existing ipc socket file when it binds, which would
    silently steal the endpoint from a running collector.
    """
    if not path or path.startswith("@") or not os.path.exists(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        return False  # a stale file from a collector that died: safe to bind over
    finally:
        probe.close()
    return True
