"""Shared machinery: child processes, polling, file tails, results, medians and machine info."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: child processes import ``zlogcollect`` and ``benchmarks`` from here."""

POLL = 0.005
"""Seconds between polls of a file tail or a marker file (cheap: one stat, at most one 8 KiB read)."""

_T0 = time.monotonic()


class BenchError(RuntimeError):
    """A benchmark could not produce its figure (a child died, a wait timed out)."""


def progress(message: str) -> None:
    """One progress line on stderr, stamped with the seconds since the suite started."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = POLL) -> float:
    """Poll *predicate* until it is true; return the monotonic time it was seen true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tcp_endpoint() -> str:
    """A loopback tcp endpoint on a free port."""
    return f"tcp://127.0.0.1:{free_port()}"


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


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A short temp directory under /tmp (ipc paths are capped near 107 bytes), removed after."""
    path = Path(tempfile.mkdtemp(prefix=f"zlb-{prefix}-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- child processes --------------------------------------------------------------------

_LIVE: dict[int, Proc] = {}


def child_env() -> dict[str, str]:
    """The environment for children: this checkout first on the path, no buffering."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONWARNINGS", None)
    return env


class Proc:
    """A child process with its stdout and stderr read line by line in background threads."""

    def __init__(self, args: Sequence[str], name: str, cwd: Path | None = None, stdin: bool = False) -> None:
        self.name = name
        self.args = list(args)
        self.popen = subprocess.Popen(
            self.args,
            cwd=cwd or ROOT,
            env=child_env(),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.stats_file: Path | None = None
        """Where a zlogcollect process writes its counters as JSON (see :func:`counters`)."""
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.stdout_lines), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.stderr_lines), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        _LIVE[self.pid] = self

    @staticmethod
    def _read(stream: Any, sink: list[str]) -> None:
        with stream:
            for line in stream:
                sink.append(line.rstrip("\n"))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        tail = "\n".join(self.stderr_lines[-15:])
        return f"{self.name} (pid {self.pid}, exit {self.popen.poll()}):\n{tail}"

    def _check_alive(self) -> None:
        if not self.alive():
            for reader in self._readers:
                reader.join(1)
            raise BenchError(f"{self.describe()}\nexited early")

    def wait_stderr(self, needle: str, timeout: float = 20.0, start: int = 0) -> str:
        """Wait for a stderr line containing *needle* (from line index *start* on) and return it."""
        found: list[str] = []

        def seen() -> bool:
            for line in self.stderr_lines[start:]:
                if needle in line:
                    found.append(line)
                    return True
            self._check_alive()
            return False

        wait_until(seen, timeout, f"{needle!r} from {self.name}", interval=0.01)
        return found[0]

    def wait_stdout(self, timeout: float = 20.0, start: int = 0) -> str:
        """Wait for the next stdout line at index *start* or later and return it."""

        def seen() -> bool:
            if len(self.stdout_lines) > start:
                return True
            self._check_alive()
            return False

        wait_until(seen, timeout, f"output from {self.name}", interval=0.01)
        return self.stdout_lines[start]

    def wait_json(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the child to exit and return the JSON object on its last stdout line."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"{self.describe()}\ndid not finish within {timeout:.0f} s") from None
        for reader in self._readers:
            reader.join(5)
        _LIVE.pop(self.pid, None)
        for line in reversed(self.stdout_lines):
            if line.startswith("{"):
                data: dict[str, Any] = json.loads(line)
                return data
        raise BenchError(f"{self.describe()}\nprinted no result")

    def tell(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def status(self, key: str) -> int:
        """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in KiB; 0 once gone."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (SIGCONT first, in case it is stopped), wait, SIGKILL if it does not exit."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL this child (never anything else) and reap it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        for reader in self._readers:
            reader.join(2)
        _LIVE.pop(self.pid, None)


def kill_leftovers() -> None:
    """Kill every child this suite started that is still running (each by its own pid)."""
    for proc in list(_LIVE.values()):
        proc.kill()


def zlogcollect(command: str, args: Sequence[str], cwd: Path, name: str = "") -> Proc:
    """Start ``python -m zlogcollect COMMAND ARGS`` (counters as JSON into CWD) and wait for its ready line."""
    stats_file = cwd / "_stats.json"
    args = [*args, "--stats-file", str(stats_file)]
    proc = Proc([sys.executable, "-m", "zlogcollect", command, *args], name or f"zlogcollect {command}", cwd)
    proc.stats_file = stats_file
    try:
        proc.wait_stderr("ready:", timeout=30)
    except BaseException:
        proc.kill()
        raise
    return proc


def worker(_name: str, *, stdin: bool = False, cwd: Path | None = None, **params: Any) -> Proc:
    """Start ``python -m benchmarks.workers NAME '{params}'``."""
    return Proc(
        [sys.executable, "-m", "benchmarks.workers", _name, json.dumps(params)], f"worker {_name}", cwd, stdin
    )


def counters(proc: Proc, timeout: float = 10.0) -> dict[str, Any]:
    """Ask a collector for its counters (SIGUSR1) and return them as data (``received``, ``amqp``, ...).

    The collector writes its stats file before it prints the counters line, so
    once the line is there, the file holds these counters or newer ones.
    """
    assert proc.stats_file is not None, f"{proc.name} was not started by zlogcollect()"
    start = len(proc.stderr_lines)
    proc.signal(signal.SIGUSR1)
    proc.wait_stderr("counters:", timeout, start=start)
    data: dict[str, Any] = json.loads(proc.stats_file.read_text(encoding="utf-8"))
    return data


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
