"""Shared test helpers: polling instead of sleeping, endpoints, and a real collector process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
import zmq
from zmq.log.handlers import PUBHandler

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01, what: str = ""
) -> None:
    """Poll *predicate* until it is true; fail with *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def free_tcp_endpoint() -> str:
    """A tcp endpoint on loopback whose port was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def short_ipc_endpoint(name: str = "c.sock") -> str:
    """An ipc endpoint in a short /tmp directory (socket paths are capped near 107 bytes)."""
    return f"ipc://{tempfile.mkdtemp(prefix='zl', dir='/tmp')}/{name}"


def read_lines(path: Path) -> list[str]:
    """Lines of a log file without their newline; [] if it does not exist yet."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


class CollectorProcess:
    """A real `zlogcollect collect` subprocess, with its stderr captured line by line."""

    def __init__(
        self,
        args: Sequence[str],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        command: str = "collect",
    ) -> None:
        self.args = [sys.executable, "-m", "zlogcollect", command, *args]
        self.cwd = cwd
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.stderr_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait for the ready line; fail with everything the daemon printed if it exits instead."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"collector exited with {self.proc.returncode}:\n{self.stderr}")
            return any("ready:" in line for line in self.stderr_lines)

        wait_until(ready, timeout, what="the collector's ready line")

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send *signum* and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"collector did not exit after {signal.Signals(signum).name}:\n{self.stderr}"
            ) from None
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._reader.join(5)

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


def counter(proc: CollectorProcess, name: str) -> int:
    """One counter from *proc*'s JSON counters (``received``, ``lost``, ``publishers``, ...)."""
    value = proc.counters()[name]
    assert isinstance(value, int), (name, value)
    return value


def run_collector(
    args: Sequence[str], timeout: float = 20.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `zlogcollect ARGS` to completion (for start-up errors and `config`)."""
    return subprocess.run(
        [sys.executable, "-m", "zlogcollect", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


class StockSender:
    """An app-side stock `zmq.log.handlers.PUBHandler` connected to the collector, as in the seed."""

    def __init__(self, endpoint: str, root_topic: str = "", name: str = "app") -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.connect(endpoint)
        self.handler = PUBHandler(self.socket)
        self.handler.root_topic = root_topic
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger = logging.Logger(name, logging.DEBUG)  # not registered: no global state
        self.logger.addHandler(self.handler)

    def wait_connected(self, directory: Path, timeout: float = 10.0) -> None:
        """Send probe records until the collector has written one (the slow-joiner handshake)."""
        probe = logging.Logger("probe", logging.DEBUG)
        probe.addHandler(self.handler)
        root = self.handler.root_topic
        self.handler.root_topic = "zlprobe"

        def seen() -> bool:
            probe.info("probe")
            time.sleep(0.02)
            return (directory / "zlprobe.log").exists() or bool(list(directory.glob("zlprobe*")))

        try:
            wait_until(seen, timeout, what="the collector to receive a probe (is it flushing?)")
        finally:
            self.handler.root_topic = root

    def close(self) -> None:
        self.socket.close(linger=5000)
        self.context.term()


def broker_unavailable(reason: str) -> NoReturn:
    """Skip a test that needs RabbitMQ; under CI=true fail it instead (CI must run the AMQP tests)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so AMQP tests must run: {reason}", pytrace=False)
    pytest.skip(reason)
