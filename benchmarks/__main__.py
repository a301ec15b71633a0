"""``python -m benchmarks [--quick] [--only NAME[,NAME]]``: run the suite, print a table, write JSON."""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import Outcome, Settings, kill_leftovers, machine_info, progress

BENCHMARKS: dict[str, tuple[str, str]] = {
    "capacity": ("benchmarks.capacity", "1. Collector capacity"),
    "appside": ("benchmarks.appside", "2. App-side cost per logger call"),
    "bridge": ("benchmarks.bridge", "3. AMQP bridge throughput with publisher confirms"),
    "memory": ("benchmarks.memory", "4. Peak memory under a flood and with the broker down"),
    "latency": ("benchmarks.latency", "5. Latency from the logger call to the line on disk"),
    "loss": ("benchmarks.loss", "6. Start-up loss: records delivered from a short-lived process"),
    "rotation": ("benchmarks.rotation", "7. Many sources rotating at once (receive-loop time of one pass)"),
    "writer": (
        "benchmarks.writer",
        "8. The writer (collect --from-amqp) from a pre-filled queue, beside bare pika",
    ),
    "restarts": (
        "benchmarks.restarts",
        "9. Collector SIGKILLed again and again under load: records twice or lost",
    ),
}
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "zlogcollect's measurement suite: collector capacity, app-side cost, AMQP bridge, memory,"
            " latency and start-up loss, against the seed recipe and peers."
            " Progress goes to stderr, the table to stdout."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: every figure, small sizes, one run each (<60 s)"
    )
    parser.add_argument(
        "--only", metavar="NAME[,NAME]", help=f"run only these benchmarks: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--runs", type=int, help="runs per figure, the median is reported (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--output", type=Path, help="JSON file to write (default benchmarks/results/<timestamp>.json)"
    )
    args = parser.parse_args(argv)
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        args.names = names
    else:
        args.names = list(BENCHMARKS)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def fmt(value: float, unit: str = "") -> str:
    """A number for the table: thousands separators for big ones, 3 significant digits for small."""
    if value != value:
        return "n/a"
    if unit == "ratio":
        return f"{value:.3f}"
    if math.isinf(value):
        return "inf"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def report(outcomes: list[Outcome]) -> str:
    parts: list[str] = []
    for outcome in outcomes:
        parts.append(f"\n== {outcome.title} ({outcome.seconds:.0f} s)")
        if outcome.skipped:
            parts.append(f"SKIPPED: {outcome.skipped}")
        if outcome.error:
            parts.append(f"FAILED: {outcome.error.strip().splitlines()[-1]}")
        rows = [
            [fig.name, fmt(fig.median, fig.unit), fig.unit, " ".join(fmt(v, fig.unit) for v in fig.values)]
            for fig in outcome.figures
        ]
        if rows:
            parts.append(table(rows, ["figure", "median", "unit", "runs"]))
        if outcome.derived:
            parts.append(
                table([[k, fmt(v)] for k, v in outcome.derived.items()], ["same-run ratio", "value"])
            )
        for note in outcome.notes:
            parts.append(f"note: {note}")
    checks = [(outcome.name, check) for outcome in outcomes for check in outcome.checks]
    if checks:
        parts.append("\n== Targets (from the medians of this run)")
        rows = [
            [
                name,
                check.name,
                fmt(check.value),
                fmt(check.best),
                f"{'<=' if check.at_most else '>='} {fmt(check.goal)}",
                check.status,
                check.detail,
            ]
            for name, check in checks
        ]
        parts.append(table(rows, ["bench", "target", "median", "best run", "goal", "status", "detail"]))
    return "\n".join(parts)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that kill our children


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    settings = Settings(quick=args.quick, runs=args.runs or (1 if args.quick else 3))
    started = datetime.datetime.now()
    t0 = time.monotonic()
    info = machine_info()
    progress(
        f"zlogcollect benchmarks: {', '.join(args.names)}; runs={settings.runs}"
        f"{' (quick)' if settings.quick else ''}; {info['cores']} cores, {info['cpu_model']}"
    )
    outcomes: list[Outcome] = []
    try:
        for name in args.names:
            module_name, title = BENCHMARKS[name]
            outcome = Outcome(name, title)
            outcomes.append(outcome)
            progress(f"--- {title}")
            begin = time.monotonic()
            try:
                module = importlib.import_module(module_name)
                module.run(settings, outcome)
            except KeyboardInterrupt:
                outcome.error = "interrupted"
                raise
            except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
                outcome.error = traceback.format_exc()
                progress(f"{name} FAILED:\n{outcome.error}")
            finally:
                kill_leftovers()
                outcome.seconds = time.monotonic() - begin
    finally:
        kill_leftovers()
    wall = time.monotonic() - t0
    info["load_average_end"] = os.getloadavg()
    text = report(outcomes)
    print(text)
    print(f"\nwall time: {wall:.0f} s")
    data: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": wall,
        "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
        "quick": settings.quick,
        "runs": settings.runs,
        "machine": info,
        "benchmarks": {outcome.name: outcome.as_dict() for outcome in outcomes},
    }
    output = (
        args.output
        or RESULTS / f"{started.strftime('%Y%m%d-%H%M%S')}{'-quick' if settings.quick else ''}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=2, default=str) + "\n")
    progress(f"results written to {output}")
    failed = [outcome.name for outcome in outcomes if outcome.error]
    if failed:
        progress(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
