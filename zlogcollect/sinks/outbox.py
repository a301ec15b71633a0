"""The AMQP bridge's delivery ledger: what waits, what is in flight, and how each record ended.

Pure: no pika and no gevent. The sink feeds it records and broker events
(confirms, nacks, returns, a lost channel); every record put in ends as
delivered, unroutable or dropped with a reason in ``stats``, or is still
:attr:`Outbox.pending`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Final

from zlogcollect.sinks.amqp_message import Message
from zlogcollect.stats import Stats

WINDOW: Final = 256
"""Unconfirmed messages in flight; measured: ~11k msg/s under gevent, against 1-2k with one round trip each."""

OVERFLOW_MODES: Final = ("drop-oldest", "drop-newest")


class Outbox:
    """A bounded FIFO of messages to send, and the window of those sent but not yet confirmed.

    Delivery tags are the broker's per channel: 1, 2, 3... in the order of
    :meth:`take`. :meth:`requeue` (the channel is gone) puts every
    unconfirmed message back at the head, oldest first, so they go out again
    ahead of newer records and tags start over at 1 on the next channel.
    """

    def __init__(
        self, stats: Stats, capacity: int, overflow: str = "drop-oldest", window: int = WINDOW
    ) -> None:
        if overflow not in OVERFLOW_MODES:
            raise ValueError(f"overflow {overflow!r} is not one of {', '.join(OVERFLOW_MODES)}")
        self._stats = stats
        self._capacity = capacity
        self._drop_newest = overflow == "drop-newest"
        self._window = window
        self._queue: deque[Message] = deque()
        self._unconfirmed: OrderedDict[int, Message] = OrderedDict()
        self._returned: set[str] = set()
        self._tag = 0

    @property
    def pending(self) -> int:
        """Messages queued or awaiting a confirm."""
        return len(self._queue) + len(self._unconfirmed)

    @property
    def queued(self) -> int:
        """Messages not yet sent on the current channel."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet confirmed."""
        return len(self._unconfirmed)

    @property
    def ready(self) -> bool:
        """True if a message is queued and the window has room for it."""
        return bool(self._queue) and len(self._unconfirmed) < self._window

    def put(self, message: Message) -> None:
        """Queue *message*; when the FIFO is full, drop (and count) the oldest or this one."""
        if len(self._queue) >= self._capacity:
            self.drop(1, "amqp_buffer_full")
            if self._drop_newest:
                return
            self._queue.popleft()
        self._queue.append(message)

    def take(self) -> Message:
        """The head message, now in flight under the next delivery tag (call only when :attr:`ready`)."""
        message = self._queue.popleft()
        self._stats.amqp["published"] += 1
        self._tag += 1
        self._unconfirmed[self._tag] = message
        return message

    def returned(self, message_id: str) -> None:
        """The broker returned *message_id* (no queue took it); its confirm counts it as unroutable."""
        self._returned.add(message_id)

    def ack(self, tag: int, multiple: bool = False) -> None:
        """The broker took the message with *tag* (and every earlier one, if *multiple*)."""
        stats = self._stats.amqp
        for message in self._settle(tag, multiple):
            if message.message_id in self._returned:
                self._returned.discard(message.message_id)
                stats["unroutable"] += 1
                self._stats.dropped["amqp_unroutable"] += 1
            else:
                stats["delivered"] += 1

    def nack(self, tag: int, multiple: bool = False) -> int:
        """The broker could not take them: back at the head of the FIFO, in order; returns how many."""
        requeue = list(self._settle(tag, multiple))
        self._stats.amqp["nacked"] += len(requeue)
        self._queue.extendleft(reversed(requeue))
        return len(requeue)

    def _settle(self, tag: int, multiple: bool) -> Iterator[Message]:
        """Take the messages a confirm or nack of *tag* settles out of the window; unknown tags settle nothing."""
        unconfirmed = self._unconfirmed
        if not multiple:
            message = unconfirmed.pop(tag, None)
            if message is not None:
                yield message
            return
        # Tags are ascending in the window: settle from its oldest up to *tag*.
        while unconfirmed and next(iter(unconfirmed)) <= tag:
            yield unconfirmed.popitem(last=False)[1]

    def requeue(self) -> int:
        """The channel is gone: unconfirmed messages go back to the head, oldest first; returns how many."""
        count = len(self._unconfirmed)
        if count:
            self._stats.amqp["resent"] += count
            self._queue.extendleft(reversed(self._unconfirmed.values()))
            self._unconfirmed.clear()
        self._returned.clear()
        self._tag = 0
        return count

    def drop(self, count: int, reason: str) -> None:
        """Count *count* records as dropped for *reason* (``amqp_...``)."""
        self._stats.amqp["dropped"] += count
        self._stats.dropped[reason] += count

    def drop_all(self, reason: str) -> int:
        """Give up every pending message, counting it as dropped for *reason*; returns how many."""
        count = self.pending
        if count:
            self.drop(count, reason)
            self._queue.clear()
            self._unconfirmed.clear()
        self._returned.clear()
        return count
