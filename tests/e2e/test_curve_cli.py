"""`ship`, `send` and `tail` with --curve-server-key and --curve-client-cert, as real subprocesses.

The server is a real CURVE socket in the test (a SUB for ship and send, an XPUB
for tail) with pyzmq's ThreadAuthenticator on its context, started before bind:
it stands in for the collector until the collector has CURVE itself.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import zmq

from tests.helpers import CurveKeys, CurveServer, free_tcp_endpoint, wait_until
from tests.helpers_handler import Receiver
from zlogcollect.testing.process import Child
from zlogcollect.wire import encode_extension

pytestmark = pytest.mark.e2e

ZLOGCOLLECT = [sys.executable, "-m", "zlogcollect"]


@pytest.fixture
def keys(tmp_path: Path) -> CurveKeys:
    return CurveKeys.make(tmp_path / "certs")


@pytest.fixture
def receiver(keys: CurveKeys) -> Iterator[Receiver]:
    """The collector's part: a CURVE SUB server taking only the allowed client's key."""
    server = CurveServer(keys, zmq.SUB, free_tcp_endpoint())
    receiver = Receiver(server.endpoint, server.context, bound=server.socket)
    yield receiver
    receiver.close()
    server.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


def run(args: Sequence[str], stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*ZLOGCOLLECT, *args], input=stdin, capture_output=True, timeout=timeout, check=False
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode(errors="replace")
    )


def curve_args(server_key: Path | str, client_cert: Path) -> list[str]:
    return ["--curve-server-key", str(server_key), "--curve-client-cert", str(client_cert)]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("zlogcollect: error: "), lines[0]
    return lines[0]


def test_ship_and_send_with_an_allowed_key_deliver(
    keys: CurveKeys, receiver: Receiver, tmp_path: Path
) -> None:
    """ship (the server key as a file) and send (as Z85 text) reach the CURVE server; exit 0, quiet."""
    source = tmp_path / "lines.log"
    lines = [f"line {i} 2001:db8::{i}" for i in range(500)]
    source.write_text("".join(line + "\n" for line in lines))
    shipped = run(
        [
            "ship",
            str(source),
            "--connect",
            receiver.endpoint,
            "--app",
            "web",
            *curve_args(keys.server_public, keys.client_secret),
        ]
    )
    assert shipped.returncode == 0, shipped.stderr
    assert shipped.stderr == ""
    frames = receiver.wait_for(500)
    assert [f[1].decode() for f in frames] == lines
    server_text = keys.server_public.read_text().split('public-key = "')[1][:40]
    sent = run(
        [
            "send",
            "ERROR",
            "disk failed",
            "--app",
            "cron",
            "--connect",
            receiver.endpoint,
            *curve_args(server_text, keys.client_secret),
        ]
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr == ""
    assert receiver.wait_for(501)[-1][:2] == [b"cron.ERROR", b"disk failed"]


@pytest.mark.parametrize("wrong", ["server key", "client key"])
def test_a_wrong_key_is_as_no_collector_and_the_secret_never_shows(
    keys: CurveKeys, receiver: Receiver, tmp_path: Path, wrong: str
) -> None:
    """Another server's public key, or a client key the server does not allow: ship and send give up
    after --timeout with 75 as when no collector is there (with a hint), nothing arrives, and
    nothing they print holds the client's secret key."""
    server_key = keys.other_server_public if wrong == "server key" else keys.server_public
    client_cert = keys.client_secret if wrong == "server key" else keys.stranger_secret
    secret = keys.secret_text(client_cert)
    source = tmp_path / "x.log"
    source.write_text("a\nb\n")
    curve = curve_args(server_key, client_cert)
    shipped = run(
        [
            "ship",
            str(source),
            "--connect",
            receiver.endpoint,
            "--app",
            "x",
            "--timeout",
            "1",
            *curve,
        ]
    )
    assert shipped.returncode == 75
    line = one_error_line(shipped.stderr)
    assert "took records for 1 s; 2 lines read were not sent (with CURVE, a wrong --curve-server-key" in line
    sent = run(
        ["send", "INFO", "hi", "--app", "x", "--connect", receiver.endpoint, "--timeout", "0.5", *curve]
    )
    assert sent.returncode == 75
    assert f"no collector at {receiver.endpoint} subscribed within 0.5 s (with CURVE" in one_error_line(
        sent.stderr
    )
    for done in (shipped, sent):
        assert secret not in done.stdout + done.stderr
    # The server was there all along: the allowed client gets through.
    good = run(
        [
            "send",
            "INFO",
            "ok",
            "--app",
            "x",
            "--connect",
            receiver.endpoint,
            *curve_args(keys.server_public, keys.client_secret),
        ]
    )
    assert good.returncode == 0, good.stderr
    assert [f[1] for f in receiver.wait_for(1)] == [b"ok"]


def test_ship_with_a_wrong_server_key_waits_as_for_an_absent_collector(
    keys: CurveKeys, receiver: Receiver, tmp_path: Path, children: list[Child]
) -> None:
    """Without --timeout ship waits, says so once (naming the keys as a cause), and on TERM exits 75
    counting the lines it could not send; its secret key appears nowhere in what it printed."""
    source = tmp_path / "x.log"
    source.write_text("a\nb\nc\n")
    ship = Child(
        [
            *ZLOGCOLLECT,
            "ship",
            str(source),
            "--connect",
            receiver.endpoint,
            "--app",
            "x",
            *curve_args(keys.other_server_public, keys.client_secret),
        ],
        "ship",
    )
    children.append(ship)
    note = ship.wait_stderr("waiting for a collector", timeout=20)
    assert "with CURVE, also check --curve-server-key" in note
    assert ship.stop() == 75
    assert ship.stderr_lines[-1].startswith("zlogcollect: error: stopped with 3 lines read but not sent")
    output = "\n".join(ship.stdout_lines + ship.stderr_lines)
    assert "Traceback" not in output
    assert keys.secret_text(keys.client_secret) not in output
    assert receiver.frames == []


def test_tail_is_a_curve_client_of_the_publish_endpoint(keys: CurveKeys, children: list[Child]) -> None:
    """tail with the right keys shows what a CURVE XPUB publishes; with another server's key, or a
    client key the server does not allow, it shows nothing (as with no collector) and runs on until stopped."""
    server = CurveServer(keys, zmq.XPUB, free_tcp_endpoint())

    def start(name: str, server_key: Path, client_cert: Path) -> Child:
        child = Child(
            [
                *ZLOGCOLLECT,
                "tail",
                "--connect",
                server.endpoint,
                "--format",
                "%(message)s",
                *curve_args(server_key, client_cert),
            ],
            name,
        )
        children.append(child)
        return child

    try:
        refused = [
            start("tail wrong server key", keys.other_server_public, keys.client_secret),
            start("tail unknown client key", keys.server_public, keys.stranger_secret),
        ]
        right = start("tail", keys.server_public, keys.client_secret)
        wait_until(lambda: server.socket.poll(100, zmq.POLLIN), 30, "a subscription")
        assert server.socket.recv() == b"\x01"

        def shown() -> bool:
            server.socket.send_multipart([b"app.INFO", b"over curve", encode_extension({})])
            time.sleep(0.05)
            return "over curve" in right.stdout_lines

        wait_until(shown, 30, "tail to show a record")
        assert right.stop() == 0
        assert all(child.alive() for child in refused)
        assert [child.stop() for child in refused] == [0, 0]
    finally:
        server.close()
    for child in refused:
        assert child.stdout_lines == [], child.name
        assert child.stderr == "", child.name
    for child in (*refused, right):
        assert keys.secret_text(keys.client_secret) not in child.stderr
        assert keys.secret_text(keys.stranger_secret) not in child.stderr


BAD = [
    (["--curve-server-key", "{server}"], "--curve-server-key needs --curve-client-cert too"),
    (["--curve-client-cert", "{cert}"], "--curve-client-cert needs --curve-server-key too"),
    (
        ["--curve-server-key", "{server}", "--curve-client-cert", "{server}"],
        "--curve-client-cert: {server}: holds no secret key",
    ),
    (
        ["--curve-server-key", "{server}", "--curve-client-cert", "{tmp}/none.key_secret"],
        "--curve-client-cert: {tmp}/none.key_secret: No such file or directory",
    ),
    (
        ["--curve-server-key", "{tmp}/garbage.key", "--curve-client-cert", "{cert}"],
        "--curve-server-key: {tmp}/garbage.key: no public-key line",
    ),
    (
        ["--curve-server-key", "{secret39}", "--curve-client-cert", "{cert}"],
        "--curve-server-key: a value of 39 characters that is neither an existing file",
    ),
    (
        ["--curve-server-key", "{server}", "--curve-client-cert", "{tmp}"],
        "is a directory, not a certificate file",
    ),
]


@pytest.mark.parametrize("command", ["ship", "send", "tail"])
@pytest.mark.parametrize(("args", "needle"), BAD, ids=[f"bad{n}" for n in range(len(BAD))])
def test_bad_keys_are_one_line_and_exit_78_without_the_secret(
    keys: CurveKeys, tmp_path: Path, command: str, args: list[str], needle: str
) -> None:
    (tmp_path / "garbage.key").write_bytes(b"\xff\x00garbage\n" * 50)
    secret = keys.secret_text(keys.client_secret)
    values = {
        "{server}": str(keys.server_public),
        "{cert}": str(keys.client_secret),
        "{tmp}": str(tmp_path),
        "{secret39}": secret[:39],  # a secret key pasted where the server's key goes, one character short
    }

    def filled(text: str) -> str:
        for name, value in values.items():
            text = text.replace(name, value)
        return text

    base = {"ship": ["ship", "--app", "x"], "send": ["send", "INFO", "hi", "--app", "x"], "tail": ["tail"]}
    done = run([*base[command], *(filled(arg) for arg in args)])
    assert done.returncode == 78, done.stderr
    assert filled(needle) in one_error_line(done.stderr)
    assert done.stdout == ""
    assert secret not in done.stderr and secret[:39] not in done.stderr
