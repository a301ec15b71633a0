"""`ship`, `send` and `tail` with --curve-server-key and --curve-client-cert, as real subprocesses.

The server is a real CURVE socket in the test (a SUB for ship and send, an XPUB
for tail) with pyzmq's ThreadAuthenticator on its context, started before bind,
so each case controls the server exactly; the last test runs them all against
a real `zlogcollect collect` with CURVE on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import zmq

from tests.helpers import (
    CollectorProcess,
    CurveKeys,
    CurveServer,
    free_tcp_endpoint,
    one_error_line,
    read_lines,
    run_cli,
    wait_until,
)
from tests.helpers_handler import Receiver, run_app
from zlogcollect.testing.process import Child
from zlogcollect.wire import encode_extension

pytestmark = pytest.mark.e2e

ZLOGCOLLECT = [sys.executable, "-m", "zlogcollect"]


def curve_args(server_key: Path | str, client_cert: Path) -> list[str]:
    return ["--curve-server-key", str(server_key), "--curve-client-cert", str(client_cert)]


def test_ship_and_send_with_an_allowed_key_deliver(
    curve_keys: CurveKeys, curve_receiver: Receiver, tmp_path: Path
) -> None:
    """ship (the server key as a file) and send (as Z85 text) reach the CURVE server; exit 0, quiet."""
    source = tmp_path / "lines.log"
    lines = [f"line {i} 2001:db8::{i}" for i in range(500)]
    source.write_text("".join(line + "\n" for line in lines))
    shipped = run_cli(
        [
            "ship",
            str(source),
            "--connect",
            curve_receiver.endpoint,
            "--app",
            "web",
            *curve_args(curve_keys.server_public, curve_keys.client_secret),
        ]
    )
    assert shipped.returncode == 0, shipped.stderr
    assert shipped.stderr == ""
    frames = curve_receiver.wait_for(500)
    assert [f[1].decode() for f in frames] == lines
    server_text = curve_keys.server_text()
    sent = run_cli(
        [
            "send",
            "ERROR",
            "disk failed",
            "--app",
            "cron",
            "--connect",
            curve_receiver.endpoint,
            *curve_args(server_text, curve_keys.client_secret),
        ]
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr == ""
    assert curve_receiver.wait_for(501)[-1][:2] == [b"cron.ERROR", b"disk failed"]


@pytest.mark.parametrize("wrong", ["server key", "client key"])
def test_a_wrong_key_is_as_no_collector_and_the_secret_never_shows(
    curve_keys: CurveKeys, curve_receiver: Receiver, tmp_path: Path, wrong: str
) -> None:
    """Another server's public key, or a client key the server does not allow: ship and send give up
    after --timeout with 75 as when no collector is there (with a hint), nothing arrives, and
    nothing they print holds the client's secret key."""
    server_key = curve_keys.other_server_public if wrong == "server key" else curve_keys.server_public
    client_cert = curve_keys.client_secret if wrong == "server key" else curve_keys.stranger_secret
    secret = curve_keys.secret_text(client_cert)
    source = tmp_path / "x.log"
    source.write_text("a\nb\n")
    curve = curve_args(server_key, client_cert)
    shipped = run_cli(
        [
            "ship",
            str(source),
            "--connect",
            curve_receiver.endpoint,
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
    sent = run_cli(
        ["send", "INFO", "hi", "--app", "x", "--connect", curve_receiver.endpoint, "--timeout", "0.5", *curve]
    )
    assert sent.returncode == 75
    assert f"no collector at {curve_receiver.endpoint} subscribed within 0.5 s (with CURVE" in one_error_line(
        sent.stderr
    )
    for done in (shipped, sent):
        assert secret not in done.stdout + done.stderr
    # The server was there all along: the allowed client gets through.
    good = run_cli(
        [
            "send",
            "INFO",
            "ok",
            "--app",
            "x",
            "--connect",
            curve_receiver.endpoint,
            *curve_args(curve_keys.server_public, curve_keys.client_secret),
        ]
    )
    assert good.returncode == 0, good.stderr
    assert [f[1] for f in curve_receiver.wait_for(1)] == [b"ok"]


def test_ship_with_a_wrong_server_key_waits_as_for_an_absent_collector(
    curve_keys: CurveKeys, curve_receiver: Receiver, tmp_path: Path, children: list[Child]
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
            curve_receiver.endpoint,
            "--app",
            "x",
            *curve_args(curve_keys.other_server_public, curve_keys.client_secret),
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
    assert curve_keys.secret_text(curve_keys.client_secret) not in output
    assert curve_receiver.frames == []


def test_tail_is_a_curve_client_of_the_publish_endpoint(curve_keys: CurveKeys, children: list[Child]) -> None:
    """tail with the right keys shows what a CURVE XPUB publishes; with another server's key, or a
    client key the server does not allow, it shows nothing (as with no collector) and runs on until stopped."""
    server = CurveServer(curve_keys, zmq.XPUB, free_tcp_endpoint())

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
            start("tail wrong server key", curve_keys.other_server_public, curve_keys.client_secret),
            start("tail unknown client key", curve_keys.server_public, curve_keys.stranger_secret),
        ]
        right = start("tail", curve_keys.server_public, curve_keys.client_secret)
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
        assert curve_keys.secret_text(curve_keys.client_secret) not in child.stderr
        assert curve_keys.secret_text(curve_keys.stranger_secret) not in child.stderr


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
    curve_keys: CurveKeys, tmp_path: Path, command: str, args: list[str], needle: str
) -> None:
    (tmp_path / "garbage.key").write_bytes(b"\xff\x00garbage\n" * 50)
    secret = curve_keys.secret_text(curve_keys.client_secret)
    values = {
        "{server}": str(curve_keys.server_public),
        "{cert}": str(curve_keys.client_secret),
        "{tmp}": str(tmp_path),
        "{secret39}": secret[:39],  # a secret key pasted where the server's key goes, one character short
    }

    def filled(text: str) -> str:
        for name, value in values.items():
            text = text.replace(name, value)
        return text

    base = {"ship": ["ship", "--app", "x"], "send": ["send", "INFO", "hi", "--app", "x"], "tail": ["tail"]}
    done = run_cli([*base[command], *(filled(arg) for arg in args)])
    assert done.returncode == 78, done.stderr
    assert filled(needle) in one_error_line(done.stderr)
    assert done.stdout == ""
    assert secret not in done.stderr and secret[:39] not in done.stderr


def test_against_a_collector_with_curve_on(
    curve_keys: CurveKeys, tmp_path: Path, collectors: list[CollectorProcess], children: list[Child]
) -> None:
    """The real thing: `collect --curve-secret --allow-keys --publish-allow-keys`. ship with the
    allowed key writes, a tail with the allowed key sees it live, ship with a key the collector
    does not allow gives up with 75, an app with that key exits quietly, and the collector counts
    them as refused (unknown_key)."""
    logdir = tmp_path / "logs"
    endpoint, publish = free_tcp_endpoint(), free_tcp_endpoint()
    proc = CollectorProcess(
        [
            "--bind",
            endpoint,
            "--dir",
            str(logdir),
            "--flush-interval",
            "0.05",
            "--format",
            "%(message)s",
            "--curve-secret",
            str(curve_keys.server_secret),
            "--allow-keys",
            str(curve_keys.allow),
            "--publish",
            publish,
            "--publish-allow-keys",
            str(curve_keys.allow),
        ]
    )
    collectors.append(proc)
    proc.wait_ready()
    allowed = curve_args(curve_keys.server_public, curve_keys.client_secret)
    tail = Child([*ZLOGCOLLECT, "tail", "--connect", publish, "--format", "%(message)s", *allowed], "tail")
    children.append(tail)

    def shown() -> bool:
        probe = run_cli(["send", "INFO", "probe", "--app", "probe", "--connect", endpoint, *allowed])
        assert probe.returncode == 0, probe.stderr
        return "probe" in tail.stdout_lines

    wait_until(shown, 60, "tail to show a probe over CURVE")
    source = tmp_path / "x.log"
    source.write_text("one\ntwo\n")
    shipped = run_cli(["ship", str(source), "--connect", endpoint, "--app", "web", *allowed])
    assert shipped.returncode == 0, shipped.stderr
    wait_until(lambda: read_lines(logdir / "web.log") == ["one", "two"], 20, "the shipped lines")
    wait_until(lambda: tail.stdout_lines[-2:] == ["one", "two"], 20, "the shipped lines in tail")
    stranger = curve_args(curve_keys.server_public, curve_keys.stranger_secret)
    refused = run_cli(
        ["ship", str(source), "--connect", endpoint, "--app", "intruder", "--timeout", "1", *stranger]
    )
    assert refused.returncode == 75
    assert "(with CURVE, a wrong --curve-server-key" in one_error_line(refused.stderr)
    assert curve_keys.secret_text(curve_keys.stranger_secret) not in refused.stdout + refused.stderr
    # An app with that key: its handshake is left unanswered (the collector's refusal), yet it
    # logs and exits within its linger and a margin (a hang would be the subprocess timeout).
    app = run_app(
        """
        import logging, sys
        import zlogcollect
        zlogcollect.setup(sys.argv[1], app="intruder", linger=1.0, curve_server_key=sys.argv[2], curve_client_cert=sys.argv[3])
        for i in range(100):
            logging.warning("refused %d", i)
        """,
        endpoint,
        str(curve_keys.server_public),
        str(curve_keys.stranger_secret),
        cwd=tmp_path,
        timeout=1.0 + 20.0,
    )
    assert app.returncode == 0, app.stderr
    assert app.stderr == ""
    assert proc.ask_counters()["refused"].get("unknown_key", 0) >= 1
    assert not (logdir / "intruder.log").exists()
    assert tail.stop() == 0
    assert proc.stop() == 0
