"""The SUB side: bind, receive frames, turn them into records and hand them to the sinks."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Protocol

import gevent
import zmq
import zmq.green
from zmq.utils.monitor import parse_monitor_message

from zlogcollect.stats import MAX_PUBLISHERS, Stats
from zlogcollect.wire import (
    DEFAULT_LEVELS,
    MAX_RECORD_BYTES,
    Levels,
    MalformedRecord,
    Parser,
    Record,
    SequenceMark,
    UnknownLevel,
    escape_text,
    sequence_mark,
)

log = logging.getLogger(__name__)

BATCH = 1000
"""Records received in one go before other greenlets (signals, timers) get a turn."""

WARN_BURST = 10
"""Warnings of one kind printed per WARN_PERIOD; the rest are counted and summarised."""
WARN_PERIOD = 10.0
MONITOR_PASS = 0.25
"""Seconds between reads of the socket monitor (failed accepts)."""
MAX_WARNED_LEVELS = 100
"""Unknown level names warned about by name; later ones are only counted (a peer can invent many)."""


class Throttle:
    """At most *burst* lines per kind every *period* seconds, so a peer cannot flood stderr.

    What is held back is counted per kind; :meth:`held` hands the count over for
    a summary line when the next period opens (or at exit).
    """

    def __init__(
        self,
        burst: int = WARN_BURST,
        period: float = WARN_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._period = period
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self._held: dict[str, list[int]] = {}

    def allow(self, kind: str, amount: int = 0) -> bool:
        """True if a line of *kind* may be printed now; else count it (and *amount*) as held back."""
        now = self._clock()
        start, used = self._windows.get(kind, (-1e18, 0))
        if now - start >= self._period:
            start, used = now, 0
        if used < self._burst:
            self._windows[kind] = (start, used + 1)
            return True
        self._windows[kind] = (start, used)
        held = self._held.setdefault(kind, [0, 0])
        held[0] += 1
        held[1] += amount
        return False

    def hold(self, kind: str, amount: int = 0) -> None:
        """Count a line of *kind* as held back without asking (it is never to be printed alone)."""
        held = self._held.setdefault(kind, [0, 0])
        held[0] += 1
        held[1] += amount

    def held(self, kind: str, final: bool = False) -> tuple[int, int]:
        """``(lines, amount)`` held back, once the period that held them is over (or *final*)."""
        if kind not in self._held:
            return 0, 0
        start, _ = self._windows.get(kind, (-1e18, 0))
        if not final and self._clock() - start < self._period:
            return 0, 0
        lines, amount = self._held.pop(kind)
        self._windows[kind] = (self._clock(), 1)  # the summary line uses one of the next period's lines
        return lines, amount


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
        self._unreported_loss: dict[str, tuple[int, SequenceMark]] = {}
        self._registered = False
        self._complaints: dict[str, float] = {}
        self._throttle = Throttle()
        self._accept_throttle = Throttle(burst=1)  # one line per 10 s is enough for the same cause
        self._warned_levels: set[str] = set()
        self._monitor: zmq.Socket[bytes] | None = None
        self._monitor_greenlet: gevent.Greenlet[[], None] | None = None
        self._written_changes = 0
        self._next_save = 0.0
        self._save_owed = False
        self._state_dirty = False
        # What the state file says: every entry is a seq whose line (and all before
        # it) is on disk. Publishers first seen since are registered at their first
        # seq minus one, so a run killed before it wrote their lines is not mistaken
        # by the next one for a collector that never saw them (which would call
        # the missing records "unseen before start" instead of lost).
        self._saved: dict[str, dict[str, object]] = {}
        self._fresh: dict[str, dict[str, object]] = {}
        self.state_path: str | None = None
        """Where per-publisher sequence numbers are kept between runs (collect mode: in --dir)."""
        self.endpoints: list[str] = []

    def bind(self, endpoints: Sequence[str], subscriptions: Sequence[str] = ("",)) -> None:
        """Create the SUB socket, subscribe and bind; :class:`StartupError` if any bind fails."""
        self._context = zmq.Context()
        sock = self._socket = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        # A frame bigger than the whole record limit can never be a valid record:
        # libzmq refuses it (and disconnects the peer) before it is ever buffered.
        # The limit is per frame; libzmq has no cap on the frames of one message.
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_bytes)
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
        self._watch_accept_failures(sock)

    def _watch_accept_failures(self, sock: zmq.Socket[bytes]) -> None:
        """Count failed accepts (EMFILE: out of descriptors) from a socket monitor, off the hot loop.

        The monitor only reports the one event asked for, so it costs nothing per
        message; its greenlet runs while the receive loop waits or idles.
        """
        self._monitor = sock.get_monitor_socket(zmq.EVENT_ACCEPT_FAILED)
        self._monitor_greenlet = gevent.spawn(self._read_monitor, self._monitor)

    def _read_monitor(self, monitor: zmq.Socket[bytes]) -> None:
        # Out of descriptors, libzmq retries accept() in a tight loop and the
        # monitor gets thousands of events a second: read them in passes with a
        # sleep between, so this greenlet never starves the receive loop (each
        # pass reads at most 100,000 events; the rest wait for the next one).
        while True:
            gevent.sleep(MONITOR_PASS)
            failed = 0
            last: list[bytes] | None = None
            while failed < 100_000:
                try:
                    last = monitor.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                failed += 1
            if not failed or last is None:
                continue
            self.stats.errors["accept_failed"] += failed
            if self._accept_throttle.allow("accept_failed"):
                error = int(parse_monitor_message(last)["value"])
                log.warning(
                    "cannot accept connections: %s (%d failed accepts so far; raise the limit on open "
                    "files, LimitNOFILE under systemd)",
                    os.strerror(error) if error else "unknown error",
                    self.stats.errors["accept_failed"],
                )

    def dispatch(self, frames: Sequence[bytes]) -> None:
        """Parse one frame set and give the record to every sink; never raises."""
        stats = self.stats
        stats.received += 1
        try:
            record = self._parse(frames, self._clock())
        except MalformedRecord as bad:
            if bad.mark is not None:
                # Quarantined is not lost: its number must not show up as a gap.
                self._observe(bad.mark, self._clock())
            if isinstance(bad, UnknownLevel):
                self._warn_unknown_level(bad)
            self._quarantine(bad.reason, bad.detail, frames)
            self._saved_if_written()
            return
        except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the receive loop
            self._quarantine("parse_error", escape_text(f"{type(exc).__name__}: {exc}", 200), frames)
            self._complain("parse_error", "a record could not be parsed")
            return
        stats.accepted += 1
        meta = record.meta
        if meta:
            # The parser checked pub, seq, dropped, host and pid already (check_extension).
            publisher, seq = meta.get("pub"), meta.get("seq")
            if publisher is not None and seq is not None:
                self._observe_checked(publisher, seq, meta, record.received)
        for sink in self.sinks:
            try:
                sink.write(record)
            except Exception:  # noqa: BLE001 - a sink bug must not stop the receive loop
                stats.dropped["sink_error"] += 1
                self._complain(
                    "sink_error", f"a sink failed on a record from {escape_text(record.source or '-', 100)}"
                )
        self._saved_if_written()

    def _saved_if_written(self) -> None:
        """Save the sequence state right after a sink wrote a batch (the file sink flushes early
        from inside write()), so a collector killed now is not blamed for lines it did write,
        and as soon as a new publisher shows up (see ``_saved``).

        Saving costs time in proportion to the publishers; it is done again only
        after ten times what the last save took, so it stays under ~10 % of the loop.
        """
        if self._fresh and time.monotonic() >= self._next_save:
            self.save_state()
        changes = self.stats.written.changes
        if changes != self._written_changes:
            self._written_changes = changes
            if self._state_dirty:
                if time.monotonic() >= self._next_save:
                    self.save_state()
                else:
                    self._save_owed = True  # serve() flushes and saves once the pause is over

    def _warn_unknown_level(self, bad: UnknownLevel) -> None:
        """Say once per level name, when it first happens, that a record was quarantined for it."""
        if bad.level in self._warned_levels:
            return
        if len(self._warned_levels) >= MAX_WARNED_LEVELS:
            self.stats.errors["unknown_levels_not_named"] += 1
            return
        self._warned_levels.add(bad.level)
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
        now = time.monotonic()
        if now - self._complaints.get(kind, -1e9) >= 10.0:
            self._complaints[kind] = now
            log.error(
                "%s (more within 10 s are only counted): %s",
                message,
                escape_text(traceback.format_exc(), 4000),
            )

    def _observe_checked(self, publisher: str, seq: int, meta: dict[str, object], now: float) -> None:
        dropped = meta.get("dropped", 0)
        host = meta.get("host")
        pid = meta.get("pid")
        host_text = host if isinstance(host, str) else "?"
        pid_number = pid if isinstance(pid, int) else None
        if publisher not in self.stats.publishers:
            self._register(publisher, host_text, pid_number, seq, now)
        missing = self.stats.observe_sequence(
            publisher, host_text, pid_number, seq, dropped if isinstance(dropped, int) else 0, now
        )
        self._state_dirty = True
        if missing:
            mark = sequence_mark(meta)
            if mark is not None:  # always, for a checked extension
                self._note_loss(mark, missing)

    def _register(self, publisher: str, host: str, pid: int | None, seq: int, now: float) -> None:
        if len(self._fresh) < MAX_PUBLISHERS:
            self._fresh[publisher] = {"host": host, "pid": pid, "seq": seq - 1, "seen": now}

    def _observe(self, mark: SequenceMark, now: float) -> None:
        if mark.publisher not in self.stats.publishers:
            self._register(mark.publisher, mark.host, mark.pid, mark.seq, now)
        missing = self.stats.observe_sequence(
            mark.publisher, mark.host, mark.pid, mark.seq, mark.dropped, now
        )
        self._state_dirty = True
        if missing:
            self._note_loss(mark, missing)

    def _note_loss(self, mark: SequenceMark, missing: int) -> None:
        # The mark is kept too: the ledger may forget this publisher before the report.
        previous = self._unreported_loss.get(mark.publisher)
        if previous is None and len(self._unreported_loss) >= MAX_PUBLISHERS:
            self._throttle.hold("loss", missing)  # only in the summary line: memory stays bounded
            return
        self._unreported_loss[mark.publisher] = ((previous[0] if previous else 0) + missing, mark)

    def report_loss(self, final: bool = False) -> None:
        """A warning per publisher that lost records since the last report, at most
        WARN_BURST every WARN_PERIOD s; the rest are summed up in one line."""
        throttle = self._throttle
        for publisher, (count, mark) in self._unreported_loss.items():
            if not throttle.allow("loss", count):
                continue
            loss = self.stats.publishers.get(publisher)
            log.warning(
                "lost %d records from host %s pid %s (publisher %s), %s",
                count,
                escape_text(mark.host, 255),
                "?" if mark.pid is None else mark.pid,
                publisher,  # a checked token: [A-Za-z0-9_.:-]{1,64}
                f"{loss.gaps} in all, {loss.announced} of them dropped by the sender"
                if loss is not None
                else "no longer tracked",
            )
        self._unreported_loss.clear()
        publishers, records = throttle.held("loss", final)
        if publishers:
            log.warning(
                "... and %d more publishers lost records (%d records; the counters line has the total)",
                publishers,
                records,
            )

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
            elif self._save_owed and now >= self._next_save:
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
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("ignoring %s: %s", self.state_path, escape_text(exc))
            return
        try:
            if not isinstance(state, dict):
                raise ValueError(f"it holds {type(state).__name__}, not an object")
            count = self.stats.restore_publishers(state.get("publishers"), time.time())
            self._saved = self.stats.publisher_state()
        except ValueError as exc:
            log.warning("ignoring %s: %s", self.state_path, escape_text(exc))
            return
        log.info("resumed the sequence numbers of %d publishers from %s", count, self.state_path)
        if self.stats.errors["bad_state_entry"]:
            log.warning(
                "ignored %d entries of the wrong shape in %s",
                self.stats.errors["bad_state_entry"],
                self.state_path,
            )

    def _lines_pending(self) -> bool:
        """True while a sink holds lines not yet on disk (a file being rotated or retried)."""
        return any(getattr(sink, "pending_lines", 0) for sink in self.sinks)

    def save_state(self) -> None:
        """Write the publishers' last sequence numbers, never past a line that is not on disk.

        With every line written, that is each publisher's last seq. While lines
        are pending, only the publishers first seen since the last save are added
        (at their first seq minus one); the rest waits for a save with nothing pending.
        """
        if self.state_path is None or not (self._state_dirty or self._fresh):
            return
        complete = not self._lines_pending()
        if not complete and not self._fresh:
            self._save_owed = True
            self._next_save = max(self._next_save, time.monotonic() + 0.05)  # not every loop pass
            return
        tmp = self.state_path + ".tmp"
        # CPU time of this thread: what the save costs the loop, not how long the
        # machine was busy elsewhere (a loaded host must not pause saving for long).
        started = time.thread_time()
        try:
            entries = self.stats.publisher_state() if complete else {**self._saved, **self._fresh}
            text = json.dumps({"version": 1, "publishers": entries}, default=str)
            # A stale temp file (or a link planted in its place) is removed, not followed:
            # unlink acts on the link itself, and O_EXCL|O_NOFOLLOW refuse one made meanwhile.
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with open(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, self.state_path)
        except (OSError, ValueError, TypeError) as exc:
            self.stats.errors["state_file"] += 1
            self._complain("state_file", f"cannot save {self.state_path}: {escape_text(exc)}")
            return
        finally:
            self._next_save = time.monotonic() + min(10 * (time.thread_time() - started), 1.0)
        self._saved = entries
        self._fresh.clear()
        if complete:
            self._state_dirty = False
            self._save_owed = False

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
        if self._monitor_greenlet is not None:
            self._monitor_greenlet.kill()
            self._monitor_greenlet = None
        if self._monitor is not None:
            if self._socket is not None:
                self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
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
        self.report_loss(final=True)
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
