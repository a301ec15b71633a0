"""``python -m benchmarks.instructions``: instructions per record of the hot path, counted by valgrind.

Wall-clock figures on a shared 2-core VM move 10-30 % between runs;
``valgrind --tool=callgrind`` counts instructions, which do not depend on
what else the machine does. Each probe is a loop over the real classes in
one process (no sockets but where the probe is the socket); it runs twice
under callgrind, with N and 6N records, and the difference divided by 5N is
the cost of one record, start-up and imports cancelled out.

Not part of ``python -m benchmarks`` (it needs valgrind and takes a few
minutes); docs/BENCHMARKS.md, "The hot path", quotes its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from benchmarks.common import ROOT, child_env, progress

MESSAGE = b"a benchmark message with some words in it, number %d"
EXTENSION = (
    b'{"v":1,"created":1795000000.123456,"levelno":20,"host":"web-01.example.com","pid":12345,'
    b'"process":"MainProcess","thread":"MainThread","logger":"bench","path":"/srv/app/bench.py",'
    b'"line":42,"func":"run","pub":"0123456789abcdef","seq":%d}'
)
"""What ZLogHandler sends for a plain record (keys in its order, ``seq`` last)."""


def _frames(structured: bool, n: int) -> list[list[bytes]]:
    if structured:
        return [[b"bench.INFO.sub", MESSAGE % i, EXTENSION % i] for i in range(n)]
    return [[b"bench.INFO.sub", MESSAGE % i] for i in range(n)]


def _parse(structured: bool) -> Callable[[int], None]:
    from zlogcollect.wire import Parser

    def run(n: int) -> None:
        parse = Parser().parse
        for frames in _frames(structured, n):
            parse(frames, 1.0)

    return run


def _line(structured: bool) -> Callable[[int], None]:
    from zlogcollect.formatting import text_formatter
    from zlogcollect.wire import Parser

    def run(n: int) -> None:
        record = Parser().parse(_frames(structured, 1)[0], time.time())
        render = text_formatter()
        for _ in range(n):
            render(record)

    return run


def _peer_line() -> Callable[[int], None]:
    """The collector's default line with CURVE on: the peer column (DEFAULT_PEER_FORMAT)."""
    from zlogcollect.formatting import DEFAULT_PEER_FORMAT, text_formatter
    from zlogcollect.wire import Parser

    def run(n: int) -> None:
        record = Parser().parse(_frames(True, 1)[0], time.time())
        record.peer = "bench"
        render = text_formatter(DEFAULT_PEER_FORMAT)
        for _ in range(n):
            render(record)

    return run


def _drain(structured: bool, live: bool = False) -> Callable[[int], None]:
    """Collector.dispatch into the real FileSink (state file on), a flush every 1,000 records.

    *live*: with ``--http``'s live window fed as the daemon feeds it (an append per record, the
    window's commit per 1,000), no client connected."""
    from zlogcollect.collector import Collector
    from zlogcollect.config import from_mapping
    from zlogcollect.daemon import build_file_sink
    from zlogcollect.stats import Stats
    from zlogcollect.window import Window

    def run(n: int) -> None:
        with tempfile.TemporaryDirectory() as directory:
            stats = Stats()
            sink = build_file_sink(from_mapping({"dir": directory}), stats)
            collector = Collector([sink], stats, state_path=os.path.join(directory, "_state.json"))
            window = Window()
            if live:
                collector.accepted = window.add
            dispatch = collector.dispatch
            for index, frames in enumerate(_frames(structured, n)):
                dispatch(frames)
                if index % 1000 == 999:
                    if live:
                        window.commit()
                    collector.flush()
            collector.close()
            if stats.received != n:
                raise RuntimeError(f"dispatched {stats.received} of {n}")

    return run


def _zmq(structured: bool) -> Callable[[int], None]:
    """Send and receive over inproc in one process: both ends of pyzmq and libzmq per record."""
    import zmq

    def run(n: int) -> None:
        context = zmq.Context()
        sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
        for sock in (sender, receiver):
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
        sender.bind("inproc://instructions")
        receiver.connect("inproc://instructions")
        frames = _frames(structured, 1)[0]
        for _ in range(n):
            sender.send_multipart(frames)
        for _ in range(n):
            receiver.recv_multipart(zmq.NOBLOCK)
        sender.close(0)
        receiver.close(0)
        context.term()

    return run


PROBES: dict[str, Callable[[], Callable[[int], None]]] = {
    "parse, plain record": lambda: _parse(False),
    "parse, structured record": lambda: _parse(True),
    "default line, plain record": lambda: _line(False),
    "default line, structured record": lambda: _line(True),
    "peer line (CURVE on), structured record": _peer_line,
    "in-process drain, plain": lambda: _drain(False),
    "in-process drain, structured": lambda: _drain(True),
    "in-process drain, structured, --http live window": lambda: _drain(True, live=True),
    "pyzmq send + receive, two frames": lambda: _zmq(False),
    "pyzmq send + receive, three frames": lambda: _zmq(True),
}

_COLLECTED = re.compile(r"Collected : (\d+)")


def count(valgrind: str, probe: str, n: int) -> int:
    """Instructions of one process running *probe* over *n* records."""
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    command += ["-m", "benchmarks.instructions", "--probe", probe, "-n", str(n)]
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind failed on {probe!r}: {done.stderr.strip()[-500:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--probe", choices=list(PROBES), help="run one probe once (what valgrind runs)")
    parser.add_argument("-n", type=int, default=2000, help="records in the short run (the long one is 6x)")
    parser.add_argument("--only", metavar="TEXT", default="", help="only the probes whose name contains TEXT")
    args = parser.parse_args(argv)
    if args.probe:
        PROBES[args.probe]()(args.n)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    results: dict[str, int] = {}
    for name in PROBES:
        if args.only not in name:
            continue
        short, long = count(valgrind, name, args.n), count(valgrind, name, 6 * args.n)
        results[name] = (long - short) // (5 * args.n)
        progress(f"{name}: {results[name]:,} instructions per record")
    width = max(len(name) for name in results) if results else 0
    for name, per_record in results.items():
        print(f"{name:{width}}  {per_record:>8,}")
    print(json.dumps({"instructions_per_record": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
