"""Benchmark-only machinery: file tails, results, medians and machine info (children: ``zlogcollect.testing``)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zlogcollect.testing.process import Child as Proc
from zlogcollect.testing.process import ChildError as BenchError
from zlogcollect.testing.process import Collector, environ, free_port, wait_until
from zlogcollect.testing.process import free_tcp_endpoint as tcp_endpoint
from zlogcollect.testing.process import scratch as support_scratch

__all__ = ["BenchError", "Collector", "Proc", "free_port", "tcp_endpoint", "wait_until"]

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: child processes import ``zlogcollect`` and ``benchmarks`` from here."""

POLL = 0.005
"""Seconds between polls of a file tail or a marker file (cheap: one stat, at most one 8 KiB read)."""

_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, stamped with the seconds since the suite started."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """The *pct*-th percentile (nearest rank) of *values*; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(math.ceil(pct / 100.0 * len(ordered)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def scratch(prefix: str) -> contextlib.AbstractContextManager[Path]:
    """A short temp directory ``/tmp/zlb-PREFIX-*``, removed after."""
    return support_scratch(f"zlb-{prefix}-")


# -- child processes --------------------------------------------------------------------

CHILD_ENV: dict[str, str | None] = {
    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    "PYTHONUNBUFFERED": "1",
    "PYTHONWARNINGS": None,
}
"""What children change in the environment: this checkout first on the path, no buffering."""


def child_env() -> dict[str, str]:
    """The whole environment for children (see :data:`CHILD_ENV`)."""
    return environ(CHILD_ENV)


def kill_leftovers() -> None:
    """Kill every child this suite started that is still running (each by its own pid)."""
    Proc.kill_leftovers()


def zlogcollect(
    command: str, args: Sequence[str], cwd: Path, name: str = "", prefix: Sequence[str] = ("-m",)
) -> Collector:
    """Start ``python [PREFIX] zlogcollect COMMAND ARGS`` (counters as JSON into CWD) and wait for its ready line."""
    proc = Collector(
        [*args, "--stats-file", str(cwd / "_stats.json")],
        cwd,
        CHILD_ENV,
        command,
        prefix=prefix,
        name=name,
        stdout=True,
    )
    try:
        proc.wait_stderr("ready:", timeout=30)
    except BaseException:
        proc.kill()
        raise
    return proc


def worker(_name: str, *, stdin: bool = False, cwd: Path | None = None, **params: Any) -> Proc:
    """Start ``python -m benchmarks.workers NAME '{params}'``."""
    return Proc(
        [sys.executable, "-m", "benchmarks.workers", _name, json.dumps(params)],
        f"worker {_name}",
        cwd or ROOT,
        CHILD_ENV,
        stdin,
    )


def counters(proc: Proc, timeout: float = 10.0) -> dict[str, Any]:
    """Ask a collector for its counters (SIGUSR1) and return them as data (``received``, ``amqp``, ...)."""
    assert isinstance(proc, Collector), f"{proc.name} was not started by zlogcollect()"
    return proc.ask_counters(timeout)


# -- files --------------------------------------------------------------------------------


class FileTail:
    """Follows a growing file: counts its lines and finds a token near its end, cheaply."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0
        self._partial = b""

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def ends_with_token(self, token: bytes, window: int = 8192) -> bool:
        """True if *token* is in the last *window* bytes (one stat, at most one read)."""
        size = self.size()
        if size == 0:
            return False
        with open(self.path, "rb") as f:
            f.seek(max(size - window, 0))
            return token in f.read()

    def read_new(self) -> list[bytes]:
        """Complete lines written since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self.offset += len(data)
        data = self._partial + data
        head, _, self._partial = data.rpartition(b"\n")
        if not head and not _:
            return []
        lines = head.split(b"\n")
        self.lines += len(lines)
        return lines

    def count_new(self) -> int:
        """Count lines written since the last call without splitting them; return the total."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.lines
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return self.lines


class TokenWatch:
    """Finds a token in a growing file, reading only the bytes added since the last look."""

    def __init__(self, path: Path, token: bytes) -> None:
        self.path = path
        self.token = token
        self.offset = 0
        self._carry = b""
        self.found = False

    def __call__(self) -> bool:
        if self.found:
            return True
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return False
        self.offset += len(data)
        data = self._carry + data
        self.found = self.token in data
        self._carry = data[-len(self.token) :]
        return self.found


def count_lines(path: Path, exclude: Sequence[bytes] = ()) -> int:
    """Lines in *path* (0 if missing), not counting lines with one of the tokens in *exclude*."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    return data.count(b"\n") - sum(data.count(token) for token in exclude)


# -- results ------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured quantity: every run's value and their median."""

    name: str
    unit: str
    values: list[float]
    note: str = ""
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        return median(self.values)


@dataclass
class Check:
    """A target: the measured value (usually a same-run ratio) against the goal."""

    name: str
    value: float
    goal: float
    at_most: bool = False
    detail: str = ""
    best: float = float("nan")
    """The best single run: its own same-run ratio, or its value."""

    @property
    def met(self) -> bool:
        if self.value != self.value:  # NaN: nothing was measured
            return False
        return self.value <= self.goal if self.at_most else self.value >= self.goal

    @property
    def status(self) -> str:
        return "MET" if self.met else "MISSED"


@dataclass
class Outcome:
    """What one benchmark produced."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    derived: dict[str, float] = field(default_factory=dict)
    """Further same-run ratios worth reading that are not targets."""
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def figure(self, name: str, unit: str, note: str = "", higher_is_better: bool = True) -> Figure:
        """The figure called *name*, created on first use (runs append their values to it)."""
        for existing in self.figures:
            if existing.name == name:
                return existing
        fig = Figure(name, unit, [], note, higher_is_better)
        self.figures.append(fig)
        return fig

    def add_check(
        self, name: str, value: float, goal: float, at_most: bool = False, detail: str = ""
    ) -> None:
        self.checks.append(Check(name, value, goal, at_most, detail))

    def _values(self, name: str) -> list[float]:
        return next((fig.values for fig in self.figures if fig.name == name), [])

    def ratio_check(
        self,
        name: str,
        numerator: str,
        denominator: str,
        goal: float,
        at_most: bool = False,
        detail: str = "",
    ) -> None:
        """A target on the ratio of two medians; *best* is the best ratio within one run of both."""
        pairs = zip(self._values(numerator), self._values(denominator), strict=False)
        per_run = [a / b for a, b in pairs if b]
        best = (min(per_run) if at_most else max(per_run)) if per_run else float("nan")
        self.checks.append(Check(name, self.ratio(numerator, denominator), goal, at_most, detail, best))

    def figure_check(
        self, name: str, figure: str, goal: float, at_most: bool = False, detail: str = ""
    ) -> None:
        """A target on one figure's median; *best* is its best run."""
        values = self._values(figure)
        best = (min(values) if at_most else max(values)) if values else float("nan")
        self.checks.append(Check(name, self.get(figure), goal, at_most, detail, best))

    def get(self, name: str) -> float:
        """The median of a figure; NaN if it was never measured."""
        for fig in self.figures:
            if fig.name == name:
                return fig.median
        return float("nan")

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median of *numerator* over median of *denominator*, both from this run of the suite."""
        low = self.get(denominator)
        return self.get(numerator) / low if low and low == low else float("nan")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for fig, out in zip(self.figures, data["figures"], strict=True):
            out["median"] = fig.median
        for check, out in zip(self.checks, data["checks"], strict=True):
            out["met"] = check.met
        return data


@dataclass
class Settings:
    """Sizes for one suite run; ``--quick`` shrinks every one of them."""

    quick: bool
    runs: int

    def pick(self, full: int | float, quick: int | float) -> Any:
        return quick if self.quick else full


# -- machine -------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_digest() -> str:
    """A short digest of every ``zlogcollect/**/*.py``: ties figures to the code measured, committed or not."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "zlogcollect").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, kernel, load and the versions of everything measured."""
    import zmq

    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "gevent": _version("gevent"),
        "pika": _version("pika"),
        "python-logging-rabbitmq": _version("python-logging-rabbitmq"),
        "psutil": _version("psutil"),
        "zlogcollect": _version("zlogcollect"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "zlogcollect")),
        "zlogcollect_source_sha256": source_digest(),
    }
    dpkg = shutil.which("dpkg-query")
    if dpkg:
        out = subprocess.run(
            [dpkg, "-W", "-f", "${Version}", "rabbitmq-server"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        info["rabbitmq_server"] = out.stdout.strip() if out.returncode == 0 else None
    return info
