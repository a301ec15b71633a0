"""``collect --from-amqp``: the writer. Consume the bridges' messages, write them as the collector would, then ack.

One pika ``GeventConnection`` (a :class:`ConsumerLink`) consumes every queue on
one channel with a bounded prefetch; its callback only appends deliveries to an
inbox. The daemon's loop (:meth:`AmqpWriter.serve`) takes the inbox in batches:
each message's ``zlog`` key (docs/WIRE.md) becomes the :class:`Record` the
ZeroMQ collector parsed, so the file sink writes the same lines; a message that
is not the bridge's goes to the quarantine file. After each batch the lines are
written to the files, then the batch's message ids are appended to the journal
in ``--dir``, then, every half prefetch or :data:`ACK_INTERVAL`, one
``basic.ack(multiple)`` acknowledges everything up to the last written delivery.
A writer killed at any moment loses nothing: what it had not acked comes again,
and the ids already written (remembered in a :class:`SeenWindow` that the
journal restores) are dropped as duplicates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import gevent
import gevent.event
import pika
import pika.exceptions

from zlogcollect.config import node_urls, redact
from zlogcollect.helpers import JSON_ENCODER, Backoff, Throttle, atomic_write
from zlogcollect.seen import SeenWindow, journal_lines, journalable, parse_journal
from zlogcollect.sinks.amqp_link import (
    CONNECT_ERRORS,
    AmqpSettings,
    AmqpSetupError,
    Link,
    connection_parameters,
    describe,
)
from zlogcollect.sinks.amqp_message import BodyError, record_from_body
from zlogcollect.sinks.files import FileSink
from zlogcollect.stats import Stats
from zlogcollect.wire import escape_text
from zlogcollect.writeahead import PlannedWrite, records_written, writes_complete

log = logging.getLogger("zlogcollect.writer")

JOURNAL_FILE: Final = "_seen.journal"
"""The ids of the messages written, one a line, in --dir (the window of duplicates kept across restarts)."""
MAX_INTENT_BYTES: Final = 4 * 1024 * 1024
"""A write-ahead entry's limit (ids of at most 255 characters; a prefetch of thousands fits)."""
INTENT_FILE: Final = "_seen.intent"
"""The write-ahead entry beside it: the batch being written (its files' sizes before, its ids), one JSON
line rewritten in place before each write; read at start in case a kill came before the ids' journal line."""

ACK_INTERVAL: Final = 0.2
"""Seconds at most between a write and the ack that covers it (when fewer than half the prefetch came)."""

POISON: Final = "amqp_bad_message"
"""The quarantine reason of a message that is not a bridge's (counted in ``malformed_by``)."""


class WriterUnavailable(Exception):
    """No node of the broker could be reached at start-up (exit 69)."""


@dataclass(frozen=True)
class WriterSettings:
    """What ``collect --from-amqp`` was told, validated."""

    url: str
    queues: tuple[str, ...]
    nodes: tuple[str, ...] = ()
    prefetch: int = 1000
    window: int = 100_000
    heartbeat: int = 30
    connect_timeout: float = 10.0


class Delivery(NamedTuple):
    """One message as the consumer callback got it."""

    link: ConsumerLink
    tag: int
    message_id: str | None
    body: bytes


def _ignore(*_args: object) -> None:
    pass


class ConsumerLink(Link):
    """A :class:`Link` that consumes instead of publishing: QoS, the queues checked, one consumer each."""

    def __init__(
        self,
        settings: WriterSettings,
        params: pika.URLParameters,
        url: str,
        on_delivery: Callable[[Delivery], None],
        on_lost: Callable[[BaseException | None], None],
    ) -> None:
        super().__init__(AmqpSettings(url=url), params, _ignore, _ignore, on_lost, url=url)
        self._writer_settings = settings
        self._on_delivery = on_delivery
        self._consuming: Any = None

    def open(self, timeout: float) -> None:
        """Connect, set the prefetch, check every queue and consume it; raises one of :data:`CONNECT_ERRORS`.

        A missing queue (or one another consumer holds exclusively) is :class:`AmqpSetupError`.
        """
        deadline = time.monotonic() + timeout
        connection = self._connect(deadline)
        channel = self._await(deadline, lambda done: connection.channel(on_open_callback=done))
        channel.add_on_close_callback(self._channel_closed)
        channel.add_on_cancel_callback(self._cancelled)
        # Deliveries start at the first consume-ok, before the link is ready: they count.
        self._consuming = channel
        self._call(deadline, channel.basic_qos, prefetch_count=self._writer_settings.prefetch)
        for queue in self._writer_settings.queues:
            try:
                self._call(deadline, channel.queue_declare, queue=queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    raise AmqpSetupError(
                        f"queue {queue!r} does not exist on {redact(self._url)}"
                        " (declare it: zlogcollect topology declare, or the bridge's --declare-queue)"
                    ) from exc
                raise AmqpSetupError(f"queue {queue!r}: {exc.reply_text}") from exc
        for queue in self._writer_settings.queues:
            try:
                self._call(deadline, channel.basic_consume, queue=queue, on_message_callback=self._message)
            except pika.exceptions.ChannelClosedByBroker as exc:
                raise AmqpSetupError(f"cannot consume queue {queue!r}: {exc.reply_text}") from exc
        self.channel = channel

    def _message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if not self._closed and channel is self._consuming:
            self._on_delivery(Delivery(self, method.delivery_tag, properties.message_id, body))

    def _cancelled(self, _frame: Any) -> None:
        """The broker cancelled a consumer (its queue was deleted): start again from a new connection."""
        if not self._closed and self.channel is not None:
            log.warning("AMQP: the broker cancelled the consumer (queue deleted?); reconnecting")
            self.channel = None
            self._on_lost(None)
            if self._connection is not None and self._connection.is_open:
                self._connection.close()

    def ack(self, tag: int) -> None:
        """Acknowledge every delivery up to *tag* (basic.ack multiple)."""
        self.channel.basic_ack(delivery_tag=tag, multiple=True)


class Journal:
    """The append-only file of the ids written, compacted to the window once it holds twice as many."""

    def __init__(self, path: str, window: SeenWindow, mode: int = 0o640) -> None:
        self.path = path
        self.intent_path = os.path.join(os.path.dirname(path), INTENT_FILE)
        self._window = window
        self._mode = mode
        self._lines = 0
        self._bytes = 0
        """The journal file's size: a write-ahead entry records it, and counts only while it is the same."""
        self._fd: int | None = None
        self._intent_fd: int | None = None
        self.interrupted = False
        """The last run was killed in the middle of a batch's writes (set by :meth:`load`)."""

    def load(self) -> int:
        """Read the journal into the window (a missing file is an empty one); how many ids it held.

        A last line cut short by a kill (no newline) is cut off the file: it may be the start of a
        longer id, which must never count as written.
        """
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            data = b""
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            os.truncate(self.path, len(data))
        ids = parse_journal(data.decode("utf-8", "surrogateescape"))
        self._window.load(ids)
        self._lines = len(ids)
        self._bytes = len(data)
        self._open()  # now, not between a write and its journal line
        written = self._written_ahead()
        if written:
            log.info(
                "the last batch an earlier run wrote is on disk but its ids were not journalled: %d ids added",
                len(written),
            )
            self._window.load(written)
            self.append(written)
        with contextlib.suppress(OSError):
            os.unlink(self.intent_path)  # read once: what it said is journalled now, or void
        return len(ids) + len(written)

    def _written_ahead(self) -> list[str]:
        """The ids of the write-ahead entry if every write it planned is in the files, else none."""
        try:
            # Never through a link planted at its name (load removes the link itself after).
            fd = os.open(self.intent_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return []
        try:
            with os.fdopen(fd, "rb") as handle:
                line = handle.readline(MAX_INTENT_BYTES)
        except OSError:
            return []  # not a file (a directory planted there): no entry
        checksum, _, body = line.rstrip(b"\n").partition(b" ")
        if checksum != b"%08x" % zlib.crc32(body):
            return []  # cut by the kill (over an older entry): the writes had not started
        try:
            entry = json.loads(body.decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError):
            return []
        if not isinstance(entry, dict) or not isinstance(entry.get("ids"), list):
            return []
        if entry.get("journal") != self._bytes:
            return []  # the ids' journal line came after it (or a compaction): nothing to add
        directory = os.path.dirname(self.path)
        ids = [i for i in entry["ids"] if isinstance(i, str) and journalable(i)]
        complete = writes_complete(directory, entry.get("files"))
        if complete is not None:
            return ids if complete else []
        # Cut short: the records whose lines are whole everywhere, by the bridge's ids (pub:seq).
        written = records_written(directory, entry.get("files"))
        if written is None:
            self.interrupted = True
            log.warning(
                "an earlier run was killed while writing a batch, and the files cannot tell which of "
                "its records they hold (a file changed since?): those that come again may be written twice"
            )
            return []
        whole = {f"{pub}:{seq}" for pub, seqs in written.items() for seq in seqs}
        return [i for i in ids if i in whole]

    def intend(self, ids: list[str], plan: list[PlannedWrite]) -> None:
        """Before the file sink writes *plan*: rewrite the write-ahead entry (these *ids*, the plan).

        One ``pwrite`` at the start of the file: the entry's CRC-32, a space, the entry, a newline
        (a longer older one's tail after it is never read); a kill that cuts it leaves a line
        whose checksum does not match, which means the writes had not started.
        """
        entry = {"journal": self._bytes, "files": plan, "ids": ids}
        body = JSON_ENCODER.encode(entry).encode("utf-8", "surrogateescape")
        data = b"%08x %s\n" % (zlib.crc32(body), body)
        if len(data) > MAX_INTENT_BYTES:
            return  # a batch with a huge id list: no entry; its ids are journalled after the write
        fd = self._intent_fd
        if fd is None:
            fd = self._intent_fd = os.open(
                self.intent_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, self._mode
            )
        os.pwrite(fd, data, 0)

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self._mode)
        return self._fd

    @staticmethod
    def encode(ids: list[str]) -> bytes:
        """*ids* as the bytes :meth:`append` writes."""
        return journal_lines(ids).encode("utf-8", "surrogateescape")

    def append(self, ids: list[str], data: bytes | None = None) -> None:
        """Append *ids* in one write (*data*: their bytes from :meth:`encode`, made before the lines
        were written); then, once the file holds twice the window, compact it."""
        fd = self._open()
        view = memoryview(self.encode(ids) if data is None else data)
        while view:
            written = os.write(fd, view)
            self._bytes += written
            view = view[written:]
        self._lines += len(ids)
        if self._lines >= 2 * self._window.capacity:
            self.compact()

    def compact(self) -> None:
        """Replace the file by the window's ids, whole or not at all."""
        self.close()
        text = self._window.dump()
        atomic_write(self.path, text, mode=self._mode)
        self._lines = len(self._window)
        self._bytes = len(text.encode("utf-8", "surrogateescape"))
        self._open()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._intent_fd is not None:
            os.close(self._intent_fd)
            self._intent_fd = None


class AmqpWriter:
    """The writer's consumer side and its commit: records to the file sink, ids to the journal, then acks."""

    def __init__(
        self, settings: WriterSettings, sink: FileSink, stats: Stats, file_mode: int = 0o640
    ) -> None:
        self.settings = settings
        self._sink = sink
        self._stats = stats
        self._counts = stats.amqp
        self._urls = node_urls(settings.url, settings.nodes)
        self._params = [self._parameters(url) for url in self._urls]
        self._node = 0
        self._tried = False
        self._link: ConsumerLink | None = None
        self._inbox: list[Delivery] = []
        self._wake = gevent.event.Event()
        self._backoff = Backoff(0.1, 5.0, jitter=0.2)
        self.seen = SeenWindow(settings.window)
        self.journal = Journal(os.path.join(sink.directory, JOURNAL_FILE), self.seen, file_mode)
        self._unjournalled: list[str] = []
        self._complaints = Throttle(1, 10.0)  # a full disk fails every batch: one line per 10 s
        sink.before_write = self._intend
        sink.track_marks = True  # a write cut short is told record by record (the bridge's ids are pub:seq)
        self._ack_link: ConsumerLink | None = None
        self._ack_tag = 0
        """The last delivery handled (written, quarantined or dropped) and not acked yet, on _ack_link."""
        self._unacked = 0
        self._ack_due = 0.0
        self._half = max(settings.prefetch // 2, 1)

    def _parameters(self, url: str) -> pika.URLParameters:
        return connection_parameters(
            AmqpSettings(
                url=url, heartbeat=self.settings.heartbeat, connect_timeout=self.settings.connect_timeout
            ),
            url,
        )

    @property
    def url(self) -> str:
        """The node connected to (or tried) now."""
        return self._urls[self._node]

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.is_open and link.channel is not None

    # -- start-up -----------------------------------------------------------------------

    def start(self, stopping: Callable[[], bool]) -> None:
        """Load the journal and connect: every node is tried once.

        :class:`AmqpSetupError` for what only the operator can fix (credentials, vhost, a
        missing queue), :class:`WriterUnavailable` when no node answers.
        """
        loaded = self.journal.load()
        if self.journal.interrupted:
            self._stats.errors["interrupted_batch"] += 1
        if loaded:
            log.info("%d message ids of earlier runs read from %s", len(self.seen), self.journal.path)
        failures: list[str] = []
        for _ in self._urls:
            if stopping():
                return
            try:
                self._connect(self.settings.connect_timeout)
                return
            except AmqpSetupError:
                self._disconnect()
                raise
            except CONNECT_ERRORS as exc:
                self._disconnect()
                failures.append(f"{redact(self.url)}: {describe(exc)}")
        raise WriterUnavailable(f"from_amqp: cannot reach the broker ({'; '.join(failures)})")

    def _connect(self, timeout: float) -> ConsumerLink:
        self._disconnect()
        if self._tried and len(self._urls) > 1:
            self._node = (self._node + 1) % len(self._urls)
            self._counts["node_switches"] += 1
        self._tried = True
        link = self._link = ConsumerLink(
            self.settings, self._params[self._node], self._urls[self._node], self._deliver, self._lost
        )
        link.open(timeout)
        return link

    def _deliver(self, delivery: Delivery) -> None:
        self._inbox.append(delivery)
        self._wake.set()

    def _lost(self, reason: BaseException | None = None) -> None:
        if reason is not None:
            log.warning("AMQP: connection lost: %s; what was not acked comes again", describe(reason))
        self._wake.set()

    def _disconnect(self, graceful: bool = False) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close(graceful)

    # -- the loop -------------------------------------------------------------------------

    def serve(self, stopping: Callable[[], bool], between: Callable[[], None]) -> None:
        """Write what comes until *stopping()*; reconnect with backoff when the broker goes.

        *between* runs after every batch and wait (signal flags are acted on there).
        """
        while not stopping():
            link = self._link
            if link is None or not link.is_open or link.channel is None:
                self.commit(force_ack=False)
                if not self._reconnect(stopping, between):
                    continue
            self._wake.wait(ACK_INTERVAL / 2)
            self._wake.clear()
            self.take()
            self.commit()
            between()

    def _reconnect(self, stopping: Callable[[], bool], between: Callable[[], None]) -> bool:
        """Connect again, or count the failure and wait the backoff (acting on signals meanwhile)."""
        try:
            self._connect(self.settings.connect_timeout)
        except CONNECT_ERRORS as exc:
            self._disconnect()
            self._counts["connect_failures"] += 1
            if self._counts["connect_failures"] == 1 or self._backoff.current >= self._backoff.cap:
                log.warning("AMQP: cannot connect to %s: %s; retrying", redact(self.url), describe(exc))
            deadline = time.monotonic() + self._backoff.next()
            while time.monotonic() < deadline and not stopping():
                gevent.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
                between()
            return False
        self._backoff.reset()
        self._counts["reconnects"] += 1
        log.info("AMQP: consuming %s from %s again", " ".join(self.settings.queues), redact(self.url))
        return True

    def take(self) -> int:
        """Hand every delivery in the inbox to the file sink (or the quarantine); how many."""
        inbox, self._inbox = self._inbox, []
        counts, seen, sink = self._counts, self.seen, self._sink
        for delivery in inbox:
            counts["consumed"] += 1
            message_id = delivery.message_id
            if message_id is not None and message_id in seen:
                counts["duplicates"] += 1
            else:
                # The id first: a write that flushes early announces it with its line.
                tracked = message_id if message_id is not None and journalable(message_id) else None
                if tracked is not None:
                    seen.add(tracked)
                    self._unjournalled.append(tracked)
                try:
                    record = record_from_body(delivery.body)
                except BodyError as exc:
                    self._stats.malformed[POISON] += 1
                    sink.quarantine(
                        POISON, escape_text(f"{exc} (message_id {message_id})", 400), [delivery.body]
                    )
                except BaseException:
                    self._forget(tracked)
                    raise
                else:
                    self._stats.received += 1
                    try:
                        sink.write(record)
                    except BaseException:
                        self._forget(tracked)  # never journalled: it comes again
                        raise
            if delivery.link is not self._ack_link:
                self._ack_link, self._unacked = delivery.link, 0
            self._ack_tag = delivery.tag
            self._unacked += 1
        if inbox and not self._ack_due:
            self._ack_due = time.monotonic() + ACK_INTERVAL
        return len(inbox)

    def _forget(self, message_id: str | None) -> None:
        """Take back the id of a delivery whose line did not reach the sink (an unexpected error)."""
        if message_id is not None:
            self.seen.discard(message_id)
            if self._unjournalled and self._unjournalled[-1] == message_id:
                self._unjournalled.pop()

    def _intend(self, plan: list[PlannedWrite]) -> None:
        """The file sink's write-ahead hook: the ids whose lines this flush writes, and where."""
        if not self._unjournalled:
            return
        try:
            self.journal.intend(self._unjournalled, plan)
        except OSError as exc:
            self._stats.errors["journal"] += 1
            if self._complaints.allow("intent"):
                log.warning(
                    "cannot write %s (more within 10 s are only counted): %s",
                    self.journal.intent_path,
                    escape_text(str(exc)),
                )

    def commit(self, force_ack: bool = True) -> None:
        """Write the lines, journal their ids, and ack when half the prefetch is handled or the timer is due.

        Nothing is journalled or acked while a line is still pending (a file being rotated
        or a failed write being retried): the ack must not outrun the disk.
        """
        sink = self._sink
        ids = self._unjournalled
        # Encoded before the write, so that between the lines reaching the files and their ids
        # reaching the journal there is nothing but the two system calls (the residual window).
        data = self.journal.encode(ids) if ids else b""
        sink.flush()
        if sink.pending_lines:
            return
        if ids:
            try:
                self.journal.append(ids, data)
            except OSError as exc:
                self._stats.errors["journal"] += 1
                if self._complaints.allow("journal"):
                    log.warning(
                        "cannot append to %s (more within 10 s are only counted): %s",
                        self.journal.path,
                        escape_text(str(exc)),
                    )
            self._unjournalled = []
        if not self._unacked:
            return
        if force_ack and (self._unacked >= self._half or time.monotonic() >= self._ack_due):
            self._ack()

    def _ack(self) -> None:
        link = self._ack_link
        if link is not None and link is self._link and link.channel is not None:
            try:
                link.ack(self._ack_tag)
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("AMQP: ack failed: %s; the broker sends those again", describe(exc))
            else:
                self._counts["acked"] += self._unacked
                log.debug("acked %d up to delivery %d", self._unacked, self._ack_tag)
        self._unacked, self._ack_due = 0, 0.0

    def close(self) -> None:
        """Write and ack what was taken, then close the connection (unacked deliveries go back to the queue)."""
        self.take()
        self.commit(force_ack=False)
        if self._unacked and not self._sink.pending_lines:
            self._ack()
            gevent.sleep(0.05)  # let the hub write the ack before the close
        self._disconnect(graceful=True)
        self.journal.close()
