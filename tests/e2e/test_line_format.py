"""The default line through a real collector: origin per host and forked child, grep-able tracebacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import CollectorProcess, StockSender, read_lines, short_ipc_endpoint, wait_until
from tests.helpers_handler import run_app

pytestmark = pytest.mark.e2e

APP = """
import logging, os, socket, sys
socket.gethostname = lambda: sys.argv[2]  # a second host on one machine
from zlogcollect import ZLogHandler
log = logging.getLogger("shop")
log.setLevel(logging.INFO)
log.addHandler(ZLogHandler(sys.argv[1], app="shop"))
log.info("parent %d", os.getpid())
child = os.fork()
if child == 0:
    log.info("child %d", os.getpid())
    try:
        {}["k"]
    except KeyError:
        log.exception("db::lookup failed in %d", os.getpid())
    logging.shutdown()
    os._exit(0)
os.waitpid(child, 0)
"""

LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \| (\w+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| (.*)$"
)


def test_lines_say_host_and_pid_and_tracebacks_grep_with_their_record(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """Two hosts' lines differ by host, a fork child's by pid; {host}/{pid} files; KeyError greps with context."""
    endpoint = short_ipc_endpoint()
    proc = CollectorProcess(
        [
            "--bind",
            endpoint,
            "--dir",
            str(logdir),
            "--flush-interval",
            "0.05",
            "--route",
            "#={host}/{source}-{pid}.log",
        ]
    )
    collectors.append(proc)
    proc.wait_ready()
    for host in ("web01", "web02"):
        app = run_app(APP, endpoint, host, cwd=tmp_path)
        assert app.returncode == 0, app.stderr
    stock = StockSender(endpoint, "stock")
    try:
        stock.wait_connected(logdir)
        stock.logger.error("db::stock failure")
    finally:
        stock.close()
    wait_until(lambda: len(read_lines(logdir / "shop.log")) >= 12, what="six records with tracebacks")
    assert proc.stop() == 0, proc.stderr

    lines = read_lines(logdir / "shop.log")
    records = [m.groups() for m in map(LINE.match, lines) if m]
    assert len(records) == 6
    for _, _, source, origin, _, message in records:
        pid = message.split()[-1]
        assert source == "shop"
        assert origin.endswith(f":{pid}")  # the parent's and the child's own pid
    origins = {origin for _, _, _, origin, _, _ in records}
    assert {origin.split(":")[0] for origin in origins} == {"web01", "web02"}
    assert len(origins) == 4  # two hosts x (parent, child)

    grepped = [line for line in lines if "KeyError" in line]
    assert len(grepped) == 2
    for line in grepped:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| shop \+ KeyError: 'k'", line), line
    assert all(LINE.match(line) or " | shop + " in line for line in lines)

    # {host} and {pid} in a route template: one file per host and process.
    per_process = sorted(str(p.relative_to(logdir)) for p in logdir.glob("web0*/*.log"))
    assert len(per_process) == 4
    assert {p.split("/")[0] for p in per_process} == {"web01", "web02"}
    stock_lines = [m.groups() for m in map(LINE.match, read_lines(logdir / "stock.log")) if m]
    assert [(origin, sub, msg) for _, _, _, origin, sub, msg in stock_lines][-1:] == [
        ("-", "db", "stock failure")
    ]
    assert (logdir / "_" / "stock-_.log").exists()  # no host, no pid: "_"


def test_json_lines_stay_strict_when_a_sender_sends_nan(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """NaN and Infinity in a raw sender's extension become strings; every --json line is strict JSON."""
    import json

    import zmq

    endpoint = short_ipc_endpoint()
    proc = CollectorProcess(["--bind", endpoint, "--dir", str(logdir), "--json", "--flush-interval", "0.05"])
    collectors.append(proc)
    proc.wait_ready()
    # pid, seq and the other fields the collector keeps are range-checked (Infinity there is
    # malformed); a field it only passes on, like "load" or extra values, is kept as it came.
    extension = b'{"v":1,"created":NaN,"load":Infinity,"extra":{"ratio":NaN,"limits":[Infinity,-Infinity]}}'

    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    with zmq.Context() as context, context.socket(zmq.PUB) as sock:
        sock.connect(endpoint)

        def arrived() -> bool:
            sock.send_multipart([b"raw.ERROR", b"odd numbers", extension])
            return bool(read_lines(logdir / "raw.log"))

        wait_until(arrived, 10, what="a record from the raw sender")
        sock.setsockopt(zmq.LINGER, 0)
    assert proc.stop() == 0, proc.stderr
    lines = read_lines(logdir / "raw.log")
    for line in lines:
        data = json.loads(line, parse_constant=refuse)
        assert data["extra"] == {"ratio": "NaN", "limits": ["Infinity", "-Infinity"]}
        assert data["load"] == "Infinity" and data["message"] == "odd numbers"


def test_control_characters_cannot_forge_lines_or_drive_the_terminal(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """ESC, OSC, BEL, CR and U+2028 in a stock sender's message reach the file escaped, one line per record."""
    proc = CollectorProcess(
        ["--bind", short_ipc_endpoint(), "--dir", str(logdir), "--flush-interval", "0.05"]
    )
    collectors.append(proc)
    proc.wait_ready()
    sender = StockSender(proc.args[proc.args.index("--bind") + 1], "app")
    try:
        sender.wait_connected(logdir)
        sender.logger.info("esc \x1b[2J\x1b]0;title\x07 cr\rover")
        sender.logger.info("u2028\u20282026-01-01 00:00:00.000 | ERROR | app | web01:1 | - | forged")
        wait_until(lambda: "forged" in "".join(read_lines(logdir / "app.log")), what="both records")
    finally:
        sender.close()
    assert proc.stop() == 0
    raw = (logdir / "app.log").read_bytes()
    assert b"\x1b" not in raw and b"\r" not in raw and b"\x07" not in raw
    text = raw.decode()
    assert len(text.splitlines()) == len(text.split("\n")) - 1  # no line breaks but "\n"
    assert "esc \\x1b[2J\\x1b]0;title\\x07 cr\\rover" in text
    assert "u2028\\u20282026-01-01" in text
