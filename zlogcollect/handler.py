"""The app side: a logging handler that publishes records to a zlogcollect collector.

``ZLogHandler`` is the glue over three parts: ``encode`` (record → frames),
``hold`` (records held until a collector subscribes) and ``publisher`` (the
socket, its subscriptions, fork and close). The exit machinery that lets all
handlers of a process wait for their collectors together lives here too.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket as _net
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from copy import copy
from functools import partial
from typing import Any, Final, cast

import zmq
from zmq.log.handlers import PUBHandler

from zlogcollect.delivery import LIVE, RECHECK_EVERY, Delivery, State
from zlogcollect.encode import DEFAULT_FORMATTER, PLAIN_RECORD, Encoder, cut
from zlogcollect.helpers import Throttle
from zlogcollect.keys import client_curve
from zlogcollect.publisher import Publisher
from zlogcollect.wire import MAX_RECORD_BYTES, TOPIC_DELIM

__all__ = ["DEFAULT_ENDPOINT", "ZLogHandler", "default_app_name", "setup"]

DEFAULT_ENDPOINT: Final = "tcp://127.0.0.1:5558"
"""Where ``setup()`` connects when no endpoint is given (the port of the original recipe)."""

_NOBLOCK: Final = zmq.NOBLOCK
_MORE: Final = zmq.SNDMORE | zmq.NOBLOCK
_SENDING: Final = State.SENDING
_RECHECK_MASK: Final = RECHECK_EVERY - 1
_ERROR_QUIET_SECONDS: Final = 60.0
_CLOSE_MARGIN: Final = 1.0  # seconds beyond the shared exit deadline that exit waits for its threads
_CLOSE_FLOOR: Final = 0.2  # seconds a socket lingers at least, for records sent after the exit deadline
_WATCH_EVERY: Final = 0.1  # seconds between the watcher's looks for a collector that came back

_HANDLERS: weakref.WeakSet[ZLogHandler] = weakref.WeakSet()
# The handlers setup() installed: a later call replaces them.
_SET_UP: weakref.WeakSet[ZLogHandler] = weakref.WeakSet()
# Set at exit once every handler waited for its collector: close() waits no longer.
_exit_deadline: float | None = None


def _after_fork_in_child() -> None:
    global _exit_deadline
    _exit_deadline = None
    for handler in list(_HANDLERS):
        handler._after_fork()  # noqa: SLF001 - the class's own hook; os.register_at_fork takes one function for all


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


class ZLogHandler(PUBHandler):
    """Publish log records to a collector: connect, hold until subscribed, count every loss.

    A drop-in for ``zmq.log.handlers.PUBHandler`` that fixes what makes the stock class
    lose records or crash:

    * it *connects* to the collector (``bind=True`` restores the stock behaviour);
      given several endpoints it connects to each with a socket of its own, and every
      record goes to every collector (each with its own hold, high-water mark and drops);
    * it keeps the last records it sent (``replay``, ``replay_age``, ``replay_bytes``)
      and sends them again, byte for byte, when a collector subscribes again after
      a restart: the collector drops those it already has by their ``pub`` and ``seq``;
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
            or an existing socket; defaults to ``DEFAULT_ENDPOINT``. Several endpoints
            to connect to get a socket each (every record goes to every collector, with
            the same ``pub`` and ``seq``; :attr:`collector_stats` has their counters). An XPUB socket gets the hold buffer;
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
        replay: most records kept to send again when a collector re-subscribes (0: none;
            only structured records are kept, the collector needs their ``pub`` and ``seq``).
        replay_age: seconds a sent record stays in the replay window.
        replay_bytes: most bytes of frames in the replay window.
        sndhwm: records queued in zmq per collector before new ones are dropped.
        max_record_bytes: the collector's ``--max-record-bytes``: a longer message,
            traceback or set of extra fields is cut to fit, with a note saying how much
            was cut (a collector refuses an oversized frame by dropping the connection).
        curve_server_key: the collector's CURVE public key: its ``.key`` file (made by
            ``zlogcollect keygen``), or the 40-character Z85 text. Give it together with
            ``curve_client_cert``; the connection is then authenticated and encrypted.
        curve_client_cert: this app's ``.key_secret`` file (its public key must be in the
            collector's allow-list). With a wrong server key, or a key the collector does
            not allow, no subscription arrives: records are held, then dropped and counted,
            as when the collector is absent. A missing or malformed file, or one of the two
            without the other, is a ``ValueError`` here (its message never shows the secret).
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
        replay: int = 5000,
        replay_age: float = 10.0,
        replay_bytes: int = 16 * 2**20,
        sndhwm: int = 100_000,
        max_record_bytes: int = MAX_RECORD_BYTES,
        curve_server_key: str | os.PathLike[str] | bytes | None = None,
        curve_client_cert: str | os.PathLike[str] | None = None,
    ) -> None:
        if endpoint is None:
            endpoint = DEFAULT_ENDPOINT if interface_or_socket is None else interface_or_socket
        elif interface_or_socket is not None:
            raise TypeError("ZLogHandler takes endpoint or interface_or_socket (its alias), not both")
        curve = client_curve(curve_server_key, curve_client_cert)  # before anything is opened
        # PUBHandler.__init__ is not called: it binds, and installs the per-level
        # formatters that put "LEVEL file:line -" and "- None" into the text.
        logging.Handler.__init__(self)
        self._encoder = Encoder("", _net.gethostname(), "", max_record_bytes)
        self.root_topic = root_topic if root_topic is not None else (app or default_app_name())
        self.formatters = dict(formatters or {})
        self.structured = structured
        self._linger = max(float(linger), 0.0)
        self._errors = Throttle(1, _ERROR_QUIET_SECONDS)
        self._finalizer: Any = None
        # Opened now rather than at the first record: the connection and the
        # collector's subscription then race the app's start-up, not its first log.
        target = (endpoint,) if isinstance(endpoint, str) else endpoint
        # Connecting to several collectors: a socket each, so that each has its own
        # subscription, hold, high-water mark and replay. Bound, one socket serves all
        # its subscribers as the stock class does (a collector may connect to any of them).
        if isinstance(target, zmq.Socket) or bind or len(target) < 2:
            targets: list[Sequence[str] | zmq.Socket[Any]] = [target]
        else:
            targets = [(one,) for one in dict.fromkeys(target)]
        publishers: list[Publisher] = []
        try:
            for one in targets:
                publishers.append(Publisher(one, context, bind=bind, sndhwm=sndhwm, curve=curve))
        except BaseException:
            for opened_one in publishers:
                opened_one.close(0.0)
            raise
        lock = cast("threading.RLock", self.lock)  # created by Handler.__init__
        self._replay = max(int(replay), 0)
        bounds = (self._replay, float(replay_age), max(int(replay_bytes), 0))
        # A weak reference: the delivery must not keep the handler alive (nor its flush thread).
        opened = partial(_call_weakly, weakref.WeakMethod(self._opened))
        self._deliveries = tuple(
            Delivery(
                one,
                self._encoder,
                lock,
                hold,
                hold_timeout,
                opened if n == 0 else _nothing,
                replay=bounds,
            )
            for n, one in enumerate(publishers)
        )
        # Every delivery numbers with the first one's seq and carries the same pub (one encoder).
        self._delivery = self._deliveries[0]
        self._fan_out = len(self._deliveries) > 1
        self._watcher: threading.Thread | None = None
        for delivery in self._deliveries:
            delivery.opened()
        _HANDLERS.add(self)

    def _opened(self) -> None:
        """The socket is (re)opened: follow it, and register for a multiprocessing exit."""
        # PUBHandler's public attributes follow the socket (a fork child opens its own).
        self.socket, self.ctx = self._delivery.socket, self._delivery.publisher.ctx
        # multiprocessing children end with os._exit(): atexit and logging.shutdown()
        # never run there, but multiprocessing's own finalizers do. Registering one
        # only when the app already imported multiprocessing keeps imports light.
        util = sys.modules.get("multiprocessing.util")
        if self._delivery.publisher.owns_socket and util is not None and self._finalizer is None:
            ref = weakref.ref(self)
            self._finalizer = util.Finalize(None, _close_handler, args=(ref,), exitpriority=5)
        self._start_watcher()

    def _start_watcher(self) -> None:
        """Start the thread that notices a returning collector while the app logs nothing."""
        if self._replay == 0 or (self._watcher is not None and self._watcher.is_alive()):
            return
        if not any(d.window is not None for d in self._deliveries):
            return
        watcher = threading.Thread(
            target=_watch, args=(weakref.ref(self),), name="zlogcollect-replay", daemon=True
        )
        self._watcher = watcher  # before start(): the thread checks that it is the handler's own
        try:
            watcher.start()
        except RuntimeError:  # interpreter shutting down: records logged still check every 256
            self._watcher = None

    def _watch_once(self) -> bool:
        """The watcher's look, under the lock: hear (re)subscriptions, replay; False once it must end."""
        with self._delivery.lock:
            if self._watcher is not threading.current_thread():
                return False  # close(), or a fork child that started its own
            for delivery in self._deliveries:
                if delivery.state in LIVE:
                    delivery.poll()  # a FLUSHING state it finds is the hold's flusher thread's to serve
            return True

    def _after_fork(self) -> None:
        self._finalizer = None
        self._watcher = None  # the parent's thread is not in the child; the child's socket starts its own
        for delivery in self._deliveries:
            delivery.after_fork()

    def setRootTopic(self, root_topic: str) -> None:
        """Set the first topic component (the app's name on the collector)."""
        super().setRootTopic(root_topic)
        self._encoder.set_root(self.root_topic)

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
                return DEFAULT_FORMATTER.format(record)
            # What DEFAULT_FORMATTER does for a plain record, without two calls.
            text: str = record.getMessage()
            record.message = text
            return text
        return fmt.format(record)

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter *record*, then emit it under the handler's lock; what ``Handler.handle`` does.

        Without filters (the usual case) this skips three method calls per record.
        """
        if self.filters:
            return super().handle(record)
        with self.lock:  # type: ignore[union-attr] # created by Handler.__init__, never None here
            self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # noqa: C901 - the per-record hot path, kept in one frame on purpose
        """Publish one record; never blocks on the network and never raises."""
        out = self._delivery
        seq = -1
        try:
            encoder = self._encoder
            msg = record.msg
            text = msg if msg.__class__ is str else str(msg)
            body = None
            if TOPIC_DELIM in text:
                # As PUBHandler does: the part of msg before "::" is the subtopic
                # (split once per format string and level: a call site's topic and message).
                levelname = record.levelname
                topic, rest = encoder.sites.get((levelname, text)) or encoder.site(levelname, text)
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
                topic = encoder.topics.get(record.levelname) or encoder.topic(record.levelname, "")
            if body is None:
                try:
                    body = self.format(record).encode()
                except UnicodeEncodeError:
                    body = self.format(record).encode("utf-8", "backslashreplace")
            if len(body) > encoder.max_body:
                body = cut(body, encoder.max_body)
            # The sequence number is taken after format(): a record logged from inside
            # a message argument's __str__ goes out first and must not get a lower seq.
            seq = out.seq
            out.seq = seq + 1
            if not seq & _RECHECK_MASK:  # now and then, look for (un)subscriptions
                out.poll()
            if self._fan_out:
                self._emit_to_all(record, seq, topic, body)
                return
            if out.state is not _SENDING:
                out.emit_slow(record, seq, topic, body, self.structured)
                return
            extension = None
            if self.structured:
                extension = None if out.dropped else encoder.fast_extension(record, seq)
                if extension is None:
                    extension = encoder.extension(encoder.fields(record, seq), out.dropped)
            # Delivery.send() inlined: this is the path every record takes.
            send = out.send_frame
            sock = out.socket
            send(sock, topic, _MORE)
            if extension is None:
                send(sock, body, _NOBLOCK)
            else:
                send(sock, body, _MORE)
                send(sock, extension, _NOBLOCK)
                out.dropped = 0  # the count just travelled with this record
                window = out.window
                if window is not None:
                    window.add(topic, body, extension)
        except zmq.Again:  # the queue to the collector is full (SNDHWM): count, go on
            out.count_drops(1)
        except RecursionError:  # as logging.StreamHandler does: let the app see it
            raise
        except Exception:  # noqa: BLE001 - emit must never raise into the app (logging's rule)
            if seq < 0:
                out.seq += 1  # the record was attempted: leave its gap in the sequence
            out.count_drops(1)
            self.handleError(record)

    def _emit_to_all(self, record: logging.LogRecord, seq: int, topic: bytes, body: bytes) -> None:
        """Send one record (number *seq*) to every collector, each through its own delivery.

        Each gets the same ``pub`` and ``seq`` and its own ``dropped``; a full queue or
        an error at one collector is counted there and does not keep the others from it.
        """
        structured = self.structured
        encoder = self._encoder
        # Built once for every collector that has no drops to announce (the usual case).
        fast = encoder.fast_extension(record, seq) if structured else None
        fields = None
        first = self._delivery
        for out in self._deliveries:
            try:
                if out is not first:
                    out.seq = seq + 1  # the attempts, for its stats
                    if not seq & _RECHECK_MASK:
                        out.poll()
                if out.state is not _SENDING:
                    out.emit_slow(record, seq, topic, body, structured)
                elif not structured:
                    out.send_built(topic, body, None)
                elif fast is not None and not out.dropped:
                    out.send_built(topic, body, fast)
                else:
                    if fields is None:
                        fields = encoder.fields(record, seq)
                    out.send(topic, body, fields)
            except RecursionError:
                raise
            except Exception:  # noqa: BLE001 - emit must never raise into the app (logging's rule)
                out.count_drops(1)
                self.handleError(record)

    def flush(self) -> None:
        """Send held records if a collector is subscribed; never waits for one."""
        with self._delivery.lock:
            for delivery in self._deliveries:
                delivery.flush()

    def close(self) -> None:
        """Flush held and queued records within ``linger`` seconds, then close the socket."""
        with self._delivery.lock:
            if self._delivery.state is State.CLOSED:
                return
            self._watcher = None  # it sees this at its next look and ends
            if self._finalizer is not None:
                self._finalizer.cancel()
                self._finalizer = None
            # One deadline for all: several collectors are waited for together, not in turn.
            deadline, floor = _close_deadline(self._linger)
            for out in self._deliveries:
                if out.state in LIVE:
                    try:
                        out.send_held(deadline)
                    except Exception:  # noqa: BLE001 - closing at exit must not raise either
                        self.handleError(PLAIN_RECORD)
            for out in self._deliveries:
                if out.state in LIVE:
                    try:
                        if out.drain(deadline, floor):
                            _warn_linger_ran_out(self.root_topic, self._linger)
                    except Exception:  # noqa: BLE001 - closing at exit must not raise either
                        self.handleError(PLAIN_RECORD)
                out.state = State.CLOSED  # later records take the slow path, which counts them
        _HANDLERS.discard(self)
        logging.Handler.close(self)

    def _settle(self, deadline: float) -> None:
        """At exit, before close(): wait for a collector and send held records, socket left open."""
        with self._delivery.lock:
            for delivery in self._deliveries:
                if delivery.state in LIVE:
                    try:
                        delivery.send_held(deadline)
                    except Exception:  # noqa: BLE001 - exit must not raise either; close() tries again
                        self.handleError(PLAIN_RECORD)

    def handleError(self, record: logging.LogRecord) -> None:
        """Report a failure on stderr at most once a minute (never through logging)."""
        if not self._errors.allow():
            return
        suppressed = self._errors.take_held()
        if suppressed and logging.raiseExceptions and sys.stderr:
            sys.stderr.write(f"--- zlogcollect: {suppressed} more logging errors suppressed\n")
        super().handleError(record)

    @property
    def stats(self) -> dict[str, int]:
        """Counters since this publisher started: records attempted, dropped, held now, replayed.

        With several collectors, ``seq`` is the records attempted and the other
        counters are totals over the collectors (see :attr:`collector_stats`).
        """
        with self._delivery.lock:
            views = [delivery.stats for delivery in self._deliveries]
        total = dict(views[0])
        for view in views[1:]:
            for name, value in view.items():
                if name != "seq":
                    total[name] += value
        return total

    @property
    def collector_stats(self) -> dict[str, dict[str, int]]:
        """The counters of :attr:`stats` per collector endpoint (one entry for a socket given or bound)."""
        with self._delivery.lock:
            return {
                ",".join(delivery.publisher.endpoints) or "socket": delivery.stats
                for delivery in self._deliveries
            }

    @property
    def publisher_id(self) -> str:
        """The ``pub`` id the collector sees; a new one after fork."""
        return self._encoder.pub


def _nothing() -> None:
    """The deliveries after the first have nothing to tell the handler when their socket opens."""


def _watch(ref: weakref.ref[ZLogHandler]) -> None:
    """Thread body: every ``_WATCH_EVERY`` seconds, let the handler hear a collector that came back.

    Without it, a returning collector's subscription would wait for the app's next
    records (up to 256 of them) to be read. Holds only a weak reference between
    looks, so the handler can be collected; ends at close(), collection or in a fork
    child (which starts its own). An error is reported and the watch goes on.
    """
    while True:
        handler = ref()
        if handler is None:
            return
        try:
            if not handler._watch_once():  # noqa: SLF001 - the handler's own thread
                return
        except Exception:  # noqa: BLE001 - never end silently: say it (throttled) and keep watching
            try:
                handler.handleError(PLAIN_RECORD)
            except Exception:  # noqa: BLE001 - stderr itself failing must not end the watch
                pass
        del handler
        time.sleep(_WATCH_EVERY)


def _call_weakly(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    """Call *method* unless its object is gone (a callback that does not keep it alive)."""
    call = method()
    if call is not None:
        call()


def _warn_linger_ran_out(root: str, linger: float) -> None:
    # ZeroMQ discards what is still queued when the linger runs out and says
    # nothing, and the collector cannot see a gap at the very end: say it here.
    if sys.stderr:
        sys.stderr.write(
            f"zlogcollect: pid {os.getpid()} ({root!r}): close() ran out of its "
            f"{linger:g} s linger with records possibly still queued for the collector; "
            "ZeroMQ discards those, uncounted (a slow or stopped collector; a longer linger "
            "gives it more time)\n"
        )


def _close_deadline(linger: float) -> tuple[float, float | None]:
    """When close() stops waiting, and the least linger its socket gets (at exit only)."""
    deadline = time.monotonic() + linger
    if _exit_deadline is None:
        return deadline, None
    # At exit every handler already waited, together, until the shared deadline; a
    # short floor lets a record logged after it (by a later atexit hook) still leave.
    return min(deadline, _exit_deadline), min(_CLOSE_FLOOR, linger)


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
    # The handlers' own exit step, reached from here because atexit and multiprocessing's
    # finalizers take one function for all of them: each open one's settle step and linger.
    steps = [(h._settle, h._linger) for h in list(_HANDLERS) if h._delivery.state is not State.CLOSED]  # noqa: SLF001 - the handlers' own exit step
    if not steps:
        return
    start = time.monotonic()
    deadline = _exit_deadline = start + max(linger for _, linger in steps)
    if _threads_are_greenlets():
        # In turn, but against deadlines fixed now: still one linger in all.
        for settle, linger in steps:
            settle(start + linger)
        return
    threads = []
    for settle, linger in steps:
        own = start + linger
        thread = threading.Thread(target=settle, args=(own,), name="zlogcollect-exit", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads this late: settle it here instead
            settle(own)
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
        **options: further :class:`ZLogHandler` keyword arguments (``linger``,
            ``curve_server_key`` and ``curve_client_cert``, ...).
    """
    handler = ZLogHandler(endpoint, app=app, **options)
    root = logging.getLogger()
    # isinstance first: an app's own handler may be unhashable, which a WeakSet lookup needs.
    for old in [h for h in root.handlers if isinstance(h, ZLogHandler) and h in _SET_UP]:
        root.removeHandler(old)
        old.close()
    _SET_UP.add(handler)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
