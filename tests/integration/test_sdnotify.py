"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator

import pytest

from zlogcollect.sdnotify import READY, Notifier, reloading

pytestmark = pytest.mark.integration


@pytest.fixture
def systemd() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket at a path, as systemd's notify socket."""
    directory = tempfile.mkdtemp(prefix="zlsd", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def test_ready_reaches_a_path_socket(systemd: tuple[socket.socket, str]) -> None:
    sock, path = systemd
    assert Notifier({"NOTIFY_SOCKET": path}).notify(READY)
    assert sock.recv(4096) == b"READY=1"


def test_an_abstract_socket_name_starts_with_at() -> None:
    name = f"zlogcollect-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify(reloading())
        lines = sock.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0


def test_without_notify_socket_nothing_is_sent() -> None:
    assert not Notifier({}).notify(READY)


def test_a_dead_socket_or_a_bad_name_is_only_a_warning(
    caplog: pytest.LogCaptureFixture, tmp_path: os.PathLike[str]
) -> None:
    gone = Notifier({"NOTIFY_SOCKET": os.path.join(tmp_path, "nobody-listens")})
    assert not gone.notify(READY)
    assert not gone.notify(READY)
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).notify(READY)
    assert any("not a Unix socket path" in r.getMessage() for r in caplog.records)
