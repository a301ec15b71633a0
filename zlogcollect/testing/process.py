"""Real child processes for tests and benchmarks: polling, endpoints, scratch dirs, a collector daemon."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

__all__ = [
    "Child",
    "ChildError",
    "Collector",
    "environ",
    "free_port",
    "free_tcp_endpoint",
    "read_lines",
    "run_zlogcollect",
    "scratch",
    "short_ipc_endpoint",
    "wait_until",
]


class ChildError(AssertionError):
    """A child exited early, printed no result or would not stop (an assertion to a test runner)."""


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "", interval: float = 0.01
) -> float:
    """Poll *predicate* until it is true and return ``time.perf_counter()`` at that moment.

    Fails with :class:`AssertionError` naming *what* after *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_tcp_endpoint() -> str:
    """A tcp endpoint on loopback whose port was free a moment ago."""
    return f"tcp://127.0.0.1:{free_port()}"


def short_ipc_endpoint(name: str = "c.sock") -> str:
    """An ipc endpoint in a short /tmp directory (socket paths are capped near 107 bytes)."""
    return f"ipc://{tempfile.mkdtemp(prefix='zl', dir='/tmp')}/{name}"


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A short temp directory under /tmp (ipc paths are capped near 107 bytes), removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def read_lines(path: Path) -> list[str]:
    """Lines of a log file without their newline; [] if it does not exist yet."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def run_zlogcollect(
    args: Sequence[str], timeout: float = 20.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``zlogcollect ARGS`` to completion (start-up errors, ``config``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "zlogcollect", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def environ(changes: Mapping[str, str | None]) -> dict[str, str]:
    """This process's environment with *changes* applied (a value of None removes the variable)."""
    env = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Child:
    """A child process in its own session, its stderr (and stdout if piped) read line by line.

    *env* holds the changes to this process's environment (see :func:`environ`).

    Every child still running is listed in :attr:`live`, so a harness can
    :meth:`kill_leftovers` after a failure (each by its own pid).
    """

    live: ClassVar[dict[int, Child]] = {}

    def __init__(
        self,
        args: Sequence[str],
        name: str = "",
        cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        stdin: bool = False,
        stdout: bool = True,
        preexec: Callable[[], object] | None = None,
    ) -> None:
        self.args = list(args)
        self.name = name or " ".join(self.args[:4])
        self.popen = subprocess.Popen(
            self.args,
            cwd=cwd,
            env=environ(env or {}),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=preexec,  # e.g. resource limits for the child alone
        )
        self.pid = self.popen.pid
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.popen.stdout, self.stdout_lines),
                (self.popen.stderr, self.stderr_lines),
            )
            if stream is not None
        ]
        for reader in self._readers:
            reader.start()
        Child.live[self.pid] = self

    @staticmethod
    def _read(stream: IO[str], sink: list[str]) -> None:
        with stream:
            for line in stream:
                sink.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        """Everything the child printed on stderr so far."""
        return "\n".join(self.stderr_lines)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        """The child's name, pid, exit status and last stderr lines, for error messages."""
        tail = "\n".join(self.stderr_lines[-15:])
        return f"{self.name} (pid {self.pid}, exit {self.popen.poll()}):\n{tail}"

    def join_readers(self, timeout: float = 5.0) -> None:
        for reader in self._readers:
            reader.join(timeout)

    def _check_alive(self) -> None:
        if not self.alive():
            self.join_readers(1)
            raise ChildError(f"{self.describe()}\nexited early")

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

        wait_until(seen, timeout, f"{needle!r} from {self.name}")
        return found[0]

    def wait_stdout(self, timeout: float = 20.0, start: int = 0) -> str:
        """Wait for the stdout line at index *start* and return it."""

        def seen() -> bool:
            if len(self.stdout_lines) > start:
                return True
            self._check_alive()
            return False

        wait_until(seen, timeout, f"output from {self.name}")
        return self.stdout_lines[start]

    def wait_json(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the child to exit and return the JSON object on its last stdout line."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ChildError(f"{self.describe()}\ndid not finish within {timeout:.0f} s") from None
        self.join_readers()
        Child.live.pop(self.pid, None)
        for line in reversed(self.stdout_lines):
            if line.startswith("{"):
                data: dict[str, Any] = json.loads(line)
                return data
        raise ChildError(f"{self.describe()}\nprinted no result")

    def tell(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.popen.stdin is not None, f"{self.name} was started without stdin"
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def send(self, signum: int) -> None:
        """Send *signum* to the child if it is still running."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def status(self, key: str) -> int:
        """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in KiB; 0 once gone."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send *signum* (after SIGCONT, in case the child is stopped) and return the exit status.

        A child that does not exit within *timeout* is killed and :class:`ChildError` raised.
        """
        if self.alive():
            self.send(signal.SIGCONT)
            self.send(signum)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ChildError(
                f"{self.name} did not exit after {signal.Signals(signum).name}:\n{self.stderr}"
            ) from None
        self.join_readers()
        Child.live.pop(self.pid, None)
        return code

    def kill(self) -> None:
        """SIGKILL this child's process group (never anything else), reap it and close its stdin."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        self.join_readers(2)
        Child.live.pop(self.pid, None)

    @classmethod
    def kill_leftovers(cls) -> None:
        """Kill every child started here that is still running (each by its own pid)."""
        for child in list(cls.live.values()):
            child.kill()


class Collector(Child):
    """A real ``zlogcollect COMMAND ARGS`` daemon (``collect`` by default) and its counters.

    Its counters are read as JSON from its stats file: ``--stats-file`` if given,
    else ``DIR/_stats.json`` (``--dir``, relative to *cwd*).
    """

    def __init__(
        self,
        args: Sequence[str],
        cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        command: str = "collect",
        *,
        prefix: Sequence[str] = ("-m",),
        name: str = "",
        stdout: bool = False,
        preexec: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(
            [sys.executable, *prefix, "zlogcollect", command, *args],
            name or f"zlogcollect {command}",
            cwd,
            env,
            stdout=stdout,
            preexec=preexec,
        )
        self.cwd = cwd

    @property
    def proc(self) -> subprocess.Popen[str]:
        """The :class:`subprocess.Popen` (the name the project's tests use)."""
        return self.popen

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait for the ready line; fail with everything the daemon printed if it exits instead."""

        def ready() -> bool:
            if self.popen.poll() is not None:
                self.join_readers(2)
                raise ChildError(f"collector exited with {self.popen.returncode}:\n{self.stderr}")
            return any("ready:" in line for line in self.stderr_lines)

        wait_until(ready, timeout, what="the collector's ready line")

    def summary(self) -> str:
        """The last counters line the collector printed."""
        lines = [line for line in self.stderr_lines if "received=" in line]
        assert lines, f"no counters line in:\n{self.stderr}"
        return lines[-1]

    def option(self, name: str) -> str | None:
        """The value given to ``--name`` on the command line (``--name V`` or ``--name=V``), if any."""
        for i, arg in enumerate(self.args):
            if arg == name and i + 1 < len(self.args):
                return self.args[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1 :]
        return None

    @property
    def stats_path(self) -> Path:
        """Where the collector writes its counters as JSON: --stats-file, else DIR/_stats.json."""
        given = self.option("--stats-file")
        path = Path(given) if given else Path(self.option("--dir") or "logs") / "_stats.json"
        return path if path.is_absolute() or self.cwd is None else self.cwd / path

    def counters(self) -> dict[str, Any]:
        """The counters the collector last wrote as JSON (at exit, on SIGUSR1, every --stats-interval).

        The file is written before the counters line is printed: once a line is
        seen, the file is at least as new.
        """
        try:
            data: dict[str, Any] = json.loads(self.stats_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AssertionError(f"no counters in {self.stats_path} ({exc}):\n{self.stderr}") from None
        return data

    def ask_counters(self, timeout: float = 10.0) -> dict[str, Any]:
        """Ask for the counters now (SIGUSR1), wait for the counters line and return them."""
        start = len(self.stderr_lines)
        self.send(signal.SIGUSR1)
        self.wait_stderr("counters:", timeout, start=start)
        return self.counters()

    def counter(self, name: str) -> int:
        """One counter from the last JSON counters (``received``, ``lost``, ``publishers``, ...)."""
        value = self.counters()[name]
        assert isinstance(value, int), (name, value)
        return value
