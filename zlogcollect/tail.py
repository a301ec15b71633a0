"""`zlogcollect tail`: a live view of a collector's ``--publish`` stream on stdout.

A plain pyzmq SUB socket (never gevent) connects and subscribes to everything;
each record is parsed with the collector's own :class:`~zlogcollect.wire.Parser`,
selected by topic patterns and printed as the files print it
(:mod:`zlogcollect.display`). Only records published while tail is connected
arrive: it is a live view, not history (the files are the history).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import BinaryIO, Final

import zmq

from zlogcollect.display import View
from zlogcollect.exits import ExitStatus
from zlogcollect.helpers import Throttle
from zlogcollect.keys import ClientCurve
from zlogcollect.lines import OptionError, check_endpoint
from zlogcollect.wire import MAX_RECORD_BYTES, MalformedRecord, Parser, escape_text

__all__ = ["TailError", "run_tail"]

BATCH: Final = 1000
"""Records printed per write (and flush) at most; a trickle is written record by record."""
MAX_BYTES: Final = 64 * MAX_RECORD_BYTES
"""Largest record tail parses: well above any collector's --max-record-bytes (the collector checked it)."""
POLL_MS: Final = 500
NOTE_EVERY: Final = 10.0
"""Seconds between notes on stderr about skipped malformed records."""


class TailError(Exception):
    """A failure that ends `tail`: one line for stderr and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Stop(Exception):
    """SIGTERM: stop like Ctrl-C."""


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


class Tail:
    """The SUB socket and the loop; *out* gets the bytes, *say* the notes for stderr.

    With *curve* the SUB socket is a CURVE client of the ``--publish`` endpoint.
    """

    def __init__(
        self,
        endpoint: str,
        view: View,
        count: int = 0,
        out: BinaryIO | None = None,
        say: Callable[[str], None] = lambda _text: None,
        clock: Callable[[], float] = time.time,
        curve: ClientCurve | None = None,
    ) -> None:
        try:
            check_endpoint(endpoint)
        except OptionError as exc:
            raise TailError(str(exc), ExitStatus.CONFIG) from None
        self.view = view
        self.count = count
        self.shown = 0
        self.skipped = 0
        self._out = out if out is not None else sys.stdout.buffer
        self._say = say
        self._clock = clock
        self._notes = Throttle(1, NOTE_EVERY)
        self._parse = Parser(
            view.levels, MAX_BYTES, trust_peer=True
        ).parse  # the collector set the peer (--publish)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = self._socket = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_BYTES)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            if curve is not None:
                curve.apply(sock)  # before connect: the handshake starts with it
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise TailError(f"connect {endpoint!r}: {exc}", ExitStatus.CONFIG) from None

    def run(self) -> None:
        """Print records as they arrive until ``--count`` is reached (forever without it)."""
        sock = self._socket
        while True:
            if not sock.poll(POLL_MS, zmq.POLLIN):
                continue
            if self._batch():
                return

    def _batch(self) -> bool:
        """Receive what is waiting (at most BATCH), print the selected records; True once --count is reached."""
        recv = self._socket.recv_multipart
        view = self.view
        parse = self._parse
        chunks: list[str] = []
        done = False
        for _ in range(BATCH):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                record = parse(frames, self._clock())
            except MalformedRecord as bad:
                self._skip(bad.reason, bad.detail)
                continue
            except Exception as exc:  # noqa: BLE001 - a parser bug must not end the view
                self._skip("parse_error", f"{type(exc).__name__}: {exc}")
                continue
            if not view.selects(record.topic):
                continue
            chunks.append(view.line(record))
            self.shown += 1
            if self.count and self.shown >= self.count:
                done = True
                break
        if chunks:
            self._out.write("".join(chunks).encode("utf-8", "backslashreplace"))
            self._out.flush()
        return done

    def _skip(self, reason: str, detail: str) -> None:
        self.skipped += 1
        if self._notes.allow("malformed"):
            self._say(
                f"zlogcollect tail: skipped {self.skipped} malformed record(s) so far"
                f" (more within {NOTE_EVERY:.0f} s are only counted); last: {reason}: {escape_text(detail, 200)}"
            )

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()


def _quiet_stdout() -> None:
    """The reader went away (``tail | head``): point stdout at /dev/null so the exit flush cannot fail."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run_tail(endpoint: str, view: View, count: int = 0, curve: ClientCurve | None = None) -> int:
    """`zlogcollect tail`: exit 0 after ``--count`` records, on Ctrl-C or SIGTERM, or when stdout closes."""
    tail: Tail | None = None
    try:
        # Inside the try: a TERM while the socket is being made is a stop like any other.
        signal.signal(signal.SIGTERM, _raise_stop)
        tail = Tail(
            endpoint, view, count, say=lambda text: print(text, file=sys.stderr, flush=True), curve=curve
        )
        tail.run()
    except (KeyboardInterrupt, _Stop):
        pass
    except BrokenPipeError:
        _quiet_stdout()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already: a second TERM changes nothing
        if tail is not None:
            tail.close()
    return ExitStatus.SUCCESS
