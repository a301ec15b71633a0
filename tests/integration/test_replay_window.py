"""The handler's replay window and its several collectors, against real zmq sockets.

A receiver (a bound SUB, as a collector is) that is closed and bound again on the
same endpoint stands for a collector restarted on the same address: the handler's
connected socket hears its subscription again and sends the window again.
"""

from __future__ import annotations

import gc
import json
import logging.config
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

import zlogcollect
from tests.helpers import free_tcp_endpoint, short_ipc_endpoint, wait_until
from tests.helpers_handler import Receiver, private_logger, start_app
from zlogcollect import ZLogHandler
from zlogcollect.delivery import State

pytestmark = pytest.mark.integration

Receivers = Callable[..., Receiver]


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    """Start receivers (bound SUBs in threads); every one still open is closed after the test."""
    started: list[Receiver] = []

    def start(endpoint: str, bound: zmq.Socket[bytes] | None = None) -> Receiver:
        receiver = Receiver(endpoint, bound=bound)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        if not receiver.socket.closed:
            receiver.close()


def restart(receiver: Receiver, receivers: Receivers) -> Receiver:
    """Close *receiver* (a collector stopping) and bind a new one on its endpoint."""
    receiver.close()
    sub: zmq.Socket[bytes] = receiver.context.socket(zmq.SUB)
    sub.rcvhwm = 0
    sub.subscribe(b"")

    def bound() -> bool:
        # A closed socket lets go of its address in libzmq's I/O thread, a moment later.
        try:
            sub.bind(receiver.endpoint)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE:
                sub.close(linger=0)
                raise
            return False
        return True

    try:
        wait_until(bound, 20, what=f"{receiver.endpoint} free again")
    except AssertionError:
        sub.close(linger=0)
        raise
    return receivers(receiver.endpoint, sub)


def seqs(frames: list[list[bytes]]) -> list[int]:
    return [json.loads(message[2])["seq"] for message in frames]


def sentinel(handler: ZLogHandler, receiver: Receiver, have: int) -> list[list[bytes]]:
    """Log one more record and wait for it: whatever a replay sends comes before it."""
    private_logger("sentinel", handler).info("sentinel")
    frames = receiver.wait_for(have + 1, 20)
    wait_until(lambda: receiver.frames[-1][1] == b"sentinel", 20, what="the sentinel last")
    return frames


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_a_restarted_receiver_gets_the_window_again_byte_for_byte(
    transport: str, make_handler: Callable[..., ZLogHandler], receivers: Receivers
) -> None:
    """Without anything logged after the restart, the watcher hears the new subscription and replays."""
    endpoint = short_ipc_endpoint() if transport == "ipc" else free_tcp_endpoint()
    first = receivers(endpoint)
    handler = make_handler(endpoint, app="replay")
    log = private_logger("replay", handler)
    for n in range(50):
        log.info("record %d", n, extra={"n": n})
    sent = [list(message) for message in first.wait_for(50, 20)]
    assert seqs(sent) == list(range(50))
    second = restart(first, receivers)
    assert second.wait_for(50, 20) == sent  # the same frames, in order, byte for byte
    frames = sentinel(handler, second, 50)
    assert len(frames) == 51 and seqs(frames) == [*range(50), 50]
    stats = handler.stats
    assert stats.items() >= {"seq": 51, "dropped": 0, "joins": 2, "replays": 1, "replayed": 50}.items()
    assert stats["replay_cut"] == 0
    # Every restart gets it again: the window is kept, not consumed.
    third = restart(second, receivers)
    assert seqs(third.wait_for(51, 20)) == list(range(51))


def test_held_records_go_out_once_at_the_first_subscription(
    make_handler: Callable[..., ZLogHandler], receivers: Receivers
) -> None:
    """Records held before any collector are sent once when it subscribes: nothing is replayed then."""
    endpoint = short_ipc_endpoint()
    handler = make_handler(endpoint, app="held")
    log = private_logger("held", handler)
    for n in range(30):
        log.info("early %d", n)
    assert handler.stats["held"] == 30
    receiver = receivers(endpoint)
    receiver.wait_for(30, 20)
    frames = sentinel(handler, receiver, 30)
    assert seqs(frames) == list(range(31))
    assert handler.stats.items() >= {"joins": 1, "replays": 0, "window": 31, "held": 0}.items()


def test_window_bounded_by_count(make_handler: Callable[..., ZLogHandler], receivers: Receivers) -> None:
    endpoint = short_ipc_endpoint()
    first = receivers(endpoint)
    handler = make_handler(endpoint, app="count", replay=5)
    log = private_logger("count", handler)
    for n in range(20):
        log.info("record %d", n)
    sent = first.wait_for(20, 20)[:]
    second = restart(first, receivers)
    assert second.wait_for(5, 20) == sent[15:]
    assert seqs(sentinel(handler, second, 5)) == [15, 16, 17, 18, 19, 20]


def test_window_bounded_by_bytes(make_handler: Callable[..., ZLogHandler], receivers: Receivers) -> None:
    """The newest records whose frames fit in replay_bytes, no more."""
    endpoint = short_ipc_endpoint()
    first = receivers(endpoint)
    limit = 5000
    handler = make_handler(endpoint, app="bytes", replay_bytes=limit)
    log = private_logger("bytes", handler)
    for n in range(20):
        log.info("record %d %s", n, "x" * 1000)
    sent = first.wait_for(20, 20)[:]
    fits, total = 0, 0
    for message in reversed(sent):
        total += sum(len(frame) for frame in message)
        if total > limit:
            break
        fits += 1
    assert 2 <= fits < 20
    second = restart(first, receivers)
    assert second.wait_for(fits, 20) == sent[-fits:]
    assert seqs(sentinel(handler, second, fits)) == [*range(20 - fits, 20), 20]


def test_window_bounded_by_age(make_handler: Callable[..., ZLogHandler], receivers: Receivers) -> None:
    """Records older than replay_age are not replayed (the window is then empty: nothing is sent)."""
    endpoint = short_ipc_endpoint()
    first = receivers(endpoint)
    handler = make_handler(endpoint, app="age", replay_age=0.2)
    log = private_logger("age", handler)
    for n in range(10):
        log.info("record %d", n)
    first.wait_for(10, 20)
    time.sleep(0.5)  # not a timed assertion: every record is now older than the window keeps
    second = restart(first, receivers)
    wait_until(lambda: handler.stats["joins"] == 2, 20, what="the second subscription heard")
    assert seqs(sentinel(handler, second, 0)) == [10]
    assert handler.stats.items() >= {"replays": 0, "replayed": 0}.items()


def test_replay_disabled(make_handler: Callable[..., ZLogHandler], receivers: Receivers) -> None:
    endpoint = short_ipc_endpoint()
    first = receivers(endpoint)
    handler = make_handler(endpoint, app="off", replay=0)
    log = private_logger("off", handler)
    for n in range(10):
        log.info("record %d", n)
    first.wait_for(10, 20)
    second = restart(first, receivers)
    # Records logged before the handler's socket sees the old connection gone are lost
    # with it (what the window is for): log until one arrives.
    wait_until(lambda: log.info("after") or second.frames, 20, what="a record after the restart")
    assert min(seqs(second.frames)) >= 10  # nothing sent again
    assert handler.stats.items() >= {"window": 0, "replays": 0, "replayed": 0}.items()


def test_unstructured_records_are_not_kept(
    make_handler: Callable[..., ZLogHandler], receivers: Receivers
) -> None:
    """Without pub and seq a collector could not drop the copies: stock frames are never replayed."""
    endpoint = short_ipc_endpoint()
    first = receivers(endpoint)
    handler = make_handler(endpoint, app="plain", structured=False)
    private_logger("plain", handler).info("stock frames")
    first.wait_for(1, 20)
    assert handler.stats["window"] == 0


class StalledReceiver:
    """A bound SUB that subscribes but reads nothing: its thread only lets peers attach."""

    def __init__(self, endpoint: str) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        self.socket.set(zmq.RCVHWM, 1)
        self.socket.set(zmq.RCVBUF, 4096)
        self.socket.subscribe(b"")
        self.socket.bind(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stalled", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.socket.get(zmq.EVENTS)  # processes the socket's commands: handshakes, subscriptions

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close(linger=0)


def test_full_queue_stops_the_replay_and_counts_it(
    make_handler: Callable[..., ZLogHandler], receivers: Receivers
) -> None:
    """A replay that meets the high-water mark stops there, counted apart: it is not a drop."""
    endpoint = short_ipc_endpoint()
    first = receivers(endpoint)
    handler = make_handler(endpoint, app="full", sndhwm=10)
    log = private_logger("full", handler)
    big = "x" * 100_000
    for n in range(30):
        log.info("record %d %s", n, big)
        first.wait_for(n + 1, 20)  # one at a time: all 30 go out below the high-water mark
    first.close()
    stalled = StalledReceiver(endpoint)
    try:
        wait_until(lambda: handler.stats["replays"] == 1, 20, what="the replay")
        stats = handler.stats
        # 3 MB against 10 records queued and small socket buffers: the replay stops early.
        assert stats["replay_cut"] > 0
        assert stats["replayed"] + stats["replay_cut"] == 30
        assert stats["dropped"] == 0
    finally:
        stalled.close()


def test_bind_mode_replays_before_held_records_after_an_unsubscription(
    make_handler: Callable[..., ZLogHandler],
) -> None:
    """Bound, the last subscriber leaving holds records; the next one gets the window, then those, in order."""
    endpoint = short_ipc_endpoint()
    handler = make_handler(endpoint, app="bound", bind=True)
    log = private_logger("bound", handler)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()

    def subscriber() -> zmq.Socket[bytes]:
        sub = context.socket(zmq.SUB)
        sub.subscribe(b"")
        sub.connect(endpoint)
        return sub

    def receive(sub: zmq.Socket[bytes], count: int) -> list[int]:
        got = []
        for _ in range(count):
            assert sub.poll(20_000)
            got.append(json.loads(sub.recv_multipart()[2])["seq"])
        return got

    first = subscriber()
    try:
        wait_until(lambda: handler.stats["joins"] == 1, 20, what="the first subscription")
        for n in range(5):
            log.info("record %d", n)
        assert receive(first, 5) == [0, 1, 2, 3, 4]
    finally:
        first.close(linger=0)
    # The watcher hears the unsubscription: records are held again.
    wait_until(lambda: handler._delivery.state is State.HOLDING, 20, what="holding")  # noqa: SLF001
    for n in range(5, 8):
        log.info("record %d", n)
    assert handler.stats["held"] == 3
    second = subscriber()
    try:
        assert receive(second, 8) == list(range(8))  # the window, then the held ones
        log.info("record 8")
        assert receive(second, 1) == [8]
        assert not second.poll(100)  # nothing twice (a look, not a wait: everything came before 8)
    finally:
        second.close(linger=0)


def test_two_collectors_get_every_record_with_the_same_pub_and_seq(
    make_handler: Callable[..., ZLogHandler], receivers: Receivers
) -> None:
    """Each endpoint its own socket: a restarted collector gets the window, the other nothing twice."""
    a, b = short_ipc_endpoint(), free_tcp_endpoint()
    first_a, first_b = receivers(a), receivers(b)
    handler = make_handler([a, b], app="both")
    log = private_logger("both", handler)
    for n in range(40):
        log.info("record %d", n)
    sent_a, sent_b = first_a.wait_for(40, 20)[:], first_b.wait_for(40, 20)[:]
    assert sent_a == sent_b  # the same frames, pub and seq included
    assert {json.loads(m[2])["pub"] for m in sent_a} == {handler.publisher_id}
    second_a = restart(first_a, receivers)
    assert second_a.wait_for(40, 20) == sent_a
    sentinel(handler, second_a, 40)
    wait_until(lambda: len(first_b.frames) == 41, 20, what="the sentinel at b")
    assert seqs(first_b.frames) == list(range(41))  # nothing twice at b
    assert seqs(second_a.frames) == list(range(41))
    per = handler.collector_stats
    assert list(per) == [a, b]
    assert per[a].items() >= {"seq": 41, "joins": 2, "replays": 1, "replayed": 40}.items()
    assert per[b].items() >= {"seq": 41, "joins": 1, "replays": 0, "replayed": 0}.items()
    assert handler.stats.items() >= {"seq": 41, "replays": 1, "replayed": 40, "dropped": 0}.items()


def test_one_collector_gone_for_good_the_other_gets_everything(
    make_handler: Callable[..., ZLogHandler], receivers: Receivers
) -> None:
    """A dead collector's queue fills and its drops are its own; the live one gets every record."""
    a, b = short_ipc_endpoint(), short_ipc_endpoint()
    live, dead = receivers(a), receivers(b)
    handler = make_handler([a, b], app="one", sndhwm=100)
    log = private_logger("one", handler)
    for n in range(10):
        log.info("record %d", n)
    live.wait_for(10, 20)
    dead.wait_for(10, 20)
    dead.close()
    for n in range(10, 500):
        log.info("record %d", n)
        if n % 25 == 24:
            live.wait_for(n + 1, 20)  # the live one's queue never fills: only the dead one's does
    frames = live.wait_for(500, 30)
    assert seqs(frames) == list(range(500))
    assert all(json.loads(m[2]).get("dropped", 0) == 0 for m in frames)  # b's drops are not a's
    per = handler.collector_stats
    assert per[a]["dropped"] == 0
    assert per[b]["dropped"] > 0
    assert handler.stats["dropped"] == per[b]["dropped"]


def test_a_collector_that_never_comes_holds_alone(
    make_handler: Callable[..., ZLogHandler], receivers: Receivers
) -> None:
    """Each endpoint has its own hold: one absent collector does not hold the other's records."""
    a, b = short_ipc_endpoint(), short_ipc_endpoint()
    present = receivers(a)
    handler = make_handler([a, b], app="alone", hold=50)
    log = private_logger("alone", handler)
    wait_until(lambda: handler.collector_stats[a]["joins"] == 1, 20, what="a's subscription")
    for n in range(80):
        log.info("record %d", n)
    assert seqs(present.wait_for(80, 20)) == list(range(80))
    per = handler.collector_stats
    assert per[b].items() >= {"held": 50, "dropped": 30}.items()
    assert per[a].items() >= {"held": 0, "dropped": 0}.items()
    late = receivers(b)
    assert seqs(late.wait_for(50, 20)) == list(range(30, 80))
    log.info("after")
    frames = late.wait_for(51, 20)
    assert json.loads(frames[-1][2]).items() >= {"seq": 80}.items()
    assert json.loads(frames[0][2])["dropped"] == 30  # the gap is announced to b only


FORK_APP = """
    import logging, os, sys
    from zlogcollect import ZLogHandler
    handler = ZLogHandler(sys.argv[1], app="fork", linger=1.0)
    log = logging.getLogger("fork")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    for n in range(5):
        log.info("parent %d", n)
    pid = os.fork()
    if pid == 0:
        for n in range(5):
            log.info("child %d", n)
        print("child", handler.publisher_id, flush=True)
        sys.stdin.readline()
        print("child stats", handler.stats["replayed"], flush=True)
        handler.close()
        os._exit(0)
    print("parent", handler.publisher_id, flush=True)
    sys.stdin.readline()
    os.waitpid(pid, 0)
"""


def test_a_fork_child_has_its_own_window(receivers: Receivers, tmp_path: Path) -> None:
    endpoint = short_ipc_endpoint()
    first = receivers(endpoint)
    app = start_app(FORK_APP, endpoint, cwd=tmp_path)
    try:
        assert app.stdout is not None
        ids = dict(app.stdout.readline().split() for _ in range(2))
        sent = first.wait_for(10, 20)[:]
        second = restart(first, receivers)
        replayed = second.wait_for(10, 20)[:]
        by_pub: dict[str, list[bytes]] = {}
        for message in replayed:
            by_pub.setdefault(json.loads(message[2])["pub"], []).append(message[1])
        assert by_pub == {
            ids["parent"]: [b"parent %d" % n for n in range(5)],
            ids["child"]: [b"child %d" % n for n in range(5)],
        }
        assert sorted(map(tuple, replayed)) == sorted(map(tuple, sent))  # byte for byte
        out, err = app.communicate("stop\nstop\n", timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate(timeout=10)
    assert app.returncode == 0, err
    assert "child stats 5" in out


def test_dict_config_and_setup_take_the_window_and_several_endpoints(receivers: Receivers) -> None:
    """dictConfig passes a list of endpoints and the replay bounds; setup() takes them too."""
    a, b = short_ipc_endpoint(), short_ipc_endpoint()
    at_a, at_b = receivers(a), receivers(b)
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "collectors": {
                    "class": "zlogcollect.ZLogHandler",
                    "endpoint": [a, b],
                    "app": "configured",
                    "replay": 3,
                    "replay_age": 60,
                    "replay_bytes": 1 << 20,
                    "linger": 0.5,
                }
            },
            "loggers": {"dcr": {"handlers": ["collectors"], "level": "INFO", "propagate": False}},
        }
    )
    logger = logging.getLogger("dcr")
    (handler,) = logger.handlers
    try:
        assert isinstance(handler, ZLogHandler)
        for n in range(5):
            logger.info("record %d", n)
        assert seqs(at_a.wait_for(5, 20)) == seqs(at_b.wait_for(5, 20)) == list(range(5))
        assert {view["window"] for view in handler.collector_stats.values()} == {3}
        assert handler.stats["window"] == 6
    finally:
        logger.removeHandler(handler)
        handler.close()
    root = logging.getLogger()
    level = root.level
    set_up = zlogcollect.setup([a, b], app="setup", replay=0, linger=0.5)
    try:
        assert set(set_up.collector_stats) == {a, b}
        assert set_up.stats["window"] == 0
    finally:
        root.removeHandler(set_up)
        root.setLevel(level)
        set_up.close()


def test_the_watcher_ends_with_close_and_with_the_handler(receivers: Receivers) -> None:
    """One watcher thread per handler while it is open: close() ends it, and so does collection."""
    endpoint = short_ipc_endpoint()
    receivers(endpoint)

    def watchers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "zlogcollect-replay"]

    before = set(watchers())
    handler = ZLogHandler(endpoint, app="watched", linger=0.2)
    (mine,) = set(watchers()) - before
    handler.close()
    mine.join(10)
    assert not mine.is_alive()
    handler = ZLogHandler(endpoint, app="dropped", linger=0.2)
    (mine,) = set(watchers()) - before
    ref = weakref.ref(handler)
    with warnings.catch_warnings():
        # An unclosed handler's socket and context warn when collected: expected here.
        warnings.simplefilter("ignore", ResourceWarning)
        del handler
        gc.collect()
    assert ref() is None  # the watcher holds no strong reference to its handler
    mine.join(10)
    assert not mine.is_alive()
