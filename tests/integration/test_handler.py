"""ZLogHandler against real zmq sockets in this process: frames, loss accounting, threads, timing."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import zmq
from zmq.log.handlers import PUBHandler

import zlogcollect
from tests.helpers import ROOT, free_tcp_endpoint, short_ipc_endpoint, wait_until
from tests.helpers_handler import Capture, Receiver, private_logger, run_app, seq_gaps, start_app
from zlogcollect import ZLogHandler
from zlogcollect.handler import DEFAULT_ENDPOINT, default_app_name
from zlogcollect.wire import encode_extension, parse_frames

pytestmark = pytest.mark.integration


@pytest.fixture(params=["ipc", "tcp"])
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    """A bound SUB collecting every message, on ipc and on tcp."""
    endpoint = short_ipc_endpoint() if request.param == "ipc" else free_tcp_endpoint()
    recv = Receiver(endpoint)
    yield recv
    recv.close()


@pytest.fixture
def ipc_receiver() -> Iterator[Receiver]:
    """A bound SUB on ipc, for tests where the transport does not matter."""
    recv = Receiver(short_ipc_endpoint())
    yield recv
    recv.close()


def test_record_becomes_topic_text_and_extension(
    receiver: Receiver, make_handler: Callable[..., ZLogHandler]
) -> None:
    """A record goes out as [root.LEVEL.sub, message, extension] with where and who it came from."""
    handler = make_handler(receiver.endpoint, app="svc.web")
    capture = Capture()
    logger = private_logger("svc.db", capture, handler)
    logger.warning("pool.main::exhausted after %d s", 30, extra={"user": "bob", "thing": object()})
    (topic, text, ext), *_ = receiver.wait_for(1)
    assert topic == b"svc.web.WARNING.pool.main"
    assert text == b"exhausted after 30 s"
    meta = json.loads(ext)
    record = capture.records[0]
    assert meta.pop("created") == record.created
    assert meta.pop("pub") == handler.publisher_id
    assert meta.pop("extra").keys() == {"user", "thing"}
    assert meta == {
        "v": 1,
        "levelno": logging.WARNING,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process": "MainProcess",
        "thread": threading.current_thread().name,
        "logger": "svc.db",
        "path": __file__,
        "line": record.lineno,
        "func": "test_record_becomes_topic_text_and_extension",
        "seq": 0,
    }
    parsed = parse_frames([topic, text, ext], time.time())
    assert (parsed.source, parsed.levelname, parsed.subtopic) == ("svc.web", "WARNING", "pool.main")


def test_extension_bytes_equal_wire_encoding(
    ipc_receiver: Receiver, make_handler: Callable[..., ZLogHandler]
) -> None:
    """The fast path's third frame is byte for byte what wire.encode_extension makes of the fields.

    Custom levels included: they carry their name beside the number.
    """
    handler = make_handler(ipc_receiver.endpoint, app="fast")
    capture = Capture()
    logger = private_logger("fast.path", capture, handler)
    logging.addLevelName(25, "NOTICE")
    try:
        for n in range(3):
            logger.info("plain %d", n)
        logger.info("with extra", extra={"order": 7, "tags": ["a", "b"]})
        for n in range(2):  # the second one takes the cached fragment
            logger.log(25, "notice %d", n)
        logger.log(15, "unnamed")
        logger.log(25, "notice with extra", extra={"order": 8})
    finally:
        # logging has no public way to remove a level name again.
        del logging._levelToName[25]  # noqa: SLF001
        del logging._nameToLevel["NOTICE"]  # noqa: SLF001
    frames = ipc_receiver.wait_for(8)
    for seq, (record, (_, _, ext)) in enumerate(zip(capture.records, frames, strict=True)):
        fields: dict[str, Any] = {"created": record.created, "levelno": record.levelno}
        if record.levelno in (25, 15):  # NOTICE and the unnamed "Level 15"
            fields["levelname"] = record.levelname
        fields |= {
            "host": socket.gethostname(),
            "pid": record.process,
            "process": record.processName,
            "thread": record.threadName,
            "logger": record.name,
            "path": record.pathname,
            "line": record.lineno,
            "func": record.funcName,
        }
        if seq == 3:
            fields["extra"] = {"order": 7, "tags": ["a", "b"]}
        if seq == 7:
            fields["extra"] = {"order": 8}
        fields.update(pub=handler.publisher_id, seq=seq)
        assert ext == encode_extension(fields)
    assert [json.loads(f[2]).get("levelname") for f in frames[3:]] == [
        None,
        "NOTICE",
        "NOTICE",
        "Level 15",
        "NOTICE",
    ]


def test_values_json_has_no_number_or_type_for_arrive_as_valid_json(
    ipc_receiver: Receiver, make_handler: Callable[..., ZLogHandler]
) -> None:
    """NaN, a 70-bit int, non-ASCII, a tuple key, a cycle: each record arrives, UTF-8 JSON the collector parses."""
    handler = make_handler(ipc_receiver.endpoint, app="odd")
    logger = private_logger("odd.values", Capture(), handler)
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    extras: list[dict[str, Any]] = [
        {"ratio": float("nan"), "big": 2**70, "greeting": "Grüße 日本"},
        {"keys": {(1, 2): "a", 3: "b"}},
        {"loop": cycle},
    ]
    for extra in extras:
        logger.info("odd::value", extra=extra)
    frames = ipc_receiver.wait_for(3)
    metas = [json.loads(ext.decode(), parse_constant=lambda word: pytest.fail(word)) for _, _, ext in frames]
    assert metas[0]["extra"] == {"ratio": "NaN", "big": str(2**70), "greeting": "Grüße 日本"}
    assert "Grüße 日本".encode() in frames[0][2]
    assert metas[1]["extra"] == {"keys": {"(1, 2)": "a", "3": "b"}}
    assert isinstance(metas[2]["extra"], str) and "{...}" in metas[2]["extra"]
    assert [m["seq"] for m in metas] == [0, 1, 2]
    for topic, text, ext in frames:
        parsed = parse_frames([topic, text, ext], time.time())
        assert (parsed.source, parsed.subtopic, parsed.message) == ("odd", "odd", "value")


def test_unstructured_is_stock_compatible(
    receiver: Receiver, make_handler: Callable[..., ZLogHandler]
) -> None:
    """With structured=False a stock consumer's `topic, msg = recv_multipart()` works, same topic as PUBHandler."""
    handler = make_handler(receiver.endpoint, root_topic="app1", structured=False)
    private_logger("x", handler).error("db.query::timeout after %d ms", 30)
    stock_socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    stock_socket.connect(receiver.endpoint)
    stock = PUBHandler(stock_socket)
    stock.root_topic = "app1"
    stock_logger = private_logger("y", stock)
    try:
        # The stock handler has no way to know when the subscription arrived: probe.
        wait_until(
            lambda: stock_logger.error("db.query::probe") or len(receiver.frames) > 1,
            what="the stock handler's first record",
        )
    finally:
        stock_socket.close(linger=0)
    # Ours was held until the subscription arrived, so either may have come first.
    ((topic, msg),) = [f for f in receiver.frames if b"probe" not in f[1]]
    stock_topic, stock_msg = next(f for f in receiver.frames if b"probe" in f[1])
    assert topic == stock_topic == b"app1.ERROR.db.query"
    assert msg == b"timeout after 30 ms"
    # The stock body carries the warts this handler removes.
    assert stock_msg.startswith(b"ERROR ") and stock_msg.endswith(b" - None\n")


def test_dict_config(ipc_receiver: Receiver) -> None:
    """logging.config.dictConfig builds the handler with an endpoint, app name, options and formatter."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"short": {"format": "%(name)s: %(message)s"}},
            "handlers": {
                "collector": {
                    "class": "zlogcollect.ZLogHandler",
                    "endpoint": ipc_receiver.endpoint,
                    "app": "configured",
                    "structured": False,
                    "linger": 0.5,
                    "formatter": "short",
                    "level": "INFO",
                }
            },
            "loggers": {"dc": {"handlers": ["collector"], "level": "DEBUG", "propagate": False}},
        }
    )
    logger = logging.getLogger("dc")
    (handler,) = logger.handlers
    try:
        assert isinstance(handler, ZLogHandler)
        logger.debug("below the handler's level")
        logger.info("hello")
        assert ipc_receiver.wait_for(1) == [[b"configured.INFO", b"dc: hello"]]
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_endpoint_keyword_and_its_pyzmq_alias(
    ipc_receiver: Receiver, make_handler: Callable[..., ZLogHandler]
) -> None:
    """`endpoint` names the first parameter; pyzmq's `interface_or_socket` still works; both at once is an error."""
    by_name = make_handler(endpoint=ipc_receiver.endpoint, app="kw")
    by_alias = make_handler(interface_or_socket=ipc_receiver.endpoint, app="alias")
    private_logger("kw", by_name).info("by name")
    private_logger("alias", by_alias).info("by alias")
    frames = ipc_receiver.wait_for(2)
    assert sorted(f[0] for f in frames) == [b"alias.INFO", b"kw.INFO"]
    with pytest.raises(TypeError, match="not both"):
        ZLogHandler(ipc_receiver.endpoint, interface_or_socket=ipc_receiver.endpoint)


def readme_dict_config() -> str:
    """The README's dictConfig example: the one fenced python block that calls dictConfig."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks: list[str] = re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    (block,) = [b for b in blocks if "dictConfig(" in b]
    return block


def test_readme_dict_config_example_runs(ipc_receiver: Receiver, tmp_path: Path) -> None:
    """The README's dictConfig example, run as printed (only its endpoint pointed here), delivers its record."""
    source = readme_dict_config()
    assert source.count(DEFAULT_ENDPOINT) == 1, "the example names the default endpoint once"
    done = run_app(source.replace(DEFAULT_ENDPOINT, ipc_receiver.endpoint), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    frames = ipc_receiver.wait_for(1)
    assert [f[:2] for f in frames] == [[b"app1.ERROR.db.query", b"timeout after 30 s"]]


def test_custom_levels_and_notset(ipc_receiver: Receiver, make_handler: Callable[..., ZLogHandler]) -> None:
    """Levels without a name or formatter (25, 7, NOTSET) are sent, where the stock class raises KeyError."""
    logging.addLevelName(25, "NOTICE")
    try:
        handler = make_handler(ipc_receiver.endpoint, app="lv")
        logger = private_logger("lv", handler)
        logger.setLevel(logging.NOTSET)
        logger.log(25, "notice")
        logger.log(7, "seven")
        handler.handle(logging.makeLogRecord({"msg": "unset", "levelno": 0, "levelname": "NOTSET"}))
        frames = ipc_receiver.wait_for(3)
    finally:
        # logging has no public way to remove a level name again.
        del logging._levelToName[25]  # noqa: SLF001
        del logging._nameToLevel["NOTICE"]  # noqa: SLF001
    assert [f[:2] for f in frames] == [
        [b"lv.NOTICE", b"notice"],
        [b"lv.Level 7", b"seven"],
        [b"lv.NOTSET", b"unset"],
    ]
    assert parse_frames(frames[1], 0.0).levelno == 7
    # The number always travels, the name only when it is not a standard one.
    assert [(m["levelno"], m.get("levelname")) for m in ipc_receiver.extensions()] == [
        (25, "NOTICE"),
        (7, "Level 7"),
        (0, None),
    ]
    stock = PUBHandler(zmq.Context.instance().socket(zmq.PUB))
    try:
        with pytest.raises(KeyError):
            stock.format(logging.makeLogRecord({"msg": "x", "levelno": 25}))
    finally:
        stock.socket.close(linger=0)


def test_traceback_in_text_and_extension(
    ipc_receiver: Receiver, make_handler: Callable[..., ZLogHandler]
) -> None:
    """logger.exception sends the traceback in the text and in `exc`; a plain error has no `- None`."""
    handler = make_handler(ipc_receiver.endpoint, app="tb")
    logger = private_logger("tb", handler)
    logger.error("no exception here")
    try:
        1 / 0  # noqa: B018 - the point is the exception
    except ZeroDivisionError:
        logger.exception("it broke")
    logger.critical("stack", stack_info=True)
    (_, plain, plain_ext), (_, broke, broke_ext), (_, stack, stack_ext) = ipc_receiver.wait_for(3)
    assert plain == b"no exception here"
    assert "exc" not in json.loads(plain_ext)
    assert broke.startswith(b"it broke\nTraceback (most recent call last):")
    assert broke.endswith(b"ZeroDivisionError: division by zero")
    assert broke == b"it broke\n" + json.loads(broke_ext)["exc"].encode()
    assert stack.startswith(b"stack\nStack (most recent call last):")
    assert json.loads(stack_ext)["exc"].startswith("Stack (most recent call last):")


def test_per_level_formatters_with_fallback(
    ipc_receiver: Receiver, make_handler: Callable[..., ZLogHandler]
) -> None:
    """setFormatter(fmt, level) applies to that level only; setFormatter(fmt) sets every level's fallback."""
    handler = make_handler(ipc_receiver.endpoint, app="fmt", structured=False)
    handler.setFormatter(logging.Formatter("E %(message)s"), logging.ERROR)
    logger = private_logger("fmt", handler)
    logger.error("one")
    logger.info("two")
    handler.setFormatter(logging.Formatter("all %(message)s"))
    logger.error("three")
    logger.warning("four")
    frames = ipc_receiver.wait_for(4)
    assert [f[1] for f in frames] == [b"E one", b"two", b"all three", b"all four"]


def test_threads_deliver_whole_records(
    ipc_receiver: Receiver, make_handler: Callable[..., ZLogHandler]
) -> None:
    """8 threads x 10,000 records through one handler all arrive, none torn or mixed up."""
    handler = make_handler(ipc_receiver.endpoint, app="mt")
    logger = private_logger("mt", handler)
    threads, per_thread = 8, 10_000

    def work(n: int) -> None:
        for i in range(per_thread):
            logger.info(f"t{n}::record %d", i)

    workers = [threading.Thread(target=work, args=(n,), name=f"w{n}") for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    frames = ipc_receiver.wait_for(threads * per_thread, timeout=30)
    assert len(frames) == threads * per_thread
    seen: dict[str, list[int]] = {f"t{n}": [] for n in range(threads)}
    seqs = []
    for topic, text, ext in frames:
        meta = json.loads(ext)
        sub = topic.decode().removeprefix("mt.INFO.")
        assert meta["thread"] == "w" + sub[1:]
        seen[sub].append(int(text.decode().removeprefix("record ")))
        seqs.append(meta["seq"])
    assert all(numbers == list(range(per_thread)) for numbers in seen.values())
    assert sorted(seqs) == list(range(threads * per_thread))
    assert handler.stats["dropped"] == 0


@pytest.mark.perf
def test_collector_absent_never_blocks(make_handler: Callable[..., ZLogHandler]) -> None:
    """With no collector, emit never waits for one, and close() gives up after its linger.

    The bounds are far above the real figures (microseconds per emit, 0.3 s for close)
    and far below what waiting would take (forever): they catch blocking, not slowness
    on a loaded machine.
    """
    handler = make_handler(free_tcp_endpoint(), app="alone", linger=0.3, hold=100)
    logger = private_logger("alone", handler)
    slowest = 0.0
    for i in range(2000):
        start = time.perf_counter()
        logger.info("nobody listens %d", i)
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 1.0
    start = time.monotonic()
    handler.close()
    assert time.monotonic() - start < 0.3 + 2.0
    assert handler.stats.items() >= {"seq": 2000, "dropped": 2000, "held": 0}.items()


def test_hwm_drops_are_counted_and_announced(make_handler: Callable[..., ZLogHandler]) -> None:
    """Past the high-water mark records are dropped, and the next one that gets through says how many."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.rcvhwm = 1
    sub.subscribe(b"")
    sub.bind("inproc://hwm")
    try:
        handler = make_handler("inproc://hwm", context=context, app="hwm", sndhwm=5)
        logger = private_logger("hwm", handler)
        logger.info("probe")
        # Until the SUB processes its commands it has not subscribed: the probe is held.
        wait_until(lambda: sub.poll(10), what="the probe")
        frames = [sub.recv_multipart()]
        for i in range(100):
            logger.info("burst %d", i)  # nobody reads: the queue fills after a few
        assert 80 < handler.stats["dropped"] < 100
        while sub.poll(0):
            frames.append(sub.recv_multipart())
        # The queue empties as the SUB reads, but the handler's socket learns that
        # only when it next processes commands; retries that fail are counted too.
        wait_until(lambda: logger.info("after") or sub.poll(10), what="a record after the burst")
        frames.append(sub.recv_multipart())
    finally:
        sub.close(linger=0)
        handler.close()
        context.term()
    stats = handler.stats
    metas = [json.loads(f[2]) for f in frames]
    assert metas[-1]["dropped"] == stats["dropped"]
    assert all("dropped" not in m for m in metas[:-1])
    seqs = [m["seq"] for m in metas]
    assert seqs == sorted(seqs) and seqs[-1] == stats["seq"] - 1
    assert seq_gaps(seqs) == stats["dropped"] == stats["seq"] - len(frames)


def test_hold_limit_leaves_a_gap_and_announces_it(make_handler: Callable[..., ZLogHandler]) -> None:
    """Beyond the hold limit the oldest held records go; the collector sees the gap and the count."""
    endpoint = short_ipc_endpoint()
    handler = make_handler(endpoint, app="hold", hold=5)
    logger = private_logger("hold", handler)
    for i in range(8):
        logger.info("early %d", i)
    assert handler.stats.items() >= {"seq": 8, "dropped": 3, "held": 5}.items()
    recv = Receiver(endpoint)  # the collector starts late
    try:
        frames = recv.wait_for(5)
    finally:
        recv.close()
    assert [f[1] for f in frames] == [b"early %d" % i for i in range(3, 8)]
    metas = [json.loads(f[2]) for f in frames]
    assert [m["seq"] for m in metas] == [3, 4, 5, 6, 7]
    assert metas[0]["dropped"] == 3
    assert all("dropped" not in m for m in metas[1:])


def test_start_up_records_arrive_stock_loses_some(
    receiver: Receiver,
    make_handler: Callable[..., ZLogHandler],
    record_property: Callable[[str, object], None],
) -> None:
    """1,000 records logged right after creating the handler all arrive, in order; the stock class loses some."""
    handler = make_handler(receiver.endpoint, app="early")
    logger = private_logger("early", handler)
    for i in range(1000):
        logger.info("r%d", i)
    handler.close()
    frames = receiver.wait_for(1000)
    assert [f[1] for f in frames] == [b"r%d" % i for i in range(1000)]

    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.connect(receiver.endpoint)
    stock_logger = private_logger("stock", PUBHandler(pub, root_topic="stock"))
    for i in range(1000):
        stock_logger.info("r%d", i)
    pub.close(linger=2000)
    context.term()
    stock = sum(1 for f in receiver.frames if f[0] == b"stock.INFO")
    record_property("stock_start_up_delivered", stock)
    print(f"start-up delivery: ours 1000/1000, stock {stock}/1000")
    assert stock <= 1000


def test_errors_reported_once_never_logged_into_itself(
    ipc_receiver: Receiver, make_handler: Callable[..., ZLogHandler], capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken record goes to stderr once (not once per record), never to the collector, and is counted."""
    handler = make_handler(ipc_receiver.endpoint, app="err")
    logger = private_logger("err", handler)
    logging.getLogger().addHandler(handler)  # even when it also sits on the root logger
    for _ in range(50):
        logger.info("%d items", "not a number")
    logger.info("fine")
    (topic, text, ext), *_ = ipc_receiver.wait_for(1)
    assert (topic, text) == (b"err.INFO", b"fine")
    assert json.loads(ext)["seq"] == 50
    assert json.loads(ext)["dropped"] == 50
    assert capsys.readouterr().err.count("--- Logging error ---") == 1
    assert len(ipc_receiver.frames) == 1


def test_emit_after_close_is_counted_not_raised(
    ipc_receiver: Receiver, make_handler: Callable[..., ZLogHandler], capsys: pytest.CaptureFixture[str]
) -> None:
    """Records logged after close() (say from atexit hooks) are counted as dropped without noise."""
    handler = make_handler(ipc_receiver.endpoint, app="late")
    logger = private_logger("late", handler)
    logger.info("before")
    handler.close()
    logger.info("after")
    assert handler.stats["dropped"] == 1
    assert capsys.readouterr().err == ""
    assert [f[1] for f in ipc_receiver.wait_for(1)] == [b"before"]


def test_setup_attaches_to_root_and_replaces(ipc_receiver: Receiver) -> None:
    """zlogcollect.setup() puts one handler on the root logger; calling it again replaces it."""
    first = zlogcollect.setup(ipc_receiver.endpoint, app="one", level="DEBUG", linger=0.5)
    second = zlogcollect.setup(ipc_receiver.endpoint, app="two", level=logging.DEBUG, linger=0.5)
    try:
        root = logging.getLogger()
        assert second in root.handlers and first not in root.handlers
        assert root.level == logging.DEBUG
        logging.getLogger("some.module").debug("hi")
        assert [f[:2] for f in ipc_receiver.wait_for(1)] == [[b"two.DEBUG", b"hi"]]
    finally:
        second.close()


def test_default_root_topic_is_the_script_name(
    monkeypatch: pytest.MonkeyPatch, make_handler: Callable[..., ZLogHandler]
) -> None:
    """Without app or root_topic the root topic is the script's name; root_topic='' keeps the stock empty root."""
    monkeypatch.setattr(sys, "argv", ["/srv/billing/worker.py", "--flag"])
    assert default_app_name() == "worker"
    monkeypatch.setattr(sys, "argv", ["/srv/billing/__main__.py"])
    assert default_app_name() == "billing"
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert default_app_name() == "python"
    monkeypatch.setattr(sys, "argv", ["/usr/bin/tool"])
    assert make_handler(short_ipc_endpoint()).root_topic == "tool"
    assert make_handler(short_ipc_endpoint(), root_topic="").root_topic == ""


def test_bind_mode_and_existing_socket(make_handler: Callable[..., ZLogHandler]) -> None:
    """bind=True binds like the stock class, and a socket passed in is used as is and left open."""
    endpoint = short_ipc_endpoint()
    handler = make_handler(endpoint, app="bound", bind=True)
    private_logger("bound", handler).info("held until a subscriber connects")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.subscribe(b"")
    sub.connect(endpoint)
    try:
        assert sub.poll(5000)
        assert sub.recv_multipart()[:2] == [b"bound.INFO", b"held until a subscriber connects"]
        xpub = context.socket(zmq.XPUB)
        xpub.bind("inproc://given")
        given = make_handler(xpub, app="given")
        sub.connect("inproc://given")
        private_logger("given", given).info("through the socket I was given")
        assert sub.poll(5000)
        assert sub.recv_multipart()[:2] == [b"given.INFO", b"through the socket I was given"]
        given.close()
        assert not xpub.closed
        xpub.close(linger=0)
    finally:
        sub.close(linger=0)


def test_bad_endpoint_fails_at_construction() -> None:
    """A malformed endpoint is a configuration error raised at construction, with nothing left open."""
    with pytest.raises(zmq.ZMQError):
        ZLogHandler("tcp://no-port-here")
    with pytest.raises(ValueError, match="at least one endpoint"):
        ZLogHandler([])


def test_once_subscribed_records_go_straight_out_held_ones_first(
    make_handler: Callable[..., ZLogHandler],
) -> None:
    """When the subscription arrives while records are held, emit() sends the held ones and then its own.

    The test holds the handler's lock, so the flusher thread cannot run: only emit()
    itself can get the records out. Before, every record after the first held one was
    held too, and a burst outpaced the flusher until the hold limit overflowed.
    """
    endpoint = short_ipc_endpoint()
    handler = make_handler(endpoint, app="straight")
    logger = private_logger("straight", handler)
    logged = 0

    def log_one() -> None:
        nonlocal logged
        logger.info("r%d", logged)
        logged += 1

    with cast("threading.RLock", handler.lock):
        for _ in range(100):
            log_one()  # no collector yet: held
        assert handler.stats["held"] == 100
        recv = Receiver(endpoint)
        try:
            wait_until(lambda: log_one() or handler.stats["held"] == 0, 5, what="the held records sent")
            for _ in range(1000):
                log_one()
                assert handler.stats["held"] == 0
            assert handler.stats["dropped"] == 0
            frames = recv.wait_for(logged)
        finally:
            recv.close()
    assert [f[1] for f in frames] == [b"r%d" % i for i in range(logged)]
    assert [json.loads(f[2])["seq"] for f in frames] == list(range(logged))


EXIT_APP = """
    import atexit, multiprocessing, sys, time

    def report() -> None:
        print(f"exit took {time.monotonic() - logged:.2f} s", flush=True)

    atexit.register(report)  # registered first, so it runs last: after logging.shutdown()
    import logging
    from zlogcollect import ZLogHandler

    def app(endpoints: list[str]) -> None:
        log = logging.getLogger("exit")
        for n, endpoint in enumerate(endpoints):
            log.addHandler(ZLogHandler(endpoint, app=f"h{n}", linger=1.5))
        log.warning("nobody is listening")  # held by each handler until it gives up at exit

    if sys.argv[1] == "main":
        app(sys.argv[2:])
        logged = time.monotonic()
    else:  # a multiprocessing child, which ends with os._exit(): finalizers close there
        child = multiprocessing.get_context("fork").Process(target=app, args=(sys.argv[2:],))
        child.start()
        logged = time.monotonic()
        child.join()
        print(f"child exit took {time.monotonic() - logged:.2f} s", flush=True)
"""


@pytest.mark.perf
@pytest.mark.parametrize("where", ["main", "child"])
def test_handlers_linger_at_exit_together(where: str, tmp_path: Path) -> None:
    """Three handlers with no collector exit within one linger (1.5 s), not three in turn (4.5 s before).

    In the main process (atexit, then logging.shutdown()) and in a multiprocessing
    child (its finalizers).
    """
    done = run_app(EXIT_APP, where, *(short_ipc_endpoint() for _ in range(3)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    label = "child exit took" if where == "child" else "exit took"
    (took,) = [float(line.split()[-2]) for line in done.stdout.splitlines() if line.startswith(label)]
    # Structurally each one lingers 1.5 s; only the overlap keeps it under two lingers.
    assert 1.4 < took < 2 * 1.5, done.stdout


def test_records_from_later_atexit_hooks_still_go_out(ipc_receiver: Receiver, tmp_path: Path) -> None:
    """An atexit hook that runs after the handlers' joint wait at exit can still log: nothing is closed yet."""
    done = run_app(
        """
        import atexit, logging, sys
        log = logging.getLogger("late")
        # Registered before zlogcollect is imported: runs after its exit hook,
        # before logging.shutdown().
        atexit.register(lambda: log.warning("from an atexit hook"))
        from zlogcollect import ZLogHandler
        log.addHandler(ZLogHandler(sys.argv[1], app="late"))
        log.warning("while running")
        """,
        ipc_receiver.endpoint,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    frames = ipc_receiver.wait_for(2)
    assert [f[1] for f in frames] == [b"while running", b"from an atexit hook"]


def test_linger_running_out_at_close_is_said(tmp_path: Path) -> None:
    """Records still queued when close() runs out of its linger are discarded by ZeroMQ: the app says so.

    The "collector" here subscribes and then never reads, so the queue cannot empty.
    """
    endpoint = short_ipc_endpoint()
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.rcvhwm = 1
    sub.subscribe(b"")
    sub.bind(endpoint)
    app = start_app(
        """
        import logging, sys
        from zlogcollect import ZLogHandler
        log = logging.getLogger("stuck")
        log.addHandler(ZLogHandler(sys.argv[1], app="stuck", linger=0.3))
        for i in range(50_000):
            log.warning("record %d", i)
        """,
        endpoint,
        cwd=tmp_path,
    )
    try:

        def exited() -> bool:
            sub.poll(0)  # a bound SUB attaches its peer only while something calls into it; never read
            return app.poll() is not None

        wait_until(exited, 20, what="the app to exit")
        _, err = app.communicate(timeout=10)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
        sub.close(linger=0)
        context.term()
    assert app.returncode == 0, err
    assert "ran out of its 0.3 s linger with records possibly still queued" in err
    assert err.count("\n") == 1
