"""Test-only glue over :mod:`zlogcollect.testing`: the stock-handler sender and skipping without a broker."""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.log.handlers import PUBHandler

from zlogcollect.testing.process import Collector as CollectorProcess
from zlogcollect.testing.process import free_tcp_endpoint, read_lines, short_ipc_endpoint, wait_until
from zlogcollect.testing.process import run_zlogcollect as run_collector

__all__ = [
    "ROOT",
    "CollectorProcess",
    "CurveKeys",
    "CurveServer",
    "StockSender",
    "broker_unavailable",
    "counter",
    "free_tcp_endpoint",
    "http_get",
    "one_error_line",
    "read_lines",
    "run_cli",
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

        # A token of this sender's own: another sender's probe already on disk
        # must not count as this one being connected (a slow joiner loses records).
        token = f"probe {os.getpid()}-{id(self):x}-{time.monotonic_ns()}"

        def seen() -> bool:
            probe.info(token)
            time.sleep(0.02)
            for path in directory.glob("zlprobe*"):
                try:
                    if path.suffix != ".gz" and token in path.read_text(errors="replace"):
                        return True
                except OSError:
                    continue
            return False

        try:
            wait_until(seen, timeout, what="the collector to receive a probe (is it flushing?)")
        finally:
            self.handler.root_topic = root

    def close(self) -> None:
        self.socket.close(linger=5000)
        self.context.term()


def run_cli(
    args: Sequence[str], stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``zlogcollect ARGS`` (ship, send, tail, ...) to the end, *stdin* as its input (else none):
    stdout and stderr as text, stderr decoded even when it holds invalid UTF-8."""
    result = subprocess.run(
        [sys.executable, "-m", "zlogcollect", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode(errors="replace")
    )


def one_error_line(stderr: str, prefixes: tuple[str, ...] = ("zlogcollect: error: ",)) -> str:
    """The one non-blank line of *stderr*, checked: no traceback, and it starts with one of *prefixes*
    (add ``"Error: "`` where click's own usage errors may answer)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith(prefixes), lines[0]
    return lines[0]


def http_get(address: str, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """``GET path`` from ``HOST:PORT``: (status, body)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


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


@dataclass(frozen=True)
class CurveKeys:
    """Certificates for a CURVE test: a server, an allowed client, a client nobody allowed, the allow-list.

    All written by ``zmq.auth.create_certificates`` (the format ``zlogcollect keygen`` writes).
    """

    server_public: Path
    server_secret: Path
    client_public: Path
    client_secret: Path
    stranger_secret: Path
    other_server_public: Path
    allow: Path

    @classmethod
    def make(cls, folder: Path) -> CurveKeys:
        folder.mkdir(parents=True, exist_ok=True)
        made = {
            name: zmq.auth.create_certificates(folder, name)
            for name in ("server", "app", "stranger", "other-server")
        }
        allow = folder / "allowed"
        allow.mkdir()
        shutil.copy(made["app"][0], allow / "app.key")  # only the app's public key
        return cls(
            server_public=Path(made["server"][0]),
            server_secret=Path(made["server"][1]),
            client_public=Path(made["app"][0]),
            client_secret=Path(made["app"][1]),
            stranger_secret=Path(made["stranger"][1]),
            other_server_public=Path(made["other-server"][0]),
            allow=allow,
        )

    def server_text(self) -> str:
        """The server's public key as Z85 text (what --curve-server-key also takes), from its .key file."""
        return self.server_public.read_text().split('public-key = "')[1][:40]

    def secret_text(self, path: Path) -> str:
        """The Z85 secret key in *path*, to grep output for."""
        secret = zmq.auth.load_certificate(path)[1]
        assert secret is not None
        return secret.decode()


class CurveServer:
    """A CURVE server socket bound by the test (the collector side until the collector has CURVE).

    The ZAP handler (pyzmq's ThreadAuthenticator) runs on the socket's own context and
    is started before bind: without one libzmq accepts every client key
    (FEASIBILITY.md, section 1). Only clients whose ``.key`` is in ``keys.allow`` get in.
    """

    def __init__(self, keys: CurveKeys, socket_type: int, endpoint: str) -> None:
        self.endpoint = endpoint
        self.context: zmq.Context[Any] = zmq.Context()
        self.auth = ThreadAuthenticator(self.context)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(keys.allow))
        self.socket = self.context.socket(socket_type)
        self.socket.linger = 0
        self.socket.curve_publickey, secret = zmq.auth.load_certificate(keys.server_secret)
        assert secret is not None
        self.socket.curve_secretkey = secret
        self.socket.curve_server = True
        if socket_type == zmq.SUB:
            self.socket.subscribe(b"")
        self.socket.bind(endpoint)

    def close(self) -> None:
        self.socket.close(linger=0)
        self.auth.stop()
        self.context.term()
