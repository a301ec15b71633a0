"""``python -m benchmarks.profile collector|app``: py-spy profiles of the capacity drain and the app-side loop."""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import capacity
from benchmarks.capacity import RECEIVERS, Receiver, drain_once
from benchmarks.common import (
    ROOT,
    Collector,
    child_env,
    kill_leftovers,
    progress,
    scratch,
    tcp_endpoint,
    worker,
    zlogcollect,
)

_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    """The py-spy next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def attach(binary: str, raw: Path, rate: int) -> Callable[[int], Callable[[], None]]:
    """Start py-spy on a pid before the drain; the returned function stops it (SIGINT writes the file)."""

    def start(pid: int) -> Callable[[], None]:
        command = [binary, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking"]
        spy = subprocess.Popen(
            [*command, "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy needs a moment to find the interpreter

        def stop() -> None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)

        return stop

    return start


def summarize(raw: Path, top: int, focus: str = "") -> str:
    """Self and inclusive sample shares per function (and self per line) from py-spy's collapsed stacks.

    With *focus*, only samples whose stack contains a frame with that text count.
    """
    own: collections.Counter[str] = collections.Counter()
    own_lines: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit() or (focus and focus not in stack):
            continue
        count = int(count_text)
        total += count
        frames = [frame.replace(str(ROOT) + "/", "") for frame in stack.split(";")]
        own_lines[frames[-1]] += count
        functions = [_LINE.sub(")", frame) for frame in frames]
        own[functions[-1]] += count
        for function in set(functions):
            inclusive[function] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples{f' with {focus!r} on the stack' if focus else ''}", ""]
    for title, counter in (
        ("self % by function", own),
        ("inclusive % by function", inclusive),
        ("self % by line", own_lines),
    ):
        lines.append(title)
        lines += [f"{100 * n / total:6.1f}  {name}" for name, n in counter.most_common(top)]
        lines.append("")
    return "\n".join(lines)


def profile_collector(binary: str, args: argparse.Namespace) -> str:
    receiver = next(r for r in RECEIVERS if r.label == args.variant)
    if args.tool == "pyinstrument":
        return pyinstrument_collector(receiver, args)
    rate = drain_once(receiver, args.n, attach=attach(binary, args.output, args.rate))
    progress(f"{receiver.label}: {rate:,.0f} records/s under py-spy at {args.rate} Hz (sampling slows it)")
    return summarize(args.output, args.top, focus="Collector.serve")


def pyinstrument_collector(receiver: Receiver, args: argparse.Namespace) -> str:
    """The same drain with the collector started under ``python -m pyinstrument`` (report written at exit)."""
    report = args.output.with_suffix(".pyinstrument.txt")

    def launch(
        command: str, args: Sequence[str], cwd: Path, name: str = "", prefix: Sequence[str] = ("-m",)
    ) -> Collector:
        pyinstrument = ["-m", "pyinstrument", "-i", "0.0005", "-o", str(report), "-r", "text"]
        pyinstrument += ["--show-regex", ".*(/zmq/|enum|/json/).*"]
        return zlogcollect(command, args, cwd, name or "zlogcollect (pyinstrument)", [*pyinstrument, *prefix])

    # The profiler's own business: capacity.py stays plain (its zlogcollect is an import).
    capacity.zlogcollect = launch  # type: ignore[attr-defined]
    rate = drain_once(receiver, args.n)
    progress(f"{receiver.label}: {rate:,.0f} records/s under pyinstrument (sampling slows it)")
    return report.read_text() if report.exists() else "pyinstrument wrote no report"


def profile_app(binary: str, args: argparse.Namespace) -> str:
    """Run the app-side loop for one handler under ``py-spy record -- python -m benchmarks.workers``."""
    with scratch("prof") as tmp:
        endpoint = tcp_endpoint()
        drainer = worker("raw_sub", endpoint=endpoint, marker_dir=str(tmp), max_seconds=600)
        drainer.wait_stdout()
        params = {
            "kind": args.handler,
            "endpoint": endpoint,
            "scratch": str(tmp),
            "token": uuid.uuid4().hex[:12],
            "calls": args.n,
            "batches": 3,
            "max_seconds": 600,
        }
        command = [
            binary,
            "record",
            "--rate",
            str(args.rate),
            "--format",
            "raw",
            "--output",
            str(args.output),
        ]
        command += ["--", sys.executable, "-m", "benchmarks.workers", "app_cost", json.dumps(params)]
        try:
            out = subprocess.run(
                command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600, check=False
            )
        finally:
            drainer.stop()
    result = next((line for line in out.stdout.splitlines() if line.startswith("{")), "{}")
    per_call = json.loads(result).get("per_call_ns", [])
    progress(f"{args.handler}: {per_call} ns per call under py-spy at {args.rate} Hz")
    return summarize(args.output, args.top, focus="app_cost")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("target", choices=("collector", "app"), nargs="?", default="collector")
    labels = [r.label for r in RECEIVERS if r.kind == "zlogcollect"]
    parser.add_argument("--variant", choices=labels, default=labels[0], help="collector variant (collector)")
    parser.add_argument(
        "--handler",
        choices=("zlog", "zlog_plain", "stock", "file", "null"),
        default="zlog",
        help="handler (app)",
    )
    parser.add_argument(
        "-n", type=int, help="records pre-queued (collector, 500000) or calls per loop (app, 200000)"
    )
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument(
        "--tool",
        choices=("py-spy", "pyinstrument"),
        default="py-spy",
        help="profiler (pyinstrument: collector only)",
    )
    parser.add_argument("--top", type=int, default=20, help="rows per list")
    parser.add_argument("--output", type=Path, help="collapsed stacks (default /tmp/zlogcollect-TARGET.txt)")
    args = parser.parse_args()
    binary = py_spy()
    if binary is None:
        parser.error("py-spy is not installed (pip install py-spy)")
    args.n = args.n or (500_000 if args.target == "collector" else 200_000)
    args.output = args.output or Path(f"/tmp/zlogcollect-{args.target}.txt")
    try:
        text = profile_collector(binary, args) if args.target == "collector" else profile_app(binary, args)
    finally:
        kill_leftovers()
    print(text)
    print(f"collapsed stacks: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
