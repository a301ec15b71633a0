"""The app side: a logging handler that publishes records to a zlogcollect collector."""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket as _net
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from copy import copy
from typing import Any, Final, cast

import zmq
from zmq.log.handlers import PUBHandler

from zlogcollect.wire import (
    MAX_RECORD_BYTES,
    MAX_TOPIC_BYTES,
    STANDARD_LEVELS,
    TOPIC_DELIM,
    build_topic,
    encode_extension,
    level_word,
)

__all__ = ["DEFAULT_ENDPOINT", "ZLogHandler", "default_app_name", "setup"]

DEFAULT_ENDPOINT: Final = "tcp://127.0.0.1:5558"
"""Where ``setup()`` connects when no endpoint is given (the port of the original recipe)."""

_NOBLOCK: Final = zmq.NOBLOCK
_MORE: Final = zmq.SNDMORE | zmq.NOBLOCK
_RECHECK_EVERY: Final = 256  # sends between looks for unsubscriptions (only bind mode sees them)
_CHUNK: Final = 500  # held records flushed per lock hold, so emit() in other threads waits little
_FRAGMENT_CACHE_MAX: Final = 2048
_ERROR_QUIET_SECONDS: Final = 60.0
_CLOSE_MARGIN: Final = 1.0  # seconds beyond the shared exit deadline that exit waits for its threads
_CLOSE_FLOOR: Final = 0.2  # seconds a socket lingers at least, for records sent after the exit deadline

# What a plain LogRecord carries; anything else on a record came from ``extra={...}``.
_PLAIN_RECORD: Final = logging.LogRecord("", logging.INFO, "", 0, "", (), None)
_BASE_ATTRS: Final = len(_PLAIN_RECORD.__dict__)
_STANDARD_ATTRS: Final = frozenset(_PLAIN_RECORD.__dict__) | {"message", "asctime", "taskName"}

# Same settings as wire.encode_extension, so the fast path emits byte-identical frames.
_JSON: Final = json.JSONEncoder(separators=(",", ":"), default=repr)

_HANDLERS: weakref.WeakSet[ZLogHandler] = weakref.WeakSet()
# zmq objects a fork child inherited from its parent. The child must neither use nor
# close them (libzmq contexts do not survive fork), and letting the garbage collector
# destroy them would print ResourceWarnings, so the child keeps them until it exits.
_INHERITED: list[object] = []
# Set at exit once every handler waited for its collector: close() waits no longer.
_exit_deadline: float | None = None


def _after_fork_in_child() -> None:
    global _exit_deadline
    _exit_deadline = None
    for handler in list(_HANDLERS):
        handler._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)


def default_app_name() -> str:
    """The running script's name without ``.py`` (its package for ``__main__.py``).

    Returns ``"python"`` for an interactive interpreter or ``python -c``.
    """
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "-c", "-"):
        return "python"
    stem = os.path.splitext(os.path.basename(argv0))[0]
    if stem == "__main__":
        stem = os.path.basename(os.path.dirname(os.path.abspath(argv0)))
    return stem or "python"


class _MessageFormatter(logging.Formatter):
    """``%(message)s`` plus traceback and stack, without the generic formatter's overhead."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Return the message, followed by the traceback and stack when the record has them."""
        text = record.message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return text


_DEFAULT_FORMATTER: Final = _MessageFormatter()


class ZLogHandler(PUBHandler):
    """Publish log records to a collector: connect, hold until subscribed, count every loss.

    A drop-in for ``zmq.log.handlers.PUBHandler`` that fixes what makes the stock class
    lose records or crash:

    * it *connects* to the collector (``bind=True`` restores the stock behaviour);
    * records logged before the collector's subscription arrives are held (up to
      ``hold`` records, none older than ``hold_timeout`` seconds) and sent in order;
    * ``close()`` (and so ``logging.shutdown()``) flushes within ``linger`` seconds;
      at exit all handlers of the process wait for their collector together;
    * after ``os.fork()`` the child opens its own context and socket;
    * ``emit`` never blocks and never raises; records dropped at the high-water mark
      or the hold limit are counted and announced to the collector;
    * one ``%(message)s`` formatter for every level, tracebacks included.

    With ``structured=True`` (the default) each record carries a third frame, the
    structured extension described in ``docs/WIRE.md``; with ``structured=False``
    the frames are exactly the stock ``[topic, text]``.

    Example::

        handler = ZLogHandler("tcp://collector:5558", app="billing")
        logging.getLogger().addHandler(handler)
        logging.getLogger("db").warning("pool::exhausted after %d s", 30)
        # topic "billing.WARNING.pool", text "exhausted after 30 s"

    Args:
        endpoint: endpoint or endpoints to connect to (or bind, see ``bind``),
            or an existing socket; defaults to ``DEFAULT_ENDPOINT``. An XPUB socket gets the hold buffer;
            a PUB socket cannot tell when the collector subscribed, so records go
            out at once as with the stock class. A socket you pass stays yours: it
            is not closed by ``close()`` and cannot be replaced in a fork child.
        interface_or_socket: pyzmq's name for ``endpoint``, accepted as a keyword
            so code written for ``PUBHandler`` keeps working; give one or the other.
        context: context for the handler's own socket (e.g. a ``zmq.green`` one).
        root_topic: first topic component; defaults to ``app``.
        app: application name used as the root topic; defaults to the script name.
        bind: bind the endpoints instead of connecting to them.
        structured: send the structured extension as a third frame.
        formatters: per-level formatters, as in ``PUBHandler``; levels not listed
            use the handler's formatter (``setFormatter(fmt)``), else ``%(message)s``.
        hold: most records held while no collector is subscribed.
        hold_timeout: seconds a held record waits for a collector before it is dropped.
        linger: most seconds ``close()`` spends waiting for a collector and flushing.
        sndhwm: records queued in zmq per collector before new ones are dropped.
        max_record_bytes: the collector's ``--max-record-bytes``: a longer message,
            traceback or set of extra fields is cut to fit, with a note saying how much
            was cut (a collector refuses an oversized frame by dropping the connection).
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] | zmq.Socket[Any] | None = None,
        context: zmq.Context[Any] | None = None,
        root_topic: str | None = None,
        *,
        interface_or_socket: str | Sequence[str] | zmq.Socket[Any] | None = None,
        app: str | None = None,
        bind: bool = False,
        structured: bool = True,
        formatters: Mapping[int, logging.Formatter | None] | None = None,
        hold: int = 10_000,
        hold_timeout: float = 10.0,
        linger: float = 2.0,
        sndhwm: int = 100_000,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        if endpoint is None:
            endpoint = DEFAULT_ENDPOINT if interface_or_socket is None else interface_or_socket
        elif interface_or_socket is not None:
            raise TypeError("ZLogHandler takes endpoint or interface_or_socket (its alias), not both")
        # PUBHandler.__init__ is not called: it binds, and installs the per-level
        # formatters that put "LEVEL file:line -" and "- None" into the text.
        logging.Handler.__init__(self)
        self._topics: dict[str, bytes] = {}
        self._sub_topics: dict[tuple[str, str], bytes] = {}
        self.root_topic = root_topic if root_topic is not None else (app or default_app_name())
        self.formatters = dict(formatters or {})
        self.structured = structured
        self._bind = bind
        self._hold_max = max(int(hold), 0)
        self._hold_timeout = float(hold_timeout)
        self._linger = max(float(linger), 0.0)
        self._sndhwm = int(sndhwm)
        # Half the record for the text, the rest for the topic and the extension
        # (which repeats a traceback): together they stay under the collector's limit.
        self._max_body = max(int(max_record_bytes) // 2, 256)
        self._max_extension = max(int(max_record_bytes) // 2 - MAX_TOPIC_BYTES, 256)
        self._host = _net.gethostname()
        self._error_quiet_until = 0.0
        self._errors_suppressed = 0
        self._closed = False
        self._finalizer: Any = None
        self._reset_sequence()
        if isinstance(endpoint, zmq.Socket):
            self._endpoints: tuple[str, ...] = ()
            self._owns_socket = False
            self._owns_context = False
            self._adopt(endpoint)
        else:
            endpoints = (endpoint,) if isinstance(endpoint, str) else tuple(endpoint)
            if not endpoints:
                raise ValueError("ZLogHandler needs at least one endpoint")
            self._endpoints = endpoints
            self._owns_socket = True
            self._owns_context = context is None
            self._context_type: type[zmq.Context[Any]] = zmq.Context if context is None else type(context)
            self.ctx = context if context is not None else zmq.Context()
            # Opened now rather than at the first record: the connection and the
            # collector's subscription then race the app's start-up, not its first log.
            try:
                self._open()
            except BaseException:
                if self._owns_context:
                    self.ctx.term()
                raise
        _HANDLERS.add(self)

    # -- socket lifecycle ---------------------------------------------------------

    def _reset_sequence(self) -> None:
        self._pub = os.urandom(8).hex()
        self._seq = 0
        self._dropped = 0
        self._dropped_total = 0
        self._held: deque[tuple[float, bytes, bytes, dict[str, Any] | None]] = deque()
        self._subscriptions: set[bytes] = set()
        self._subscribed = False
        self._recheck = _RECHECK_EVERY
        self._fragments: dict[tuple[Any, ...], str] = {}
        self._flusher: threading.Thread | None = None
        self._usable = True
        self._needs_open = False  # a fork child opens its own socket at its first record

    def _adopt(self, sock: zmq.Socket[Any]) -> None:
        self.socket = sock
        self.ctx = sock.context
        # Only an XPUB hears subscriptions; for any other socket assume someone listens.
        self._detects = sock.type == zmq.XPUB
        self._subscribed = not self._detects
        # The pyzmq wrapper's send() costs about 1 µs per frame in Python code that a
        # plain socket does not need; a zmq.green socket does need its own send().
        plain = type(sock) is zmq.Socket
        self._send_frame: Any = zmq.backend.Socket.send if plain else type(sock).send

    def _open(self) -> None:
        sock: zmq.Socket[Any] = self.ctx.socket(zmq.XPUB)
        try:
            sock.set(zmq.SNDHWM, self._sndhwm)
            # Beyond the HWM, send() then fails with EAGAIN instead of dropping in
            # silence, which is how drops get counted.
            sock.set(zmq.XPUB_NODROP, 1)
            for endpoint in self._endpoints:
                if self._bind:
                    sock.bind(endpoint)
                else:
                    sock.connect(endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        self._adopt(sock)
        self._register_finalizer()

    def _register_finalizer(self) -> None:
        # multiprocessing children end with os._exit(): atexit and logging.shutdown()
        # never run there, but multiprocessing's own finalizers do. Registering one
        # only when the app already imported multiprocessing keeps imports light.
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            self._finalizer = util.Finalize(None, _close_handler, args=(weakref.ref(self),), exitpriority=5)

    def _forget_parent(self) -> None:
        """In a fork child: drop the parent's socket and pending records, start afresh."""
        if self._closed:
            return
        _INHERITED.append((self.socket, self.ctx))
        self._reset_sequence()
        self._finalizer = None
        self._detects = False  # nothing may poll the parent's socket; _open() sets it anew
        if not self._owns_socket:
            # A socket handed in by the app cannot be rebuilt: its endpoints are unknown.
            self._usable = False
            return
        if self._owns_context:
            self.ctx = zmq.Context()
        else:
            self.ctx = self._context_type()
            self._owns_context = True
        self._needs_open = True

    # -- formatting ---------------------------------------------------------------

    def setRootTopic(self, root_topic: str) -> None:
        """Set the first topic component (the app's name on the collector)."""
        super().setRootTopic(root_topic)
        self._topics = {}
        self._sub_topics = {}

    def setFormatter(self, fmt: logging.Formatter | None, level: int = logging.NOTSET) -> None:
        """Set the formatter for one level, or for every level when *level* is NOTSET."""
        if level == logging.NOTSET:
            self.formatter = fmt
            for listed in self.formatters:
                self.formatters[listed] = fmt
        else:
            self.formatters[level] = fmt

    def format(self, record: logging.LogRecord) -> str:
        """Format with the level's formatter, else the handler's, else ``%(message)s``."""
        fmt = self.formatters.get(record.levelno) or self.formatter
        if fmt is None:
            if record.exc_info or record.stack_info:
                return _DEFAULT_FORMATTER.format(record)
            # What _DEFAULT_FORMATTER does for a plain record, without two calls.
            text: str = record.getMessage()
            record.message = text
            return text
        return fmt.format(record)

    def _topic(self, levelname: str, subtopic: str) -> bytes:
        # A level name a collector would not accept from the extension is sent as one
        # it does (one word); a topic over the collector's limit is cut to fit.
        level = level_word(levelname)
        if not subtopic:
            topic = self._topics.get(levelname)
            if topic is None:
                topic = self._topics[levelname] = _fit_topic(self.root_topic, level, "")
            return topic
        topic = _fit_topic(self.root_topic, level, subtopic)
        if len(self._sub_topics) >= 1000:  # subtopics with variable parts must not grow it forever
            self._sub_topics.clear()
        self._sub_topics[(levelname, subtopic)] = topic
        return topic

    def _fields(self, record: logging.LogRecord, seq: int) -> dict[str, Any]:
        fields: dict[str, Any] = {"created": record.created, "levelno": record.levelno}
        levelname = record.levelname
        if levelname not in STANDARD_LEVELS:  # a custom level: the collector learns its name here
            fields["levelname"] = level_word(levelname)
        fields.update(
            {
                "host": self._host,
                "pid": record.process,
                "process": record.processName,
                "thread": record.threadName,
                "logger": record.name,
                "path": record.pathname,
                "line": record.lineno,
                "func": record.funcName,
            }
        )
        exc_text = record.exc_text
        if record.exc_info and not exc_text:  # a custom formatter that does not cache it
            exc_text = _DEFAULT_FORMATTER.formatException(record.exc_info)
        exc = "\n".join(part for part in (exc_text, record.stack_info) if part)
        if exc:
            fields["exc"] = exc
        extra = _extra(record)
        if extra:
            fields["extra"] = extra
        fields["pub"] = self._pub
        fields["seq"] = seq
        return fields

    def _fast_extension(self, record: logging.LogRecord, seq: int) -> bytes | None:
        """The extension of a plain record without building a dict, or None if not plain.

        Byte-identical to ``encode_extension(self._fields(record, seq))``: the
        per-call-site part is encoded once by the same JSON settings and cached.
        """
        created = record.created
        if created.__class__ is not float or record.exc_info or record.exc_text or record.stack_info:
            return None
        attrs = record.__dict__
        added = len(attrs) - _BASE_ATTRS
        if added > 0:
            # Formatters add "message" and "asctime"; only more than that can be extra.
            added -= ("message" in attrs) + ("asctime" in attrs)
            if added > 0 and _extra(record):
                return None
        key = (
            record.levelno,
            record.levelname,
            record.process,
            record.processName,
            record.threadName,
            record.name,
            record.pathname,
            record.lineno,
            record.funcName,
        )
        fragment = self._fragments.get(key)
        if fragment is None:
            if len(self._fragments) >= _FRAGMENT_CACHE_MAX:
                self._fragments.clear()
            # The level is part of the call site's fragment, so a custom level costs
            # nothing per call once its fragment is cached.
            fields: dict[str, Any] = {"levelno": key[0]}
            if key[1] not in STANDARD_LEVELS:
                fields["levelname"] = level_word(key[1])
            fields.update(
                host=self._host,
                pid=key[2],
                process=key[3],
                thread=key[4],
                logger=key[5],
                path=key[6],
                line=key[7],
                func=key[8],
                pub=self._pub,
            )
            fragment = self._fragments[key] = _JSON.encode(fields)[1:-1]
        return (f'{{"v":1,"created":{created!r},{fragment},"seq":{seq}}}').encode()

    # -- sending ------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        """Publish one record; never blocks on the network and never raises."""
        seq = -1
        try:
            msg = record.msg
            text = msg if msg.__class__ is str else str(msg)
            body = None
            if TOPIC_DELIM in text:
                # As PUBHandler does: the part of msg before "::" is the subtopic.
                subtopic, rest = text.split(TOPIC_DELIM, 1)
                topic = self._sub_topics.get((record.levelname, subtopic)) or self._topic(
                    record.levelname, subtopic
                )
                if (
                    self.formatter is None
                    and not self.formatters
                    and not (record.exc_info or record.stack_info)
                ):
                    # What format() would give for the copy below, without copying the record.
                    args = record.args
                    body = (rest % args if args else rest).encode("utf-8", "backslashreplace")
                else:
                    record = copy(record)
                    record.msg = rest
            else:
                topic = self._topics.get(record.levelname) or self._topic(record.levelname, "")
            if body is None:
                try:
                    body = self.format(record).encode()
                except UnicodeEncodeError:
                    body = self.format(record).encode("utf-8", "backslashreplace")
            if len(body) > self._max_body:
                body = _cut(body, self._max_body)
            # The sequence number is taken after format(): a record logged from inside
            # a message argument's __str__ goes out first and must not get a lower seq.
            seq = self._seq
            self._seq = seq + 1
            self._recheck -= 1
            if self._recheck <= 0:
                self._recheck = _RECHECK_EVERY
                if self._detects:
                    self._poll_subscriptions()
            if self._held or not self._subscribed:
                self._emit_unsubscribed(record, seq, topic, body)
                return
            if self.structured:
                extension = None if self._dropped else self._fast_extension(record, seq)
                if extension is None:
                    extension = self._encode(self._fields(record, seq))
            else:
                extension = None
            # Inlined _send(): this is the path every record takes.
            send = self._send_frame
            sock = self.socket
            send(sock, topic, _MORE)
            if extension is None:
                send(sock, body, _NOBLOCK)
            else:
                send(sock, body, _MORE)
                send(sock, extension, _NOBLOCK)
                self._dropped = 0  # the count just travelled with this record
        except zmq.Again:  # the queue to the collector is full (SNDHWM): count, go on
            self._count_drop()
        except RecursionError:  # as logging.StreamHandler does: let the app see it
            raise
        except Exception:  # noqa: BLE001 - emit must never raise into the app (logging's rule)
            if seq < 0:
                self._seq += 1  # the record was attempted: leave its gap in the sequence
            self._count_drop()
            self.handleError(record)

    def _emit_unsubscribed(self, record: logging.LogRecord, seq: int, topic: bytes, body: bytes) -> None:
        """The rare paths: not subscribed yet, records held, after fork, after close."""
        if not self._usable:  # closed, or a fork child of a handler given a socket
            self._count_drop()
            if not self._closed and self._dropped_total == 1 and sys.stderr:
                sys.stderr.write(
                    f"zlogcollect: pid {os.getpid()} drops its records: a socket given to ZLogHandler "
                    "cannot be used after fork (give it an endpoint instead)\n"
                )
            return
        if self._needs_open:
            self._open()  # stays needed if this fails: the parent's socket is never used
            self._needs_open = False
        if self._detects:
            self._poll_subscriptions()
        if not self._subscribed:
            self._hold(topic, body, self._fields(record, seq) if self.structured else None)
            return
        if self._held:
            # Subscribed now: send what is held first, right here (the caller holds the
            # lock). Left to the flusher thread, a logging burst outpaces it, every new
            # record joins the queue behind it and the hold limit overflows.
            self._flush_some(None)
        if self.structured:
            self._send(topic, body, self._encode(self._fields(record, seq)))
        else:
            self._send(topic, body, None)

    def _encode(self, fields: dict[str, Any]) -> bytes:
        if self._dropped:
            fields["dropped"] = self._dropped
        try:
            extension = encode_extension(fields)
        except (TypeError, ValueError):
            # An extra value JSON rejects even with default=repr (a dict with tuple
            # keys, a cycle): send the repr of everything that is not a plain scalar.
            safe = (str, int, float, type(None))
            fields = {k: v if isinstance(v, safe) else repr(v) for k, v in fields.items()}
            extension = encode_extension(fields)
        if len(extension) <= self._max_extension:
            return extension
        # Too large for the collector: cut the traceback, then the extra fields.
        limit = self._max_extension
        if isinstance(fields.get("exc"), str):
            fields["exc"] = _cut(fields["exc"].encode(), limit // 2).decode()
        if "extra" in fields and len(encode_extension(fields)) > limit:
            size = len(encode_extension(fields["extra"]))
            fields["extra"] = {"zlogcollect_cut": f"{size} bytes of extra fields, over the record limit"}
        extension = encode_extension(fields)
        if len(extension) > limit:  # long names everywhere: keep only what loss accounting needs
            kept = ("created", "levelno", "levelname", "pub", "seq", "dropped")
            extension = encode_extension({k: fields[k] for k in kept if k in fields})
        return extension

    def _send(self, topic: bytes, body: bytes, extension: bytes | None) -> bool:
        send = self._send_frame
        sock = self.socket
        try:
            # With XPUB_NODROP, a full queue refuses the first frame; the later frames
            # of a message that started always go in (libzmq counts whole messages).
            if extension is None:
                send(sock, topic, _MORE)
                send(sock, body, _NOBLOCK)
            else:
                send(sock, topic, _MORE)
                send(sock, body, _MORE)
                send(sock, extension, _NOBLOCK)
        except zmq.Again:
            self._count_drop()
            return False
        if extension is not None:
            self._dropped = 0  # the count just travelled with this record
        return True

    def _count_drop(self) -> None:
        self._dropped += 1
        self._dropped_total += 1

    # -- holding until the collector subscribes -----------------------------------

    def _poll_subscriptions(self) -> None:
        sock = self.socket
        while True:
            try:
                event = sock.recv(_NOBLOCK)
            except zmq.Again:
                break
            # XPUB without VERBOSE reports only the first subscription to a prefix and
            # the last unsubscription from it, so a set mirrors the subscribers exactly.
            if event[:1] == b"\x01":
                self._subscriptions.add(event[1:])
            elif event[:1] == b"\x00":
                self._subscriptions.discard(event[1:])
        self._subscribed = bool(self._subscriptions)

    def _hold(self, topic: bytes, body: bytes, fields: dict[str, Any] | None) -> None:
        now = time.monotonic()
        held = self._held
        self._expire(now)
        if self._hold_max == 0:
            self._count_drop()
            return
        if len(held) >= self._hold_max:
            held.popleft()  # keep the newest: the records nearest to now matter most
            self._count_drop()
        held.append((now + self._hold_timeout, topic, body, fields))
        if self._flusher is None and not self._closed:
            flusher = threading.Thread(
                target=_flush_held, args=(weakref.ref(self),), name="zlogcollect-hold", daemon=True
            )
            try:
                flusher.start()
            except RuntimeError:  # interpreter shutting down: close() flushes instead
                return
            self._flusher = flusher

    def _expire(self, now: float) -> None:
        held = self._held
        while held and held[0][0] <= now:
            held.popleft()
            self._count_drop()

    def _flush_some(self, limit: int | None) -> None:
        """Send held records in order, at most *limit* of them; caller holds the lock."""
        held = self._held
        now = time.monotonic()
        sent = 0
        while held and (limit is None or sent < limit):
            expires, topic, body, fields = held.popleft()
            if expires <= now:
                self._count_drop()
                continue
            extension = self._encode(fields) if fields is not None else None
            self._send(topic, body, extension)
            sent += 1

    def flush(self) -> None:
        """Send held records if a collector is subscribed; never waits for one."""
        with cast("threading.RLock", self.lock):  # created by Handler.__init__
            if not self._usable or self._needs_open or not self._held:
                return
            if self._detects:
                self._poll_subscriptions()
            if self._subscribed:
                self._flush_some(None)

    def close(self) -> None:
        """Flush held and queued records within ``linger`` seconds, then close the socket."""
        with cast("threading.RLock", self.lock):  # created by Handler.__init__
            if self._closed:
                return
            self._closed = True
            if self._finalizer is not None:
                self._finalizer.cancel()
                self._finalizer = None
            if self._usable and not self._needs_open:
                try:
                    self._drain()
                except Exception:  # noqa: BLE001 - closing at exit must not raise either
                    self.handleError(_PLAIN_RECORD)
            # Later records take the slow path, which counts them as dropped.
            self._usable = False
            self._subscribed = False
        _HANDLERS.discard(self)
        logging.Handler.close(self)

    def _drain(self) -> None:
        deadline = time.monotonic() + self._linger
        if _exit_deadline is not None:
            # At exit every handler already waited, together, until this deadline.
            deadline = min(deadline, _exit_deadline)
        self._send_held(deadline)
        for _ in range(len(self._held)):
            self._count_drop()
        self._held.clear()
        if not self._owns_socket:
            return
        remaining = deadline - time.monotonic()
        if _exit_deadline is not None:
            # A short floor at exit: a record logged after the joint wait (by a later
            # atexit hook) still gets to leave; term() returns at once if none is queued.
            remaining = max(remaining, min(_CLOSE_FLOOR, self._linger))
        linger_ms = max(int(remaining * 1000), 0)
        self.socket.close(linger=linger_ms)
        if self._owns_context:
            # term() returns once queued records are on the wire, or after the linger.
            started = time.monotonic()
            self.ctx.term()
            if self._subscribed and linger_ms and time.monotonic() - started >= linger_ms / 1000 - 0.01:
                self._warn_linger_ran_out()

    def _warn_linger_ran_out(self) -> None:
        # ZeroMQ discards what is still queued when the linger runs out and says
        # nothing, and the collector cannot see a gap at the very end: say it here.
        if sys.stderr:
            sys.stderr.write(
                f"zlogcollect: pid {os.getpid()} ({self.root_topic!r}): close() ran out of its "
                f"{self._linger:g} s linger with records possibly still queued for the collector; "
                "ZeroMQ discards those, uncounted (a slow or stopped collector; a longer linger "
                "gives it more time)\n"
            )

    def _send_held(self, deadline: float) -> None:
        """Wait until *deadline* for a collector if records are held, then send them."""
        if self._held and self._detects:
            self._poll_subscriptions()
            while not self._subscribed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.socket.poll(max(int(remaining * 1000), 1), zmq.POLLIN)
                self._poll_subscriptions()
        if self._subscribed:
            self._flush_some(None)

    def _settle(self, deadline: float) -> None:
        """At exit, before close(): wait for a collector and send held records, socket left open."""
        with cast("threading.RLock", self.lock):  # created by Handler.__init__
            if self._closed or not self._usable or self._needs_open:
                return
            try:
                self._send_held(deadline)
            except Exception:  # noqa: BLE001 - exit must not raise either; close() tries again
                self.handleError(_PLAIN_RECORD)

    def handleError(self, record: logging.LogRecord) -> None:
        """Report a failure on stderr at most once a minute (never through logging)."""
        now = time.monotonic()
        if now < self._error_quiet_until:
            self._errors_suppressed += 1
            return
        self._error_quiet_until = now + _ERROR_QUIET_SECONDS
        if self._errors_suppressed and logging.raiseExceptions and sys.stderr:
            sys.stderr.write(f"--- zlogcollect: {self._errors_suppressed} more logging errors suppressed\n")
        self._errors_suppressed = 0
        super().handleError(record)

    @property
    def stats(self) -> dict[str, int]:
        """Counters since this publisher started: records attempted, dropped, held now."""
        return {"seq": self._seq, "dropped": self._dropped_total, "held": len(self._held)}

    @property
    def publisher_id(self) -> str:
        """The ``pub`` id the collector sees; a new one after fork."""
        return self._pub


def _fit_topic(root: str, level: str, subtopic: str) -> bytes:
    """The topic, its subtopic (then its root) cut so it stays within the collector's limit."""
    topic = build_topic(root, level, subtopic).encode("utf-8", "replace")
    if len(topic) <= MAX_TOPIC_BYTES:
        return topic
    room = MAX_TOPIC_BYTES - len(level.encode()) - 2
    root_bytes = root.encode("utf-8", "replace")[: max(room // 2, room - len(subtopic.encode()))]
    root = root_bytes.decode("utf-8", "ignore")
    sub_room = room - len(root.encode())
    subtopic = subtopic.encode("utf-8", "replace")[: max(sub_room, 0)].decode("utf-8", "ignore")
    return build_topic(root.rstrip("."), level, subtopic.strip(".")).encode("utf-8", "replace")


def _cut(text: bytes, limit: int) -> bytes:
    """*text* cut to at most *limit* bytes on a character boundary, with a note of what was cut."""
    kept = text[: max(limit - 120, 0)].decode("utf-8", "ignore").encode()
    note = f"\n[zlogcollect cut {len(text) - len(kept):,} bytes here: the record was over the size limit]"
    return kept + note.encode()


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


def _close_handler(ref: weakref.ref[ZLogHandler]) -> None:
    # A multiprocessing child's exit runs one finalizer per handler, one after the
    # other: the first lets them all wait for their collector at once.
    handler = ref()
    if handler is not None:
        _settle_all()
        handler.close()


def _settle_all() -> None:
    """At exit: every open handler waits for its collector and sends what it holds, all at once.

    Registered with atexit after logging's own hook, so it runs just before
    ``logging.shutdown()`` (atexit runs last-in first-out), which then closes the
    handlers one by one as always but finds the waiting done: each close() ends
    by this shared deadline, so one linger bounds the exit however many handlers
    there are. The sockets stay open, so records logged by atexit hooks that run
    later still go out.
    """
    global _exit_deadline
    if _exit_deadline is not None:
        return
    handlers = [h for h in list(_HANDLERS) if not h._closed]
    if not handlers:
        return
    start = time.monotonic()
    deadline = _exit_deadline = start + max(h._linger for h in handlers)
    if _threads_are_greenlets():
        # In turn, but against deadlines fixed now: still one linger in all.
        for handler in handlers:
            handler._settle(start + handler._linger)
        return
    threads = []
    for handler in handlers:
        own = start + handler._linger
        thread = threading.Thread(target=handler._settle, args=(own,), name="zlogcollect-exit", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads this late: settle it here instead
            handler._settle(own)
            continue
        threads.append(thread)
    for thread in threads:
        # Bounded even if a handler's lock is held elsewhere: its close() then
        # waits for that lock, as logging.shutdown() always did.
        thread.join(max(deadline + _CLOSE_MARGIN - time.monotonic(), 0.0))


def _threads_are_greenlets() -> bool:
    # Under gevent's monkey patching threads are greenlets, and the blocking zmq
    # calls would run them in turn anyway; settle in this thread then.
    monkey = sys.modules.get("gevent.monkey")
    is_patched = getattr(monkey, "is_module_patched", None)
    return bool(is_patched is not None and is_patched("threading"))


atexit.register(_settle_all)


def _flush_held(ref: weakref.ref[ZLogHandler]) -> None:
    """Thread body: wait for the collector's subscription, then send held records.

    Runs only while records are held; polls under the handler's lock because zmq
    sockets must not be used from two threads at once.
    """
    delay = 0.001
    while True:
        handler = ref()
        if handler is None:
            return
        with cast("threading.RLock", handler.lock):
            if handler._closed or handler._flusher is not threading.current_thread():
                return
            if not handler._held:
                handler._flusher = None
                return
            if handler._detects:
                handler._poll_subscriptions()
            if handler._subscribed:
                handler._flush_some(_CHUNK)
                delay = 0.0
            else:
                handler._expire(time.monotonic())
                delay = min(max(delay * 2, 0.001), 0.05)
        del handler
        time.sleep(delay)


def setup(
    endpoint: str | Sequence[str] = DEFAULT_ENDPOINT,
    app: str | None = None,
    level: int | str = logging.INFO,
    **options: Any,
) -> ZLogHandler:
    """Send the root logger's records to a collector; returns the handler.

    Calling it again replaces the handler an earlier call installed.

    Example::

        import logging, zlogcollect
        zlogcollect.setup("tcp://collector:5558", app="billing")
        logging.info("started")

    Args:
        endpoint: collector endpoint(s) to connect to.
        app: root topic; defaults to the script name.
        level: root logger level.
        **options: further :class:`ZLogHandler` keyword arguments.
    """
    handler = ZLogHandler(endpoint, app=app, **options)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_zlogcollect_setup", False)]:
        root.removeHandler(old)
        old.close()
    handler._zlogcollect_setup = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler
