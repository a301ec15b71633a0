"""Child-process bodies: receivers, senders, app loops and AMQP publishers (``python -m benchmarks.workers``)."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Control messages start with "#": a probe ("#PROBE token") proves the subscription
# reached the receiver, a sentinel ("#SENTINEL token") marks the end of a batch.
PROBE = "#PROBE"
SENTINEL = "#SENTINEL"
MESSAGE = "GET /api/v1/items/%d 200 in 3.2 ms user=alice"
"""The log message every sender uses: about the size of a typical access-log line."""


def _bound(seconds: float) -> None:
    """Every worker dies by itself after *seconds*, whatever its loop is waiting for."""
    signal.alarm(max(int(seconds) + 1, 1))


def _emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def _stdin_line(timeout: float) -> str | None:
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return sys.stdin.readline().strip() if ready else None


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


# -- receivers --------------------------------------------------------------------------


def raw_sub(endpoint: str, marker_dir: str, max_seconds: float, curve_secret: str = "") -> None:
    """The raw limit: a plain pyzmq SUB loop that only counts what it receives.

    ``#PROBE tok`` creates ``marker_dir/probe-tok`` and resets the count;
    ``#SENTINEL tok`` writes the count so far to ``marker_dir/sentinel-tok``.
    With *curve_secret* (a ``.key_secret`` file) it is a CURVE server; without a
    ZAP handler libzmq lets in any CURVE client (a drain for the app-side cost, not a gate).
    """
    import zmq
    import zmq.auth

    _bound(max_seconds)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    if curve_secret:
        public, secret = zmq.auth.load_certificate(curve_secret)
        assert secret is not None, f"{curve_secret} has no secret key"
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_server = True
    sock.bind(endpoint)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    markers = Path(marker_dir)
    recv = sock.recv_multipart
    count = 0
    while True:
        frames = recv()
        count += 1
        if frames[1][:1] == b"#":
            word, _, token = frames[1].decode().strip().partition(" ")
            if word == PROBE:
                (markers / f"probe-{token}").touch()
                count = 0
            elif word == SENTINEL:
                marker = markers / f"sentinel-{token}"
                if not marker.exists():  # a repeated sentinel (see _wait_marker) must not change the count
                    marker.write_text(str(count - 1))


def count_sub(endpoint: str, max_seconds: float) -> None:
    """One subscriber to a collector's ``--publish``: a plain SUB that only counts.

    Prints ``subscribed`` once the first record arrives; on SIGTERM, the count as JSON.
    """
    import zmq

    _bound(max_seconds)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    count = 0

    def finish(*_: object) -> None:
        _emit({"received": count})
        os._exit(0)

    signal.signal(signal.SIGTERM, finish)
    recv = sock.recv_multipart
    recv()
    print("subscribed", flush=True)
    while True:
        recv()
        count += 1


def seed(endpoint: str, path: str, max_seconds: float) -> None:
    """The seed article's central logger (shared/seeds/003), ported to Python 3.

    Changes, and only these: ``zmq.Context(context)`` (a NameError) is
    ``zmq.Context()``; it binds *endpoint* instead of ``tcp://localhost:5558``;
    the subscription is ``b""``; frames are decoded from bytes; the file is
    *path*; the endless loop is bounded by an alarm. Topics must have no root
    (``INFO.db.query``): ``getattr(logging, "app1.info")`` would crash.
    """
    import logging.handlers

    import zmq.green as zmq

    _bound(max_seconds)
    logger = logging.getLogger()
    context = zmq.Context()
    socket_fd = context.socket(zmq.SUB)
    socket_fd.bind(endpoint)
    socket_fd.setsockopt(zmq.SUBSCRIBE, b"")
    filehandler = logging.handlers.TimedRotatingFileHandler(path, "midnight", 1)
    logger.setLevel(logging.DEBUG)
    filehandler.setLevel(logging.DEBUG)
    formatter = logging.Formatter("%(asctime)s | %(levelname)s | %(message)s")
    filehandler.setFormatter(formatter)
    logger.addHandler(filehandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        raw_topic, raw_message = socket_fd.recv_multipart()
        topic, message = raw_topic.decode(), raw_message.decode()
        pos = topic.find(".")
        level = topic
        if pos > 0:
            level = topic[:pos]
        if message.endswith("\n"):
            message = message[:-1]
        log_msg = getattr(logging, level.lower())
        if pos > 0:
            message = topic[pos + 1 :] + " | " + message
        log_msg(message)


# -- senders --------------------------------------------------------------------------------


def live_sender(endpoint: str, root: str, token: str, count: int, max_seconds: float) -> None:
    """A stock ``PUBHandler`` app (default SNDHWM) that logs *count* records as fast as it can.

    It sends probes every 20 ms until it reads ``go`` on stdin.
    """
    import zmq
    from zmq.log.handlers import PUBHandler

    _bound(max_seconds)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.connect(endpoint)
    handler = PUBHandler(sock)
    handler.setRootTopic(root)
    logger = _logger(f"live.{token}", handler)
    print("ready", flush=True)
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        logger.info("%s %s", PROBE, token)
        if _stdin_line(0.02) == "go":
            break
    info = logger.info
    t0 = time.perf_counter()
    for i in range(count):
        info("db.query::" + MESSAGE, i)
    sent = time.perf_counter() - t0
    sock.close(linger=10_000)
    ctx.term()
    _emit({"sent": count, "seconds": sent, "closed": time.perf_counter() - t0})


def flood(endpoint: str, root: str, seconds: float, max_count: int, body_bytes: int) -> None:
    """A raw PUB (default SNDHWM) sending as fast as it can for *seconds* or *max_count* records."""
    import zmq

    _bound(seconds + 10)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.connect(endpoint)
    topic = f"{root}.INFO.flood".encode()
    body = (MESSAGE % 0).encode().ljust(body_bytes - 1, b".") + b"\n"
    frames = [topic, body]
    send = sock.send_multipart
    print("ready", flush=True)
    _stdin_line(30)
    deadline = time.monotonic() + seconds
    sent = 0
    while sent < max_count:
        for _ in range(1000):
            send(frames)
        sent += 1000
        if time.monotonic() >= deadline:
            break
    sock.close(linger=0)
    ctx.term()
    _emit({"sent": sent})


# -- the app side -------------------------------------------------------------------------------


def _app_handler(kind: str, endpoint: str, scratch: str) -> tuple[logging.Handler, Callable[[], None]]:
    """The handler under test and a function that closes it."""
    import zmq
    from zmq.log.handlers import PUBHandler

    from zlogcollect.handler import ZLogHandler

    if kind == "null":
        handler: logging.Handler = logging.NullHandler()
        return handler, handler.close
    if kind == "file":
        handler = logging.FileHandler(os.path.join(scratch, "app.log"))
        return handler, handler.close
    if kind == "stock":
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUB)
        sock.connect(endpoint)
        stock = PUBHandler(sock)
        stock.setRootTopic("app")

        def close() -> None:
            sock.close(linger=5000)
            ctx.term()

        return stock, close
    curve = kind.endswith("_curve")
    base = kind.removesuffix("_curve").removesuffix("_noreplay")
    ours = ZLogHandler(
        endpoint,
        app="app",
        structured=base == "zlog",
        replay=0 if kind.endswith("_noreplay") else 5000,
        curve_server_key=os.path.join(scratch, "server-cert", "collector.key") if curve else None,
        curve_client_cert=os.path.join(scratch, "client-cert", "app.key_secret") if curve else None,
    )
    return ours, ours.close


def _wait_marker(logger: logging.Logger, scratch: str, word: str, token: str) -> None:
    """Log ``WORD token`` until the drainer's marker for it exists.

    Again every 20 ms for a probe (the subscription may not be there yet), every second
    for a sentinel (only if a full queue dropped it: each copy the drainer sees is counted).
    """
    marker = Path(scratch) / f"{'probe' if word == PROBE else 'sentinel'}-{token}"
    now = time.monotonic()
    deadline, again = now + 60, now
    every = 0.02 if word == PROBE else 1.0
    while not marker.exists():
        now = time.monotonic()
        if now > deadline:
            raise SystemExit(f"the drainer never saw {word} {token}")
        if now >= again:
            logger.info("%s %s", word, token)
            again = now + every
        time.sleep(0.005)


def app_cost(
    kind: str, endpoint: str, scratch: str, token: str, calls: int, batches: int, max_seconds: float
) -> None:
    """ns per ``logger.info("sub::msg %s", i)`` through one handler, in *batches* timed loops.

    ``per_call_ns`` is wall time of the calling thread per call, one figure per loop.
    ``cpu_per_call_ns`` is the whole process's CPU (``time.process_time_ns``, user plus
    system of every thread, so
    libzmq's I/O thread, where CURVE encrypts, is in it) from the first timed call until
    the drainer has the sentinel after the last one, divided by all the timed calls:
    work the I/O thread does after the loop returns is counted too. The warm-up is
    drained (a second probe) before the clock starts, so its backlog is not.
    """
    _bound(max_seconds)
    handler, close = _app_handler(kind, endpoint, scratch)
    logger = _logger("bench.app", handler)
    networked = kind not in ("null", "file")
    if networked:
        _wait_marker(logger, scratch, PROBE, token)
    info = logger.info
    warmup = min(calls, 20_000)
    for i in range(warmup):
        info("sub::msg %s", i)
    if networked:  # the drainer counts from here
        _wait_marker(logger, scratch, PROBE, token + "-timed")
    per_call: list[float] = []
    cpu0 = time.process_time_ns()
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for i in range(calls):
            info("sub::msg %s", i)
        per_call.append((time.perf_counter_ns() - t0) / calls)
    dropped = handler.stats["dropped"] if hasattr(handler, "stats") else None
    if networked:
        _wait_marker(logger, scratch, SENTINEL, token)
    cpu_per_call = (time.process_time_ns() - cpu0) / (calls * batches)
    close()
    _emit(
        {
            "per_call_ns": per_call,
            "cpu_per_call_ns": cpu_per_call,
            "sent": calls * batches,
            "dropped": dropped,
        }
    )


def startup(kind: str, endpoint: str, root: str, count: int, max_seconds: float) -> None:
    """A fresh process that logs *count* records right after creating its handler, then exits."""
    _bound(max_seconds)
    if kind == "zlog":
        from zlogcollect.handler import ZLogHandler

        handler: logging.Handler = ZLogHandler(endpoint, app=root)
    else:
        import zmq
        from zmq.log.handlers import PUBHandler

        # As the README's stock example: the global context, the socket never closed.
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
        sock.connect(endpoint)
        stock = PUBHandler(sock)
        stock.setRootTopic(root)
        handler = stock
    logger = _logger(root, handler)
    for i in range(count):
        logger.info("start::record %d", i)
    # Returning runs logging.shutdown() at exit, as any app would.


def steady_app(endpoint: str, root: str, rate: int, seconds: float, max_seconds: float) -> None:
    """A ZLogHandler app logging ``n <i>`` at *rate* records/s for *seconds* (paced every 10 ms), then
    waiting for a stdin line before it closes the handler (its collector may still be restarting)."""
    from zlogcollect.handler import ZLogHandler

    _bound(max_seconds)
    handler = ZLogHandler(endpoint, app=root, linger=30)
    logger = _logger(root, handler)
    print("started", flush=True)
    total = int(rate * seconds)
    start = time.monotonic()
    step = max(rate // 100, 1)
    for i in range(total):
        logger.info("n %d", i)
        if i % step == step - 1:
            ahead = start + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    print("logged", flush=True)
    _stdin_line(max_seconds)
    stats = handler.stats
    handler.close()
    _emit({"logged": stats["seq"], "dropped": stats["dropped"]})


def latency_app(
    endpoint: str, root: str, rate: float, seconds: float, max_seconds: float, linger: float = 2.0
) -> None:
    """``ZLogHandler`` logging at *rate* records/s for *seconds*, each stamped with ``time.time()``.
    Reports what it sent, how long that took, the handler's drops (SNDHWM) and how long ``close()``
    took (up to *linger*: what is still queued for a collector behind is given that long)."""
    from zlogcollect.handler import ZLogHandler

    _bound(max_seconds)
    handler = ZLogHandler(endpoint, app=root, linger=linger)
    logger = _logger(root, handler)
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logger.info("%s %s", PROBE, root)
        if _stdin_line(0.02) == "go":
            break
    total = int(rate * seconds)
    start = time.perf_counter()
    info = logger.info
    late = 0
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
        info("lat::%.6f %d", time.time(), i)
    elapsed = time.perf_counter() - start
    dropped = handler.stats.get("dropped", 0)
    handler.close()
    closing = time.perf_counter() - start - elapsed
    _emit({"sent": total, "seconds": elapsed, "late": late, "dropped": dropped, "close_seconds": closing})


def raw_app(
    endpoint: str, root: str, rate: float, seconds: float, max_seconds: float, linger: float = 2.0
) -> None:
    """Stock ``[topic, text]`` frames from a bare XPUB at *rate* records/s for *seconds*: what a
    ``PUBHandler`` puts on the wire, at a fraction of a logging call's CPU, so that on a small
    machine the collector (not the load generator) gets the cores. Reports what it sent and what
    the socket refused at its high-water mark (``dropped``), as ``latency_app`` does."""
    import zmq

    _bound(max_seconds)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.setsockopt(zmq.LINGER, int(linger * 1000))
    sock.connect(endpoint)
    if not sock.poll(30_000):  # the collector's subscription
        raise SystemExit("raw_app: no subscription within 30 s")
    sock.recv()
    topic = f"{root}.INFO.lat".encode()
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sock.send_multipart([f"{root}.INFO".encode(), f"{PROBE} {root}".encode()])
        if _stdin_line(0.02) == "go":
            break
    total = int(rate * seconds)
    send = sock.send_multipart
    flags = zmq.NOBLOCK
    again = zmq.Again
    start = time.perf_counter()
    late = dropped = 0
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
        try:
            send([topic, (MESSAGE % i).encode()], flags)
        except again:
            dropped += 1
    elapsed = time.perf_counter() - start
    sock.close()
    ctx.term()  # waits up to LINGER for what is still queued
    closing = time.perf_counter() - start - elapsed
    _emit({"sent": total, "seconds": elapsed, "late": late, "dropped": dropped, "close_seconds": closing})


# -- AMQP publishers ------------------------------------------------------------------------------


def _amqp_message(i: int) -> tuple[str, bytes]:
    """Routing key and JSON body exactly as the bridge builds them for a stock record."""
    from zlogcollect.sinks.amqp_message import amqp_body
    from zlogcollect.wire import parse_frames

    record = parse_frames([b"bench.INFO.db.query", (MESSAGE % i + "\n").encode()], time.time())
    return record.topic, json.dumps(amqp_body(record), ensure_ascii=False, default=str).encode()


def _properties(i: int) -> Any:
    import pika

    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=f"bench:{i}",
        timestamp=int(time.time()),
        app_id="zlogcollect",
    )


def pika_blocking(url: str, count: int, max_seconds: float) -> None:
    """Raw pika ``BlockingConnection`` with ``confirm_delivery()``: one round trip per message."""
    import pika

    _bound(max_seconds)
    messages = [_amqp_message(i) for i in range(count)]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    print("ready", flush=True)
    _stdin_line(60)
    t0 = time.perf_counter()
    for i, (key, body) in enumerate(messages):
        channel.basic_publish("amq.topic", key, body, _properties(i), mandatory=True)
    elapsed = time.perf_counter() - t0
    connection.close()
    _emit({"published": count, "seconds": elapsed})


def pika_select(url: str, count: int, window: int, max_seconds: float) -> None:
    """Raw pika ``SelectConnection``: asynchronous confirms, at most *window* unconfirmed."""
    import pika

    _bound(max_seconds)
    messages = [_amqp_message(i) for i in range(count)]
    state = {"next": 0, "acked": 0, "t0": 0.0, "elapsed": 0.0}
    unconfirmed: set[int] = set()
    channel_box: list[Any] = []

    def publish_more() -> None:
        channel = channel_box[0]
        while state["next"] < count and len(unconfirmed) < window:
            i = int(state["next"])
            key, body = messages[i]
            channel.basic_publish("amq.topic", key, body, _properties(i), mandatory=True)
            unconfirmed.add(i + 1)  # delivery tags start at 1
            state["next"] = i + 1

    def on_confirm(frame: Any) -> None:
        tag = frame.method.delivery_tag
        done = [t for t in unconfirmed if t <= tag] if frame.method.multiple else [tag]
        for t in done:
            unconfirmed.discard(t)
        state["acked"] += len(done)
        if state["acked"] >= count:
            state["elapsed"] = time.perf_counter() - state["t0"]
            connection.close()
            return
        publish_more()

    def on_confirm_mode(_frame: Any) -> None:
        print("ready", flush=True)
        _stdin_line(60)  # blocking the ioloop here is fine: nothing else is going on
        state["t0"] = time.perf_counter()
        publish_more()

    def on_channel(channel: Any) -> None:
        channel_box.append(channel)
        channel.confirm_delivery(on_confirm, callback=on_confirm_mode)

    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda _conn, exc: sys.exit(f"cannot connect: {exc}"),
        on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
    )
    connection.ioloop.start()
    _emit({"published": count, "acked": state["acked"], "seconds": state["elapsed"]})


def oneway(port: int, count: int, max_seconds: float) -> None:
    """python-logging-rabbitmq's ``RabbitMQHandlerOneWay`` (no confirms), *count* records pre-queued.

    The records are logged into the handler's queue before its worker thread
    starts, so the timing covers publishing only, like the bridge's.
    """
    from python_logging_rabbitmq import RabbitMQHandlerOneWay

    _bound(max_seconds)

    class Deferred(RabbitMQHandlerOneWay):  # type: ignore[misc]  # the library has no type hints
        def start_message_worker(self) -> None:
            import threading

            self.stopping = threading.Event()
            self.stopped = threading.Event()

    handler = Deferred(
        host="127.0.0.1",
        port=port,
        username="guest",
        password="guest",
        exchange="amq.topic",
        routing_key_format="bench.{level}",
    )
    handler.open_connection()
    logger = _logger("bench.oneway", handler)
    for i in range(count):
        logger.info(MESSAGE, i)
    print("ready", flush=True)
    _stdin_line(60)
    RabbitMQHandlerOneWay.start_message_worker(handler)
    _stdin_line(max_seconds)  # the parent says when the queue is full; then leave at once
    os._exit(0)


def pika_consumer(url: str, queue: str, count: int, prefetch: int, max_seconds: float) -> None:
    """The writer's ceiling: a bare pika ``BlockingConnection`` consumer that only acks (multiple, every
    half prefetch), *count* messages from *queue*, after "go" on stdin."""
    import pika

    _bound(max_seconds)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    half = max(prefetch // 2, 1)
    state = {"seen": 0, "unacked": 0}

    def on_message(ch: Any, method: Any, _properties: Any, _body: bytes) -> None:
        state["seen"] += 1
        state["unacked"] += 1
        if state["unacked"] >= half or state["seen"] >= count:
            ch.basic_ack(method.delivery_tag, multiple=True)
            state["unacked"] = 0
        if state["seen"] >= count:
            ch.stop_consuming()

    print("ready", flush=True)
    _stdin_line(60)
    t0 = time.perf_counter()
    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    elapsed = time.perf_counter() - t0
    connection.close()
    _emit({"acked": state["seen"], "seconds": elapsed})


WORKERS: dict[str, Callable[..., None]] = {
    f.__name__: f
    for f in (
        raw_sub,
        count_sub,
        seed,
        live_sender,
        flood,
        app_cost,
        startup,
        steady_app,
        latency_app,
        raw_app,
        pika_blocking,
        pika_select,
        oneway,
        pika_consumer,
    )
}


def main() -> None:
    kind, params = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    WORKERS[kind](**params)


if __name__ == "__main__":
    main()
