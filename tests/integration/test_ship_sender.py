"""ship's Sender against real zmq sockets in this process: it waits for a collector and never drops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from tests.helpers import short_ipc_endpoint
from tests.helpers_handler import Receiver
from zlogcollect.ship import Sender
from zlogcollect.wire import parse_frames

pytestmark = pytest.mark.integration


class Stalled:
    """A bound SUB socket, as a collector has, that stays attached but reads only when asked.

    A bound SUB lets peers in only while some thread calls into it, so a thread
    looks at its events (which reads nothing) until :meth:`read` takes over.
    """

    def __init__(self) -> None:
        self.context: zmq.Context[zmq.Socket[Any]] = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.rcvhwm = 100
        self.socket.subscribe(b"")
        self.endpoint = short_ipc_endpoint()
        self.socket.bind(self.endpoint)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._attach, daemon=True)
        self._thread.start()

    def _attach(self) -> None:
        while not self._stop.wait(0.01):
            with self._lock:
                self.socket.get(zmq.EVENTS)

    def read(self, count: int) -> list[list[bytes]]:
        got: list[list[bytes]] = []
        with self._lock:
            while len(got) < count:
                assert self.socket.poll(10_000), f"only {len(got)} of {count} records arrived"
                got.append(self.socket.recv_multipart())
        return got

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture
def stalled() -> Iterator[Stalled]:
    collector = Stalled()
    yield collector
    collector.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    context: zmq.Context[zmq.Socket[Any]] = zmq.Context()
    collector = Receiver(short_ipc_endpoint(), context)
    yield collector
    collector.close()
    context.term()


def test_without_a_collector_send_gives_up_at_the_deadline_and_counts_nothing_sent() -> None:
    sender = Sender(short_ipc_endpoint(), "app")
    assert not sender.send(("INFO", 20), b"nobody listens", time.monotonic() + 0.3)
    assert sender.seq == 0
    assert sender.close(0.1)  # nothing was sent, so nothing can be lost


def test_records_are_what_the_collector_parses_with_the_text_untouched(receiver: Receiver) -> None:
    """Topic from --app/--subtopic, the whole text (its '::' too), path, line and a sequence number."""
    sender = Sender(receiver.endpoint, "web", "access")
    deadline = time.monotonic() + 10
    assert sender.send(("ERROR", 40), b"::1 - - GET /a::b", deadline, path="/var/log/a.log", lineno=3)
    assert sender.send(("INFO", 20), b"2001:db8::7 ok", deadline, path="/var/log/a.log", lineno=4)
    assert sender.close(5.0)
    first, second = (parse_frames(frames, time.time()) for frames in receiver.wait_for(2))
    assert (first.source, first.levelname, first.subtopic, first.message) == (
        "web",
        "ERROR",
        "access",
        "::1 - - GET /a::b",
    )
    assert (second.levelname, second.message) == ("INFO", "2001:db8::7 ok")
    assert [(r.meta["path"], r.meta["line"], r.meta["seq"]) for r in (first, second)] == [
        ("/var/log/a.log", 3, 0),
        ("/var/log/a.log", 4, 1),
    ]
    assert first.meta["pub"] == second.meta["pub"] == sender.encoder.pub


def test_a_full_queue_makes_the_sender_wait_and_drop_nothing(stalled: Stalled) -> None:
    """With a collector that reads nothing, sends stop succeeding (no silent drop); all sent arrive later."""
    sender = Sender(stalled.endpoint, "flood")
    body = b"x" * 200
    sent = 0
    while sender.send(("INFO", 20), body, time.monotonic() + 0.5):
        sent += 1
        assert sent < 1_000_000, "the queue never filled"
    assert sent == sender.seq
    seqs = [parse_frames(frames, 0.0).meta["seq"] for frames in stalled.read(sent)]
    assert seqs == list(range(sent))
    assert sender.send(("INFO", 20), body, time.monotonic() + 10)  # room again once the collector reads
    assert parse_frames(stalled.read(1)[0], 0.0).meta["seq"] == sent
    assert sender.close(2.0)
