"""`zlogcollect ship` and `zlogcollect send`: lines of files, named pipes and stdin as records.

The app side's own layers carry them: :class:`~zlogcollect.publisher.Publisher`
(the XPUB socket, the collector's subscription, close with linger) and
:class:`~zlogcollect.encode.Encoder` (topics, the structured extension with
``pub`` and ``seq`` for the collector's loss accounting, the size cut). Where
``ZLogHandler.emit`` must never block an app and so holds, then drops and
counts, :class:`Sender` waits: before a collector subscribes and while its
queue is full, so a finite input arrives whole. The subtopic is given, never
taken from the line, so ``::`` in a line (IPv6 addresses) stays in the text.

The inputs are read by :mod:`zlogcollect.readers` in plain threads (one per
followed input, one for all inputs otherwise) that hand batches of lines to
the main thread, which alone uses the socket. Plain zmq, never gevent.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket as _net
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

import zmq

from zlogcollect.encode import Encoder
from zlogcollect.exits import ExitStatus
from zlogcollect.helpers import Throttle
from zlogcollect.keys import ClientCurve, KeyFileError, client_curve
from zlogcollect.lines import (
    ExtensionTemplate,
    LevelRule,
    Line,
    OptionError,
    check_app,
    check_endpoint,
    message_body,
    message_text,
)
from zlogcollect.publisher import Publisher
from zlogcollect.readers import Batch, Done, Failed, Input, Outbox, read_all
from zlogcollect.wire import MAX_RECORD_BYTES

__all__ = ["Sender", "ShipError", "ShipOptions", "run_send", "run_ship"]

NOTE_AFTER: Final = 2.0  # seconds of waiting for a collector before ship says so
NOTE_EVERY: Final = 60.0  # ... and at most once a minute
SNDHWM: Final = 10_000  # records queued for the collector before ship waits
STOP_LINGER: Final = 2.0  # seconds to hand over lines already read after a stop signal
CLOSE_LINGER: Final = 10.0  # seconds the socket may take to flush at the end (without --timeout)
_MORE: Final = zmq.SNDMORE | zmq.NOBLOCK
_WAIT_MORE: Final = zmq.SNDMORE
_NOBLOCK: Final = zmq.NOBLOCK
_SLICE_MS: Final = 100  # a blocking send or poll waits at most this long before looking at stop and deadline


class ShipError(Exception):
    """A failure that ends `ship` or `send`: one line for stderr and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _never() -> bool:
    return False


class Sender:
    """One publisher sequence to one collector: wait for its subscription, send records, flush at close.

    Raises :class:`ShipError` (exit 78) when ZeroMQ refuses the endpoint.
    *say* prints a note (waiting for a collector) on stderr. With *curve* the
    socket is a CURVE client of the collector.
    """

    def __init__(
        self,
        endpoint: str,
        app: str,
        subtopic: str = "",
        *,
        max_record_bytes: int = MAX_RECORD_BYTES,
        say: Callable[[str], None] = lambda _text: None,
        curve: ClientCurve | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.curve = curve is not None
        self.subtopic = subtopic
        self.encoder = Encoder(app, _net.gethostname(), os.urandom(8).hex(), max_record_bytes)
        self.max_body = self.encoder.max_body
        self.pid = os.getpid()
        self.template = ExtensionTemplate(self.encoder.host, self.pid, self.encoder.pub)
        self.seq = 0
        self._say = say
        self._notes = Throttle(1, NOTE_EVERY)
        self._topics: dict[str, bytes] = {}
        try:
            self.publisher = Publisher((endpoint,), sndhwm=SNDHWM, curve=curve)
        except zmq.ZMQError as exc:
            raise ShipError(f"connect {endpoint!r}: {exc}", ExitStatus.CONFIG) from None
        # A send that finds the queue full waits this long, then looks at the deadline and stop.
        self.publisher.socket.set(zmq.SNDTIMEO, _SLICE_MS)
        self._send = self.publisher.send_frame

    def topic(self, levelname: str) -> bytes:
        """The topic for a level, with the fixed subtopic."""
        topic = self._topics.get(levelname)
        if topic is None:
            topic = self._topics[levelname] = self.encoder.topic(levelname, self.subtopic)
        return topic

    def _waiting(self, started: float, noted: bool, why: str) -> bool:
        """Say once per wait, and at most once a minute, that ship is waiting (after NOTE_AFTER s)."""
        if not noted and time.monotonic() - started >= NOTE_AFTER:
            if self._notes.allow(why):
                self._say(f"waiting for a collector at {self.endpoint} ({why})")
            return True
        return noted

    def why_none(self) -> str:
        """Why no collector may have subscribed yet, for the waiting note and the give-up message."""
        if not self.curve:
            return "none has subscribed yet"
        # A failed CURVE handshake looks exactly like an absent collector from here.
        return (
            "none has subscribed yet; with CURVE, also check --curve-server-key"
            " and that the collector allows this client's key"
        )

    def wait_subscribed(self, deadline: float | None, stop: Callable[[], bool] = _never) -> bool:
        """Wait until a collector subscribes; False at *deadline* (monotonic) or when *stop* says so."""
        publisher = self.publisher
        started = time.monotonic()
        noted = False
        while not publisher.poll():
            if stop() or (deadline is not None and time.monotonic() >= deadline):
                return False
            noted = self._waiting(started, noted, self.why_none())
            publisher.socket.poll(_SLICE_MS, zmq.POLLIN)
        return True

    def send(
        self,
        level: tuple[str, int],
        body: bytes,
        deadline: float | None,
        stop: Callable[[], bool] = _never,
        *,
        path: str | None = None,
        lineno: int | None = None,
        created: float | None = None,
    ) -> bool:
        """Send one record, waiting while no collector is subscribed or its queue is full.

        Returns False, the record not sent, at *deadline* or when *stop* says so.
        """
        if not self.publisher.subscribed and not self.wait_subscribed(deadline, stop):
            return False
        extension = self.template.encode(
            time.time() if created is None else created, level[1], path, lineno, self.seq
        )
        topic = self.topic(level[0])
        sock = self.publisher.socket
        send = self._send
        try:
            send(sock, topic, _MORE)
        except zmq.Again:  # the queue is full: wait for room, a slice at a time
            started = time.monotonic()
            noted = False
            while True:
                try:
                    send(sock, topic, _WAIT_MORE)  # waits up to _SLICE_MS
                    break
                except zmq.Again:
                    if stop() or (deadline is not None and time.monotonic() >= deadline):
                        return False
                    noted = self._waiting(started, noted, "it takes no records")
        # Once the first frame is in, ZeroMQ takes the rest of the message.
        send(sock, body, _MORE)
        send(sock, extension, _NOBLOCK)
        self.seq += 1
        return True

    def close(self, linger: float) -> bool:
        """Let queued records leave for up to *linger* seconds; True when they all went out."""
        if self.publisher.subscribed:
            self.publisher.poll()
        subscribed = self.publisher.subscribed
        ran_out = self.publisher.close(max(linger, 0.05))
        return self.seq == 0 or (subscribed and not ran_out)


# --- the commands --------------------------------------------------------------------------------


def _say(text: str) -> None:
    sys.stderr.write(f"zlogcollect: ship: {text}\n")
    sys.stderr.flush()


def check_inputs(paths: Sequence[str]) -> None:
    """Raise :class:`ShipError` (exit 66) for an input that is missing, unreadable or a directory."""
    if not paths or "-" in paths:
        try:
            os.fstat(sys.stdin.fileno())
        except (AttributeError, ValueError, OSError):  # no stdin at all, or closed
            raise ShipError(
                "stdin: not open (give a FILE, or feed ship's stdin)", ExitStatus.NOINPUT
            ) from None
    for path in paths:
        if path == "-":
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise ShipError(f"{path}: {exc.strerror}", ExitStatus.NOINPUT) from None
        if stat.S_ISDIR(mode):
            raise ShipError(f"{path}: is a directory", ExitStatus.NOINPUT)
        if not os.access(path, os.R_OK):
            raise ShipError(f"{path}: not readable", ExitStatus.NOINPUT)


class _StopSignals:
    """TERM and INT stop shipping cleanly: the main thread notes them and winds down."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._old: dict[int, Any] = {}

    def _note(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._old[signum] = signal.signal(signum, self._note)
        try:
            yield
        finally:
            for number, old in self._old.items():
                signal.signal(number, old)


def _progress(inputs: Sequence[Input], follow: bool) -> Any:
    """A tqdm bar over the input files' bytes on a terminal, for finite regular files only; else None."""
    if follow or not sys.stderr.isatty():
        return None
    paths = [source.path for source in inputs]
    if not paths or any(path is None or not stat.S_ISREG(os.stat(path).st_mode) for path in paths):
        return None
    from tqdm import tqdm

    total = sum(os.stat(path).st_size for path in paths if path is not None)
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="ship",
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )


@dataclass(frozen=True)
class ShipOptions:
    """What `ship` and `send` were asked to do (the command-line options)."""

    endpoint: str
    app: str
    subtopic: str = ""
    level: str = "INFO"
    level_from: str | None = None
    follow: bool = False
    from_end: bool = False
    timeout: float = 0.0
    max_record_bytes: int = MAX_RECORD_BYTES
    curve_server_key: str | None = None
    curve_client_cert: str | None = None


def run_ship(paths: Sequence[str], options: ShipOptions) -> int:
    """`zlogcollect ship`: returns the exit status; raises :class:`ShipError` for bad input."""
    rule, curve = _checked(options, options.level_from)
    check_inputs(paths)
    signals = _StopSignals()
    with signals.installed():
        return _Shipping(paths, options, rule, signals, curve).run()


class _Shipping:
    """One run of `ship`: readers, the sender, the progress bar and the way it ends."""

    def __init__(
        self,
        paths: Sequence[str],
        options: ShipOptions,
        rule: LevelRule,
        signals: _StopSignals,
        curve: ClientCurve | None = None,
    ) -> None:
        self.signals = signals
        self.timeout = options.timeout
        self.follow = options.follow
        self.rule = rule
        self.bar: Any = None
        self.sender = Sender(
            options.endpoint,
            options.app,
            options.subtopic,
            max_record_bytes=options.max_record_bytes,
            say=self.say,
            curve=curve,
        )
        limit = self.sender.max_body + 1  # one byte more than fits: the cut and its note apply
        names = [None if path == "-" else path for path in paths] or [None]
        self.inputs = [Input(name, limit, options.follow, options.from_end, self.say) for name in names]
        self.out = Outbox()
        self.unsent = 0  # lines read that did not reach the collector

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(f"zlogcollect: ship: {text}", file=sys.stderr)
        else:
            _say(text)

    def _deadline(self) -> float | None:
        return time.monotonic() + self.timeout if self.timeout > 0 else None

    def _ship(self, batch: Batch, deadline: Callable[[], float | None], stop: Callable[[], bool]) -> bool:
        sender, rule, limit = self.sender, self.rule, self.sender.max_body
        for index, line in enumerate(batch.lines):
            text = message_text(line)
            body = message_body(text, limit, line.cut)
            level = rule.level_of(text)
            if not sender.send(level, body, deadline(), stop, path=batch.name, lineno=batch.first + index):
                self.unsent += len(batch.lines) - index
                return False
        if self.bar is not None:
            self.bar.update(sum(line.size for line in batch.lines))
        return True

    def run(self) -> int:
        groups = [[source] for source in self.inputs] if self.follow else [self.inputs]
        self.bar = _progress(self.inputs, self.follow)
        readers = [
            threading.Thread(target=read_all, args=(group, self.out), name="zlogcollect-ship", daemon=True)
            for group in groups
        ]
        for reader in readers:
            reader.start()
        try:
            return self._loop(len(readers))
        finally:
            if self.bar is not None:
                self.bar.close()

    def _loop(self, running: int) -> int:
        stopping = self.signals.requested.is_set
        failure: str | None = None
        gave_up = False
        while running and not stopping():
            try:
                item = self.out.items.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, Done):
                running -= 1
            elif isinstance(item, Failed):
                failure = item.message
                break
            elif not self._ship(item, self._deadline, stopping):
                gave_up = not stopping()
                break
        self.out.stop.set()
        stopped = stopping()
        if stopped or failure is not None:
            # Hand over what was read already, briefly: a pipe's lines cannot be read again.
            until = time.monotonic() + STOP_LINGER
            self._drain(lambda: until, lambda: time.monotonic() >= until)
        else:
            self._drain(self._deadline, _never)  # what is left after give-up is counted unsent
        linger = self.timeout if self.timeout > 0 else CLOSE_LINGER
        flushed = self.sender.close(STOP_LINGER if stopped else linger)
        if failure is not None:
            raise ShipError(failure, ExitStatus.NOINPUT)
        if gave_up or self.unsent:
            if gave_up:
                message = (
                    f"no collector at {self.sender.endpoint} took records for {self.timeout:g} s;"
                    f" {self.unsent:,} lines read were not sent{_curve_hint(self.sender)}"
                )
            else:
                message = f"stopped with {self.unsent:,} lines read but not sent to {self.sender.endpoint}"
            raise ShipError(message, ExitStatus.TEMPFAIL)
        if not flushed:
            raise ShipError(
                f"the collector at {self.sender.endpoint} did not take the last records in time",
                ExitStatus.TEMPFAIL,
            )
        return ExitStatus.SUCCESS

    def _drain(self, deadline: Callable[[], float | None], stop: Callable[[], bool]) -> None:
        """Ship the batches still queued; once one could not go, count the rest as unsent."""
        while True:
            try:
                item = self.out.items.get_nowait()
            except queue.Empty:
                return
            if not isinstance(item, Batch):
                continue
            if self.unsent:
                self.unsent += len(item.lines)
            else:
                self._ship(item, deadline, stop)


def _checked(options: ShipOptions, level_from: str | None) -> tuple[LevelRule, ClientCurve | None]:
    try:
        check_endpoint(options.endpoint)
        check_app(options.app, options.subtopic)
        if options.max_record_bytes < 1024:
            raise OptionError(f"max-record-bytes {options.max_record_bytes}: expected at least 1024")
        rule = LevelRule(options.level, level_from)
    except OptionError as exc:
        raise ShipError(str(exc), ExitStatus.CONFIG) from None
    return rule, curve_options(options.curve_server_key, options.curve_client_cert)


def curve_options(server_key: str | None, client_cert: str | None) -> ClientCurve | None:
    """``--curve-server-key`` and ``--curve-client-cert`` loaded (both or neither), else ShipError 78."""
    try:
        return client_curve(server_key, client_cert, ("--curve-server-key", "--curve-client-cert"))
    except KeyFileError as exc:
        raise ShipError(str(exc), ExitStatus.CONFIG) from None


def _curve_hint(sender: Sender) -> str:
    # A wrong server key or a client key the collector does not allow: from this side
    # the handshake never ends, which looks exactly like no collector at all.
    if not sender.curve or sender.seq:
        return ""
    return " (with CURVE, a wrong --curve-server-key or a client key the collector does not allow looks the same)"


def run_send(message: str, options: ShipOptions) -> int:
    """`zlogcollect send`: 0 once a subscribed collector took the record within the timeout, else 75."""
    rule, curve = _checked(options, None)
    endpoint, timeout = options.endpoint, options.timeout
    deadline = time.monotonic() + max(timeout, 0.0)
    sender = Sender(
        endpoint, options.app, options.subtopic, max_record_bytes=options.max_record_bytes, curve=curve
    )
    text = message_text(Line(os.fsencode(message), 0))  # invalid UTF-8 in argv as \xNN, like ship
    sent = sender.send(rule.default, message_body(text, sender.max_body), deadline)
    flushed = sender.close(max(deadline - time.monotonic(), 0.2))
    if not sent:
        raise ShipError(
            f"no collector at {endpoint} subscribed within {timeout:g} s{_curve_hint(sender)}",
            ExitStatus.TEMPFAIL,
        )
    if not flushed:
        raise ShipError(
            f"the collector at {endpoint} did not take the record within {timeout:g} s", ExitStatus.TEMPFAIL
        )
    return ExitStatus.SUCCESS
