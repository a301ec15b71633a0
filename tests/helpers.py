"""Test-only glue over :mod:`zlogcollect.testing`: the stock-handler sender and skipping without a broker."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import zmq
from zmq.log.handlers import PUBHandler

from zlogcollect.testing.process import Collector as CollectorProcess
from zlogcollect.testing.process import free_tcp_endpoint, read_lines, short_ipc_endpoint, wait_until
from zlogcollect.testing.process import run_zlogcollect as run_collector

__all__ = [
    "ROOT",
    "CollectorProcess",
    "StockSender",
    "broker_unavailable",
    "counter",
    "free_tcp_endpoint",
    "read_lines",
    "run_collector",
    "short_ipc_endpoint",
    "wait_until",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def counter(proc: CollectorProcess, name: str) -> int:
    """One counter from *proc*'s JSON counters (``received``, ``lost``, ``publishers``, ...)."""
    return proc.counter(name)


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


@contextlib.contextmanager
def small_tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of *size* (``1m``) of our own to fill up (tests run as root), unmounted afterwards.

    Skips the test where it cannot be mounted: permissions alone do not fail a write as root.
    """
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs as a disk that fills up")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(path: Path, smallest: int = 1) -> None:
    """Write zeros to *path* until the file system is full, down to the last *smallest* bytes."""
    with open(path, "wb", buffering=0) as out:
        for size in (65536, 512, 1):
            if size < smallest:
                break
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


class RawSender:
    """A bare PUB socket connected to a collector: sends any frames, hostile ones included,
    nothing checked and nothing dropped at its end."""

    def __init__(self, endpoint: str) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.connect(endpoint)

    def send(self, *frames: bytes) -> None:
        self.socket.send_multipart(list(frames))

    def close(self) -> None:
        self.socket.close(linger=5000)
        self.context.term()
