"""The AMQP bridge's delivery ledger, driven by hand as the broker would: no pika, no gevent."""

from __future__ import annotations

import pytest

from zlogcollect.sinks.amqp_message import Message
from zlogcollect.sinks.outbox import Outbox
from zlogcollect.stats import Stats


def message(n: int) -> Message:
    return Message(f"id{n}", "app.INFO", b"{}", 0)


def ids(messages: list[Message]) -> list[str]:
    return [m.message_id for m in messages]


def drain(outbox: Outbox) -> list[Message]:
    """Take everything the window lets out, as the publisher does."""
    sent = []
    while outbox.ready:
        sent.append(outbox.take())
    return sent


def balanced(stats: Stats, outbox: Outbox, put: int) -> bool:
    """Every message put in is delivered, unroutable, dropped or still pending (nacked ones come back)."""
    amqp = stats.amqp
    return put == amqp["delivered"] + amqp["unroutable"] + amqp["dropped"] + outbox.pending


def test_messages_go_out_in_order_up_to_the_window() -> None:
    stats = Stats()
    outbox = Outbox(stats, capacity=100, window=3)
    for n in range(5):
        outbox.put(message(n))
    assert ids(drain(outbox)) == ["id0", "id1", "id2"]
    assert (outbox.queued, outbox.in_flight, outbox.pending, outbox.ready) == (2, 3, 5, False)
    outbox.ack(1)
    assert outbox.ready and ids(drain(outbox)) == ["id3"]
    assert stats.amqp["delivered"] == 1 and balanced(stats, outbox, 5)


def test_ack_multiple_settles_every_tag_up_to_it() -> None:
    stats = Stats()
    outbox = Outbox(stats, capacity=100)
    for n in range(5):
        outbox.put(message(n))
    drain(outbox)
    outbox.ack(2)  # out of order, alone
    outbox.ack(3, multiple=True)  # 1 and 3; 2 is already settled
    assert (stats.amqp["delivered"], outbox.in_flight) == (3, 2)
    outbox.ack(3, multiple=True)  # again: nothing left to settle
    outbox.ack(99)  # a tag never sent
    assert stats.amqp["delivered"] == 3
    outbox.ack(5, multiple=True)
    assert (stats.amqp["delivered"], outbox.pending) == (5, 0)


def test_nack_puts_messages_back_at_the_head_in_order() -> None:
    stats = Stats()
    outbox = Outbox(stats, capacity=100)
    for n in range(4):
        outbox.put(message(n))
    drain(outbox)
    outbox.put(message(4))
    assert outbox.nack(2, multiple=True) == 2
    assert outbox.nack(4) == 1
    assert stats.amqp["nacked"] == 3 and outbox.in_flight == 1
    # Each nack puts its own messages, in order, ahead of everything that waits.
    assert ids(drain(outbox)) == ["id3", "id0", "id1", "id4"]
    assert balanced(stats, outbox, 5)


def test_returned_message_counts_as_unroutable_when_confirmed() -> None:
    """basic.return comes before the message's ack: the ack then counts it as unroutable, not delivered."""
    stats = Stats()
    outbox = Outbox(stats, capacity=100)
    outbox.put(message(0))
    outbox.put(message(1))
    drain(outbox)
    outbox.returned("id0")
    outbox.ack(2, multiple=True)
    assert (stats.amqp["unroutable"], stats.dropped["amqp_unroutable"], stats.amqp["delivered"]) == (1, 1, 1)
    assert balanced(stats, outbox, 2)


def test_requeue_after_a_lost_channel_resends_unconfirmed_first_with_fresh_tags() -> None:
    stats = Stats()
    outbox = Outbox(stats, capacity=100, window=2)
    for n in range(4):
        outbox.put(message(n))
    drain(outbox)
    outbox.ack(1)
    outbox.returned("id1")  # forgotten with the channel: the new channel's ack decides
    assert outbox.requeue() == 1
    assert stats.amqp["resent"] == 1 and (outbox.queued, outbox.in_flight) == (3, 0)
    assert ids(drain(outbox)) == ["id1", "id2"]
    outbox.ack(2, multiple=True)  # tags start over at 1 on the new channel
    assert (stats.amqp["delivered"], stats.amqp["unroutable"]) == (3, 0)
    assert ids(drain(outbox)) == ["id3"]
    assert balanced(stats, outbox, 4)


def test_full_buffer_drops_the_oldest_and_counts() -> None:
    stats = Stats()
    outbox = Outbox(stats, capacity=3)
    for n in range(5):
        outbox.put(message(n))
    assert (stats.amqp["dropped"], stats.dropped["amqp_buffer_full"]) == (2, 2)
    assert ids(drain(outbox)) == ["id2", "id3", "id4"]
    assert balanced(stats, outbox, 5)


def test_full_buffer_drops_the_newest_when_asked() -> None:
    stats = Stats()
    outbox = Outbox(stats, capacity=3, overflow="drop-newest")
    for n in range(5):
        outbox.put(message(n))
    assert stats.dropped["amqp_buffer_full"] == 2
    assert ids(drain(outbox)) == ["id0", "id1", "id2"]


def test_in_flight_messages_do_not_count_against_the_buffer() -> None:
    """Only what waits is bounded by the buffer: the window holds up to its own size more."""
    stats = Stats()
    outbox = Outbox(stats, capacity=2, window=2)
    for n in range(2):
        outbox.put(message(n))
    drain(outbox)
    outbox.put(message(2))
    outbox.put(message(3))
    assert stats.dropped["amqp_buffer_full"] == 0 and outbox.pending == 4


def test_drop_all_counts_what_is_left_at_exit() -> None:
    stats = Stats()
    outbox = Outbox(stats, capacity=100, window=2)
    for n in range(3):
        outbox.put(message(n))
    drain(outbox)
    assert outbox.drop_all("amqp_unconfirmed_at_exit") == 3
    assert (stats.amqp["dropped"], stats.dropped["amqp_unconfirmed_at_exit"], outbox.pending) == (3, 3, 0)
    assert balanced(stats, outbox, 3)
    assert outbox.drop_all("amqp_unconfirmed_at_exit") == 0


def test_unknown_overflow_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="drop-oldest, drop-newest"):
        Outbox(Stats(), capacity=1, overflow="drop-random")
