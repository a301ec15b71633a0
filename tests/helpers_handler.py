"""Helpers for the handler tests: a SUB receiver thread, app subprocesses, per-call timing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq

from tests.helpers import ROOT, wait_until


class Receiver:
    """A SUB socket bound by the test, drained by its own thread so peers always attach.

    A bound SUB only lets publishers in while its thread calls into the socket
    (PEERS.md, finding 2), hence the thread rather than recv() calls in the test.
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context[Any] | None = None,
        rcvhwm: int = 0,
        bound: zmq.Socket[Any] | None = None,
    ) -> None:
        """A SUB bound to *endpoint*; or, with *bound*, that SUB, already bound there (a CURVE server)."""
        self.context = context or zmq.Context.instance()
        if bound is None:
            self.socket = self.context.socket(zmq.SUB)
            self.socket.rcvhwm = rcvhwm
            self.socket.subscribe(b"")
            self.socket.bind(endpoint)
        else:
            self.socket = bound
        self.endpoint = endpoint
        self.frames: list[list[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self.socket
        while not self._stop.is_set():
            if sock.poll(20):
                while True:
                    try:
                        self.frames.append(sock.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break

    def wait_for(self, count: int, timeout: float = 10.0) -> list[list[bytes]]:
        """Wait until *count* messages arrived; return them all."""
        wait_until(
            lambda: len(self.frames) >= count, timeout, what=f"{count} messages (have {len(self.frames)})"
        )
        return self.frames

    def extensions(self) -> list[dict[str, Any]]:
        """The decoded third frame of every message received so far."""
        return [json.loads(frames[2]) for frames in self.frames if len(frames) == 3]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close(linger=0)


class Capture(logging.Handler):
    """Keeps the records it sees, to compare what was logged with what arrived."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def private_logger(name: str, *handlers: logging.Handler) -> logging.Logger:
    """A logger outside the global registry, so tests share no logging state."""
    logger = logging.Logger(name, logging.DEBUG)
    for handler in handlers:
        logger.addHandler(handler)
    return logger


def run_app(
    source: str, *args: str, cwd: Path, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a small Python app (dedented *source*) to completion and return its output."""
    script = cwd / "app.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=app_env(env),
    )


def start_app(source: str, *args: str, cwd: Path, name: str = "app.py") -> subprocess.Popen[str]:
    """Start a small Python app in the background, with pipes for stdin and stdout."""
    script = cwd / name
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=app_env(),
    )


def app_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for app subprocesses: the checkout importable, output unbuffered."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(extra or {})}


def json_lines(path: Path, cut: list[str] | None = None) -> list[dict[str, Any]]:
    """The records of a ``--json`` log file; [] if it does not exist.

    With *cut* (after a SIGKILL), a line that is the start of a record the kill cut short (the
    next run ended it with a newline, ``errors=repaired_partial_line``; the record came again
    whole) is appended to *cut* instead of failing the parse.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace" if cut is not None else "strict")
    except FileNotFoundError:
        return []
    if not text.endswith("\n"):
        # A line the collector is still writing: polling readers see it whole next time.
        text = text[: text.rfind("\n") + 1]
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if cut is not None and not line.endswith("}"):
            cut.append(line)
            continue
        records.append(json.loads(line))
    return records


def seq_gaps(seqs: Sequence[int]) -> int:
    """Sequence numbers missing between 0 and the highest one seen."""
    return (max(seqs) + 1 - len(set(seqs))) if seqs else 0
